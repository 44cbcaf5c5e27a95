"""Identity verification at account creation, per tier, with a friction cost everyone pays.

The 2026 reports name stricter identity verification on the abused programs (education,
research, startup) as a response to fraudulent accounts. Each tier has a verification
level: `catch` (the probability a fraudulent identity is refused), `false_reject` (the
probability a genuine one is), and the friction every new account pays, legitimate or not:
`usd` (a verification fee or deposit, added to the account's cost) and `minutes` (the
account cannot be used until verified; a legitimate user's requests in that time are
refused and count against `utility/relative`).

Verdicts come from the verification vendor in `ctx.verifier`: the defense never sees
whether an identity is fraudulent, only the vendor's noisy verdict.
"""

from __future__ import annotations

from collections.abc import Mapping

from defenses.base import Defense
from sim.accounts import TIERS

LEVEL_KEYS = ("catch", "false_reject", "usd", "minutes")


class Identity(Defense):
    def __init__(self, levels: Mapping[str, Mapping]):
        self.levels: dict[str, dict[str, float]] = {}
        for tier, level in dict(levels).items():
            if tier not in TIERS:
                raise ValueError(f"defense.identity.levels.{tier}: not a tier (known: {', '.join(TIERS)})")
            level = dict(level)
            for k in level:
                if k not in LEVEL_KEYS:
                    raise ValueError(f"defense.identity.levels.{tier}.{k}: unknown key (known: {', '.join(LEVEL_KEYS)})")
            out = {k: float(level.get(k, 0.0)) for k in LEVEL_KEYS}
            for k in ("catch", "false_reject"):
                if not 0 <= out[k] <= 1:
                    raise ValueError(f"defense.identity.levels.{tier}.{k}={out[k]!r} must be in [0, 1]")
            for k in ("usd", "minutes"):
                if out[k] < 0:
                    raise ValueError(f"defense.identity.levels.{tier}.{k}={out[k]!r} must be >= 0")
            self.levels[tier] = out
        self.ready: dict[str, float] = {}  # account id -> simulated minute it becomes usable

    def admit(self, account, ctx=None) -> bool:
        level = self.levels.get(account.tier)
        if level is None:  # a tier without a level is not checked
            return True
        ctx.fees[account.id] = ctx.fees.get(account.id, 0.0) + level["usd"]
        self.ready[account.id] = account.created_tick * ctx.tick_minutes + level["minutes"]
        return ctx.verifier.passes(account.id, level["catch"], level["false_reject"])

    def check(self, request, ctx):
        if ctx.tick * ctx.tick_minutes < self.ready.get(request.account.id, 0.0):
            return "identity verification pending"
        return None
