"""Accounts and the infrastructure behind them: what an API provider can see about a caller.

An `Account` carries only what a provider observes (tier, price, creation time, IP, /24
subnet, ASN kind, payment and device fingerprints, region). Which actor owns it is ground
truth kept by the world (`sim.world.World.owner`), never on the account: `Account` is the
view every defense receives, and it has no label field by construction.

`Network` hands out addresses and fingerprints so that sharing is explicit: residential
users get their own /24 subnets, a NAT puts many accounts behind one address, and proxy
pools put many accounts behind a few subnets (the "hydra cluster" of the 2026 reports).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# what one account costs to open (USD) and what one query costs, per tier; the 2026 reports
# name education, research and startup programs as the abused, cheap ways in
TIERS: dict[str, tuple[float, float]] = {
    "free": (0.5, 0.0),  # no fee, but a phone number and a solved captcha to buy
    "paid": (20.0, 0.002),
    "verified": (20.0, 0.002),
    "education": (0.0, 0.0005),
    "research": (0.0, 0.0005),
    "startup": (5.0, 0.001),
}
ASN_KINDS = ("residential", "datacenter", "proxy")
REGIONS = {"us": -6, "eu": 1, "asia": 8}  # UTC offsets: the daily cycle follows the region


def check_tier(tier: str, where: str) -> str:
    if tier not in TIERS:
        raise ValueError(f"{where}={tier!r} is not a tier (known: {', '.join(TIERS)})")
    return tier


@dataclass(frozen=True)
class Account:
    """The defense view of an account: observable fields only, no owner or label."""

    id: str
    tier: str = "free"
    created_tick: int = 0
    price: float = 0.0
    ip: str = "0.0.0.0"
    subnet: str = "0.0.0"  # the /24
    asn_kind: str = "residential"
    payment: str = ""
    device: str = ""
    region: str = "us"

    @property
    def utc_offset(self) -> int:
        return REGIONS[self.region]


class Network:
    """Deterministic allocation of subnets, addresses and fingerprints from one seeded rng."""

    FIRST_OCTET = {"residential": (60, 99), "datacenter": (34, 52), "proxy": (185, 195)}

    def __init__(self, seed: int):
        self.rng = random.Random(f"network-{seed}")
        self._subnets: set[str] = set()
        self._ids: set[str] = set()

    def subnet(self, kind: str) -> str:
        lo, hi = self.FIRST_OCTET[kind]
        while True:
            s = f"{self.rng.randint(lo, hi)}.{self.rng.randrange(256)}.{self.rng.randrange(256)}"
            if s not in self._subnets:
                self._subnets.add(s)
                return s

    def ip(self, subnet: str) -> str:
        return f"{subnet}.{self.rng.randint(2, 254)}"

    def fingerprint(self, kind: str) -> str:
        return f"{kind}-{self.rng.getrandbits(40):010x}"

    def account_id(self) -> str:
        """An opaque id: neither its owner nor its order of creation shows in it."""
        while True:
            aid = f"acct-{self.rng.getrandbits(40):010x}"
            if aid not in self._ids:
                self._ids.add(aid)
                return aid

    def account(self, tier: str, tick: int, *, subnet: str | None = None, ip: str | None = None,
                asn_kind: str = "residential", payment: str | None = None, device: str | None = None,
                region: str | None = None) -> Account:
        """A new account; every indicator not given is fresh (unshared)."""
        subnet = subnet or (ip.rsplit(".", 1)[0] if ip else self.subnet(asn_kind))
        return Account(
            id=self.account_id(), tier=tier, created_tick=tick, price=TIERS[tier][0],
            ip=ip or self.ip(subnet), subnet=subnet, asn_kind=asn_kind,
            payment=payment or self.fingerprint("pay"), device=device or self.fingerprint("dev"),
            region=region or self.rng.choice(list(REGIONS)),
        )
