"""A reasoning quota: each account may ask for the teacher's reasoning at most `q` times per
simulated day; past the quota, such a request is refused (answers without reasoning are
still served).

The distillation reports of February 2026 single out chain-of-thought elicitation as the
signature of the campaigns: "prompts designed to make the model reveal its reasoning", at a
volume no person sends. A quota prices exactly that, and leaves a person's occasional "why"
alone. This file is an example of a defense written outside distill-arena: one class behind
the `defenses.base.Defense` contract, one YAML (`configs/defense/reasoning_quota.yaml`).
"""

from __future__ import annotations

from collections import Counter

from defenses.base import Defense
from sim.tasks.base import EXPLAIN


class ReasoningQuota(Defense):
    def __init__(self, q: int = 20):
        # validated here, so a bad value is one line before any compute starts
        if not isinstance(q, int) or isinstance(q, bool) or q < 0:
            raise ValueError(f"defense.reasoning_quota.q={q!r} must be a non-negative integer")
        self.q = q
        self.used: Counter = Counter()  # (account id, day) -> reasoning requests admitted

    def check(self, request, ctx):
        if not request.prompt.startswith(EXPLAIN):
            return None
        day = ctx.tick * ctx.tick_minutes // (24 * 60)
        key = (request.account.id, day)
        if self.used[key] >= self.q:
            return "reasoning quota"
        self.used[key] += 1
        return None
