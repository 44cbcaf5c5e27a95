"""A per-account request cap: the simplest limit a provider can set, and the one a hydra
campaign is built to evade (its harvest grows with its account count, not with the cap).

It counts requests that reached the check (refused ones included) over the whole run; a
real rate limiter (token buckets per account, IP, subnet, payment and cluster) is a
separate defense; this one exists to measure the evasion in isolation.
"""

from __future__ import annotations

from collections import Counter

from defenses.base import Defense


class RequestCap(Defense):
    def __init__(self, per_account: int = 10):
        if not isinstance(per_account, int) or per_account < 0:
            raise ValueError(f"defense.request_cap.per_account={per_account!r} must be a non-negative integer")
        self.per_account = per_account
        self.used: Counter = Counter()

    def check(self, request, ctx):
        aid = request.account.id
        if self.used[aid] >= self.per_account:
            return "request cap"
        self.used[aid] += 1
        return None
