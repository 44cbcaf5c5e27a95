"""A per-account request cap: the simplest limit a provider can set, and the one a hydra
campaign is built to evade (its harvest grows with its account count, not with the cap).

It counts requests that reached the check (refused ones included) over the whole run and
tells an account past its cap that it is spent (a `QUOTA` refusal: a hydra replaces such an
account as it replaces a banned one). A real rate limiter (token buckets per account, IP,
subnet, payment and cluster) is a separate defense; this one measures the evasion alone.
"""

from __future__ import annotations

from collections import Counter

from defenses.base import QUOTA, Defense


class RequestCap(Defense):
    def __init__(self, per_account: int = 10):
        if not isinstance(per_account, int) or per_account < 0:
            raise ValueError(f"defense.request_cap.per_account={per_account!r} must be a non-negative integer")
        self.per_account = per_account
        self.used: Counter = Counter()

    def check(self, request, ctx):
        aid = request.account.id
        if self.used[aid] >= self.per_account:
            return f"{QUOTA}request cap"
        self.used[aid] += 1
        return None
