"""Multi-account (hydra cluster) detection: an account graph, communities, cluster-level bans.

The 2026 reports attribute campaigns "through IP address correlation, request metadata and
infrastructure indicators" and describe coordinated activity across thousands of accounts.
Every `score_every` ticks the accounts seen in the last `window_ticks` become nodes of a
graph; an edge's weight adds up what two accounts share:

- `payment` (the same payment fingerprint), `device` (the same client fingerprint),
  `ip` (the same address), `subnet` (the same /24, counted only off residential ASNs, where
  sharing is a sign of proxies or a datacenter rather than of one household),
- `behaviour`: cosine similarity of their standardised behavioural features
  (`defenses.features`, reading the text with a lexicon learned from the window itself) above `similarity`, for accounts with `min_requests` requests; it
  adds to shared infrastructure and never links two accounts on its own.

Pairs whose weight reaches `min_weight` are linked, and each connected component of at least
`min_size` accounts is a cluster (`defenses.graph.clusters`: the same array code serves the
incident-scale replay over a million accounts): `ctx.clusters` maps its accounts to it (rate limits and
information budgets then apply per cluster), and when any member is banned, by this or any
other defense, the ban propagates to every member (`propagate: true`). A cluster acts on itself
(`action`: ban, or flag for shaping and poisoning, when a flag of one member then flags all)
when at least `ban_share` of its members reuse a payment or client fingerprint with another
member (a campaign's cards and automation clients; a NAT's people each have their own).
A cluster keeps its identity across rounds: a component that shares an account with an
earlier cluster joins it, so a campaign is attributed as one cluster. Attribution quality
against the true campaigns is `detection/cluster_ari` (adjusted Rand index).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from defenses.base import Action, Defense
from defenses.features import FEATURES, account_features

LINKS = ("payment", "device", "ip", "subnet", "behaviour")


class Cluster(Defense):
    name = "cluster"  # its actions' `by`, and its `detection/<name>/*` metrics

    def __init__(self, weights: Mapping[str, float] | None = None, min_weight: float = 1.0,
                 similarity: float = 0.95, min_size: int = 3, min_requests: int = 4, window_ticks: int = 144,
                 score_every: int = 36, propagate: bool = True, ban_share: float | None = 0.3,
                 action: str = "ban"):
        weights = dict(weights if weights is not None else
                       {"payment": 1.0, "device": 0.5, "ip": 0.5, "subnet": 0.5, "behaviour": 0.5})
        for k, v in weights.items():
            if k not in LINKS:
                raise ValueError(f"defense.cluster.weights.{k}: unknown link (known: {', '.join(LINKS)})")
            if not v >= 0:
                raise ValueError(f"defense.cluster.weights.{k}={v!r} must be >= 0")
        if not min_weight > 0:
            raise ValueError(f"defense.cluster.min_weight={min_weight!r} must be > 0")
        if not -1 <= similarity <= 1:
            raise ValueError(f"defense.cluster.similarity={similarity!r} must be in [-1, 1]")
        for k, v in (("min_size", min_size), ("min_requests", min_requests), ("window_ticks", window_ticks),
                     ("score_every", score_every)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"defense.cluster.{k}={v!r} must be a positive integer")
        self.weights, self.min_weight, self.similarity = weights, float(min_weight), float(similarity)
        self.min_size, self.min_requests, self.window_ticks = min_size, min_requests, window_ticks
        if ban_share is not None and not 0 < ban_share <= 1:
            raise ValueError(f"defense.cluster.ban_share={ban_share!r} must be in (0, 1] or null")
        if action not in ("ban", "flag"):
            raise ValueError(f"defense.cluster.action={action!r} must be ban or flag")
        self.score_every, self.propagate, self.ban_share, self.action = score_every, bool(propagate), ban_share, action
        self.history: list[dict] = []
        self.last_scored = -1
        self.members: dict[str, set[str]] = {}  # cluster id -> accounts, over every round so far
        self.of: dict[str, str] = {}  # account -> its cluster id

    def labels(self, accounts: list, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The cluster label of each of `accounts` (Account views), -1 for none
        (`defenses.graph.clusters`, the same function the incident-scale replay uses), and
        each one's cluster's share of members reusing a payment or client fingerprint."""
        from defenses.graph import clusters, shared_identity

        by = pd.DataFrame([{"payment": a.payment, "device": a.device, "ip": a.ip,
                            "subnet": a.subnet if a.asn_kind != "residential" else None} for a in accounts])
        codes = {key: pd.factorize(by[key])[0] for key in ("payment", "device", "ip", "subnet")}  # None -> -1
        at = pd.Index([a.id for a in accounts]).get_indexer(features.index)
        keep = at >= 0
        label = clusters(codes, self.weights, self.min_weight, self.min_size,
                         features=features[list(FEATURES)].to_numpy(float)[keep], at=at[keep],
                         similarity=self.similarity)
        return label, shared_identity(label, codes["payment"], codes["device"])

    def attribute(self, accounts: list[str], tick: int, k: int) -> str:
        """This round's component joins the earliest cluster any of its accounts belonged to
        (merging the others into it): a campaign stays one cluster across rounds."""
        earlier = sorted({self.of[a] for a in accounts if a in self.of}, key=lambda c: tuple(map(int, c[1:].split("-"))))
        cid = earlier[0] if earlier else f"c{tick}-{k}"
        self.members.setdefault(cid, set()).update(accounts)
        for other in earlier[1:]:
            self.members[cid] |= self.members.pop(other)
        for a in self.members[cid]:
            self.of[a] = cid
        return cid

    def columnar(self) -> tuple[str, dict]:
        """This detector's parameters for the incident replay's array form (`sim.incident`),
        which links the same shared identity of every account at once (the same `clusters`)."""
        return "cluster", {"weights": self.weights, "min_weight": self.min_weight, "similarity": self.similarity,
                           "min_size": self.min_size, "min_requests": self.min_requests, "propagate": self.propagate,
                           "ban_share": self.ban_share if self.action == "ban" else None,  # the replay models bans
                           "window_ticks": self.window_ticks, "score_every": self.score_every}

    def observe(self, window, ctx) -> list:
        self.history += window
        actions = []
        if ctx.tick - self.last_scored >= self.score_every:
            self.last_scored = ctx.tick
            rows = pd.DataFrame([r for r in self.history if r["tick"] > ctx.tick - self.window_ticks])
            self.history = rows.to_dict("records") if len(rows) else []
            if not rows.empty:
                # the window's accounts, and every account of a cluster found earlier: a banned
                # account sends nothing, but its card, client and address still link its replacements
                known = sorted(set(self.of) - set(rows["account"].unique()))
                seen = [ctx.accounts[a] for a in [*rows["account"].unique(), *known] if a in ctx.accounts]
                offsets = {a.id: a.utc_offset for a in seen}
                feats = account_features(rows, offsets, ctx.tick_minutes, self.min_requests)
                label, reuse = self.labels(seen, feats) if seen else (np.zeros(0, int), np.zeros(0))
                for k in np.unique(label[label >= 0]):
                    cid = self.attribute([a.id for a, lab in zip(seen, label) if lab == k], ctx.tick, int(k))
                    for a in self.members[cid]:
                        ctx.clusters[a] = cid
                    if self.ban_share is not None and reuse[label == k][0] >= self.ban_share:
                        actions += [Action(self.action, m, by=self.name) for m in sorted(self.members[cid])
                                    if m not in ctx.banned]
        if self.propagate:  # a ban on any member bans the whole cluster (a flag flags it, when flagging)
            for cid, members in self.members.items():
                if any(m in ctx.banned for m in members):
                    actions += [Action("ban", m, by=self.name) for m in sorted(members) if m not in ctx.banned]
                elif self.action == "flag" and any(m in ctx.flagged for m in members):
                    actions += [Action("flag", m, by=self.name) for m in sorted(members)
                                if m not in ctx.flagged and m not in ctx.banned]
        done = {(a.kind, a.account) for a in actions}
        return [a for a in dict.fromkeys(actions) if a.kind == "ban" or ("ban", a.account) not in done]
