"""Rate limits: token buckets per account, IP, /24 subnet, payment fingerprint and detected
cluster, over a per-minute and a per-day window.

The per-minute window is a token bucket per key value: capacity b = `per_minute` x
`burst_minutes` tokens, refilled at `per_minute` tokens per simulated minute, one token per
request. The per-day window is a count per key value and simulated day. A request passes
only if every configured bucket of every key it maps to has a token; otherwise, with
`mode: reject`, it is refused with the name of the limit it hit ("rate limit:
subnet/minute"); with `mode: delay`, a per-minute miss holds the request at the gateway
until a token is back (up to `gateway.max_delay` ticks), as an API answering 429 with
Retry-After would. A per-day miss is always refused.

`cluster` keys read `ctx.clusters` (account -> cluster id), which a detection defense earlier
in the stack writes; accounts no detector has clustered are their own cluster.

Per-account limits alone are what a hydra campaign is built to evade (its harvest scales
with its account count); shared-infrastructure keys (IP, subnet, payment) are what bite it,
and also what hurts many legitimate users behind one NAT.
"""

from __future__ import annotations

from collections.abc import Mapping

from defenses.base import DELAY, RATE, Defense

KEYS = ("account", "ip", "subnet", "payment", "cluster")
MINUTES_PER_DAY = 24 * 60


def _limits(values: Mapping | None, where: str) -> dict[str, float]:
    out = {}
    for k, v in dict(values or {}).items():
        if k not in KEYS:
            raise ValueError(f"{where}.{k}: unknown key (known: {', '.join(KEYS)})")
        if v is None:
            continue
        if not v > 0:
            raise ValueError(f"{where}.{k}={v!r} must be > 0 (or null: no limit)")
        out[k] = float(v)
    return out


def key_value(account, kind: str, ctx) -> str:
    if kind == "account":
        return account.id
    if kind == "cluster":
        return ctx.clusters.get(account.id, account.id)
    return getattr(account, kind)


class RateLimit(Defense):
    def __init__(self, per_minute: Mapping | None = None, per_day: Mapping | None = None,
                 burst_minutes: float = 10.0, mode: str = "reject"):
        self.per_minute = _limits(per_minute, "defense.rate_limit.per_minute")
        self.per_day = _limits(per_day, "defense.rate_limit.per_day")
        if not burst_minutes > 0:
            raise ValueError(f"defense.rate_limit.burst_minutes={burst_minutes!r} must be > 0")
        self.burst_minutes = float(burst_minutes)
        if mode not in ("reject", "delay"):
            raise ValueError(f"defense.rate_limit.mode={mode!r} must be 'reject' or 'delay'")
        self.mode = mode
        self.buckets: dict[tuple[str, str], tuple[float, float]] = {}  # (kind, value) -> (tokens, at minute)
        self.days: dict[tuple[str, str, int], int] = {}  # (kind, value, day) -> requests

    def _tokens(self, kind: str, value: str, now: float) -> float:
        rate = self.per_minute[kind]
        cap = rate * self.burst_minutes
        tokens, at = self.buckets.get((kind, value), (cap, now))
        return min(cap, tokens + (now - at) * rate)

    def check(self, request, ctx):
        now = ctx.tick * ctx.tick_minutes  # a delayed request is checked again later
        day = int(now // MINUTES_PER_DAY)
        keys = {kind: key_value(request.account, kind, ctx) for kind in KEYS}
        for kind, limit in self.per_day.items():
            if self.days.get((kind, keys[kind], day), 0) + 1 > limit:
                return f"{RATE}{kind}/day"
        for kind in self.per_minute:
            if self._tokens(kind, keys[kind], now) < 1:
                return (DELAY if self.mode == "delay" else "") + f"{RATE}{kind}/minute"
        # admitted: spend one token of every bucket
        for kind in self.per_minute:
            self.buckets[kind, keys[kind]] = (self._tokens(kind, keys[kind], now) - 1, now)
        for kind in self.per_day:
            self.days[kind, keys[kind], day] = self.days.get((kind, keys[kind], day), 0) + 1
        return None
