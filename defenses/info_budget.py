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
(a proxy for difficulty: more operations, rows, slots or hops make longer questions).
"""

from __future__ import annotations

import math
from collections import defaultdict

from defenses.base import Defense
from defenses.rate_limit import key_value

COMMANDS = ("calc", "run", "tool", "tbl", "kb", "doc")
KEYS = ("account", "cluster")


def command(prompt: str) -> str:
    """The request's command word, robust to chat prefixes and a swapped-letter typo."""
    for word in prompt.replace("?", " ").replace("!", " ").split():
        if word in COMMANDS:
            return word
        for c in COMMANDS:
            if len(word) == len(c) and sorted(word) == sorted(c):
                return c
    return "other"


def cell(prompt: str, length_bucket: int = 4) -> tuple[str, int]:
    words = prompt.replace("?", " ").replace("!", " ").split()
    cmd = command(prompt)
    start = next((i for i, w in enumerate(words) if command(w) == cmd), 0)
    return cmd, len(" ".join(words[start:])) // length_bucket


def _xlogx(n: int) -> float:
    return n * math.log2(n) if n > 0 else 0.0


class InfoBudget(Defense):
    def __init__(self, bits: float = 40.0, keys: tuple[str, ...] | list[str] = ("account", "cluster"),
                 length_bucket: int = 4):
        if not bits > 0:
            raise ValueError(f"defense.info_budget.bits={bits!r} must be > 0")
        for k in keys:
            if k not in KEYS:
                raise ValueError(f"defense.info_budget.keys: {k!r} is not one of {KEYS}")
        if not isinstance(length_bucket, int) or length_bucket < 1:
            raise ValueError(f"defense.info_budget.length_bucket={length_bucket!r} must be a positive integer")
        self.bits, self.keys, self.length_bucket = float(bits), tuple(keys), length_bucket
        self.counts: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(int))
        self.total: dict[tuple[str, str], int] = defaultdict(int)
        self.spent: dict[tuple[str, str], float] = defaultdict(float)

    @staticmethod
    def cost(n: int, n_c: int) -> float:
        """Growth of n H(p_n) when one more request (of n so far) lands in a cell holding n_c."""
        return (_xlogx(n + 1) - _xlogx(n)) - (_xlogx(n_c + 1) - _xlogx(n_c))

    def check(self, request, ctx):
        c = cell(request.prompt, self.length_bucket)
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
