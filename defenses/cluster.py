"""Multi-account (hydra cluster) detection: an account graph, communities, cluster-level bans.

The 2026 reports attribute campaigns "through IP address correlation, request metadata and
infrastructure indicators" and describe coordinated activity across thousands of accounts.
Every `score_every` ticks the accounts seen in the last `window_ticks` become nodes of a
graph; an edge's weight adds up what two accounts share:

- `payment` (the same payment fingerprint), `device` (the same client fingerprint),
  `ip` (the same address), `subnet` (the same /24, counted only off residential ASNs, where
  sharing is a sign of proxies or a datacenter rather than of one household),
- `behaviour`: cosine similarity of their standardised behavioural features
  (`defenses.features`) above `similarity`, for accounts with `min_requests` requests.

Edges of weight at least `min_weight` are kept and communities found with the Louvain
method (`networkx.community.louvain_communities`, seeded). Each community of at least
`min_size` accounts is a cluster: `ctx.clusters` maps its accounts to it (rate limits and
information budgets then apply per cluster), and when any member is banned, by this or any
other defense, the ban propagates to every member (`propagate: true`). Attribution quality
against the true campaigns is `detection/cluster_ari` (adjusted Rand index).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from defenses.base import Defense
from defenses.features import FEATURES, account_features

LINKS = ("payment", "device", "ip", "subnet", "behaviour")


class Cluster(Defense):
    def __init__(self, weights: Mapping[str, float] | None = None, min_weight: float = 1.0,
                 similarity: float = 0.95, min_size: int = 3, min_requests: int = 4, window_ticks: int = 144,
                 score_every: int = 36, propagate: bool = True, seed: int = 0):
        weights = dict(weights if weights is not None else
                       {"payment": 1.0, "device": 0.5, "ip": 0.5, "subnet": 0.25, "behaviour": 0.5})
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
        self.score_every, self.propagate, self.seed = score_every, bool(propagate), seed
        self.history: list[dict] = []
        self.last_scored = -1
        self.members: dict[str, list[str]] = {}  # cluster id -> accounts

    def graph(self, accounts: list, features: pd.DataFrame):
        """The weighted account graph (networkx) over `accounts` (Account views)."""
        import networkx as nx
        from scipy import sparse

        from defenses.graph import shared_links

        ids = [a.id for a in accounts]
        g = nx.Graph()
        g.add_nodes_from(ids)
        if not ids:
            return g
        by = pd.DataFrame([{"payment": a.payment, "device": a.device, "ip": a.ip,
                            "subnet": a.subnet if a.asn_kind != "residential" else None} for a in accounts])
        codes = {key: pd.factorize(by[key])[0] for key in ("payment", "device", "ip", "subnet")}  # None -> -1
        w = shared_links(codes, self.weights, len(ids)).tocsr()
        if self.weights.get("behaviour") and len(features) > 1:
            x = features[list(FEATURES)].to_numpy(float)
            x = (x - x.mean(0)) / (x.std(0) + 1e-6)
            x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-9
            ii, jj = np.nonzero(np.triu(x @ x.T >= self.similarity, k=1))
            at = pd.Index(ids).get_indexer(features.index)  # -1: an account not in this graph
            i, j = at[ii], at[jj]
            keep = (i >= 0) & (j >= 0)
            i, j = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
            w = w + sparse.csr_matrix((np.full(len(i), self.weights["behaviour"]), (i, j)), shape=w.shape)
        w = w.tocoo()
        keep = w.data >= self.min_weight
        g.add_weighted_edges_from((ids[i], ids[j], float(x)) for i, j, x in zip(w.row[keep], w.col[keep], w.data[keep]))
        return g

    def observe(self, window, ctx) -> list:
        from networkx.algorithms.community import louvain_communities

        from sim.gateway import Action

        self.history += window
        actions = []
        if ctx.tick - self.last_scored >= self.score_every:
            self.last_scored = ctx.tick
            rows = pd.DataFrame([r for r in self.history if r["tick"] > ctx.tick - self.window_ticks])
            self.history = rows.to_dict("records") if len(rows) else []
            if not rows.empty:
                seen = [ctx.accounts[a] for a in rows["account"].unique() if a in ctx.accounts]
                offsets = {a.id: a.utc_offset for a in seen}
                feats = account_features(rows, offsets, ctx.tick_minutes, self.min_requests)
                g = self.graph(seen, feats)
                g.remove_nodes_from([n for n, d in list(g.degree()) if d == 0])
                for k, comm in enumerate(louvain_communities(g, weight="weight", seed=self.seed) if len(g) else []):
                    if len(comm) >= self.min_size:
                        cid = f"c{ctx.tick}-{k}"
                        self.members[cid] = sorted(comm)
                        for a in comm:
                            ctx.clusters[a] = cid
        if self.propagate:  # a ban on any member bans the whole cluster
            for cid, members in self.members.items():
                if any(m in ctx.banned for m in members):
                    actions += [Action("ban", m, by="cluster") for m in members if m not in ctx.banned]
        return actions
