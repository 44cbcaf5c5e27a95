"""Information-theoretic rate limiting: a budget on what a query *sequence* extracts, not on
how many calls it makes.

The 2026 reports propose limiting the information content (mutual information) of query
sequences. The estimator here is the empirical coverage entropy of a key's (an account's,
or a detected cluster's) query sequence over the cells of the capability map, times its
length:

    I(q_1..q_n) = n * H(p_n) = n log2 n - sum over cells c of n_c log2 n_c

where n_c is the number of its requests in cell c and p_n = (n_c / n). It is the number of
bits needed to say which parts of the capability map the sequence probed. A request's cost
is the growth of I, always >= 0: a request in a cell the key keeps returning to costs
little, a request spread evenly over many cells costs about log2 of their number. A
methodical sweep over every skill x difficulty pays the most per call; an organic user,
whose questions cluster around a few interests, pays less. A request that would take a key
past its budget of B bits is refused.

The cell is read from the text alone, as a provider's request classifier would: the command
word (found after chat prefixes and the explain marker, and through a swapped-letter typo)
and the length of the question from that word on, in buckets of `length_bucket` characters
(a proxy for difficulty: more operations, rows, slots or hops make longer questions). The
command words are learned (`defenses.lexicon`) from a calibration simulation of the
legitimate `users` alone, with its own seed, before the run's traffic starts: a provider
knows its benign traffic, not its attackers' (a command no user sent reads as `other`).
"""

from __future__ import annotations

import math
from collections import defaultdict

from defenses.base import Defense
from defenses.lexicon import LENGTH_BUCKET, Lexicon
from defenses.rate_limit import key_value

KEYS = ("account", "cluster")


def _xlogx(n: int) -> float:
    return n * math.log2(n) if n > 0 else 0.0


class InfoBudget(Defense):
    def __init__(self, users=None, bits: float = 40.0, keys: tuple[str, ...] | list[str] = ("account", "cluster"),
                 length_bucket: int = LENGTH_BUCKET, calibration_seed: int = 1001, lexicon: Lexicon | None = None):
        """`users`: the legitimate population to calibrate the lexicon on; or `lexicon`, one
        learned already."""
        if users is None and lexicon is None:
            raise ValueError("defense.info_budget.users is missing: the budget learns its request cells from a "
                             "calibration simulation of the legitimate users (users: ${users})")
        if not bits > 0:
            raise ValueError(f"defense.info_budget.bits={bits!r} must be > 0")
        for k in keys:
            if k not in KEYS:
                raise ValueError(f"defense.info_budget.keys: {k!r} is not one of {KEYS}")
        if not isinstance(length_bucket, int) or length_bucket < 1:
            raise ValueError(f"defense.info_budget.length_bucket={length_bucket!r} must be a positive integer")
        self.bits, self.keys, self.length_bucket = float(bits), tuple(keys), length_bucket
        self.users, self.calibration_seed, self.lexicon = users, calibration_seed, lexicon
        self.counts: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(int))
        self.total: dict[tuple[str, str], int] = defaultdict(int)
        self.spent: dict[tuple[str, str], float] = defaultdict(float)

    @staticmethod
    def cost(n: int, n_c: int) -> float:
        """Growth of n H(p_n) when one more request (of n so far) lands in a cell holding n_c."""
        return (_xlogx(n + 1) - _xlogx(n)) - (_xlogx(n_c + 1) - _xlogx(n_c))

    def calibration(self, ticks: int | None) -> tuple[list, int] | None:
        return None if self.lexicon is not None else ([self.users], self.calibration_seed)

    def calibrate(self, traffic) -> None:
        lexicon = Lexicon.fit(traffic.log["prompt"])
        if not lexicon.commands:
            raise ValueError(f"defense.info_budget: its calibration traffic ({len(traffic.log)} requests of the "
                             f"legitimate users) taught it no command word; give the run more users or days")
        self.lexicon = lexicon

    def check(self, request, ctx):
        if self.lexicon is None:
            raise RuntimeError("defense.info_budget: not calibrated; the world calls sim.world.calibrate(stack, "
                               "suite, clock) before traffic starts")
        c = self.lexicon.cell(request.prompt, self.length_bucket)
        keys = [(k, key_value(request.account, k, ctx)) for k in self.keys]
        costs = [self.cost(self.total[key], self.counts[key][c]) for key in keys]
        for (kind, _), key, cost in zip(keys, keys, costs):
            if self.spent[key] + cost > self.bits:
                return f"information budget: {kind}"
        for key, cost in zip(keys, costs):
            self.counts[key][c] += 1
            self.total[key] += 1
            self.spent[key] += cost
        return None
