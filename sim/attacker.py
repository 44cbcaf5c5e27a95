"""Attacker campaigns: who asks what, through which accounts, and what they keep.

`Naive` is the simplest campaign of the 2026 reports' spectrum: one account that samples
prompts from the task distribution (it knows what to ask, not the answers), asks for the
reasoning when `explain` is set, and keeps every (request, visible response) it is served.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sim.gateway import Account, Exchange
from sim.tasks import Problem, Suite, check_difficulty


class Naive:
    def __init__(
        self,
        queries: int = 2000,
        per_tick: int = 256,
        explain: bool = True,
        skills: Sequence[str] | None = None,
        difficulties: Sequence[int] | None = None,
    ):
        if not isinstance(queries, int) or queries < 0:
            raise ValueError(f"attacker.queries={queries!r} must be a non-negative integer")
        if not isinstance(per_tick, int) or per_tick < 1:
            raise ValueError(f"attacker.per_tick={per_tick!r} must be a positive integer")
        self.queries, self.per_tick, self.explain = queries, per_tick, bool(explain)
        self.skills = list(skills) if skills else None
        try:
            self.difficulties = [check_difficulty(d) for d in difficulties] if difficulties else None
        except ValueError as e:
            raise ValueError(f"attacker.difficulties: {e}") from None
        self.accounts = [Account("attacker-0", tier="paid")]
        self.sent = 0
        self.harvest: list[dict] = []
        self.asked: list[Problem] = []

    def bind(self, suite: Suite) -> None:
        """Validate what this campaign asks for against the suite, before any compute."""
        if self.skills:
            suite.check_skills(self.skills, "attacker.skills")
        self.suite = suite

    @property
    def done(self) -> bool:
        return self.sent >= self.queries

    def requests(self, tick: int, rng: random.Random) -> list[tuple[Account, str, Problem]]:
        n = min(self.per_tick, self.queries - self.sent)
        out = []
        for _ in range(n):
            skill = rng.choice(self.skills) if self.skills else None
            d = rng.choice(self.difficulties) if self.difficulties else None
            p = self.suite.sample(rng, skill, d)
            out.append((self.accounts[0], p.request(self.explain), p))
        self.sent += n
        return out

    def receive(self, exchanges: list[Exchange], problems: list[Problem]) -> None:
        for e, p in zip(exchanges, problems):
            self.asked.append(p)
            if e.status == "served":
                self.harvest.append({"request": e.request.prompt, "response": e.response,
                                     "skill": p.skill, "difficulty": p.difficulty, "tick": e.request.tick})
