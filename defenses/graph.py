"""The shared-infrastructure account graph as a sparse matrix, for the text runs' cluster
detector (`defenses.cluster`) and the incident-scale replay (`sim.incident`).

Two accounts that share an indicator (a payment fingerprint, a client fingerprint, an IP, a
non-residential /24) gain that indicator's weight. With B the [accounts × values] incidence
matrix of one indicator, B Bᵀ counts shared values for every pair at once: no pair loops, so
the same code serves 200 accounts and 1.2 million.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# a group this large (a carrier NAT, a public proxy pool) says nothing about one campaign
MAX_GROUP = 500


def shared_links(codes: Mapping[str, np.ndarray], weights: Mapping[str, float], n: int):
    """Upper-triangular [n, n] scipy COO matrix of summed weights: accounts i < j gain
    `weights[key]` for each indicator `key` whose code they share. Codes are integers, -1 for
    none (a residential /24, say); groups of more than `MAX_GROUP` accounts link nobody."""
    from scipy import sparse

    graph = sparse.csr_matrix((n, n))
    for key, v in codes.items():
        wk = float(weights.get(key, 0.0))
        if wk == 0:
            continue
        vals, inv, cnt = np.unique(v, return_inverse=True, return_counts=True)
        ok = (v >= 0) & (cnt[inv] >= 2) & (cnt[inv] <= MAX_GROUP)
        b = sparse.csr_matrix((np.ones(ok.sum()), (np.flatnonzero(ok), inv[ok])), shape=(n, len(vals)))
        graph = graph + wk * (b @ b.T)
    return sparse.triu(graph, k=1).tocoo()


def clusters(codes: Mapping[str, np.ndarray], weights: Mapping[str, float], min_weight: float, min_size: int,
             features: np.ndarray | None = None, at: np.ndarray | None = None, similarity: float = 1.0) -> np.ndarray:
    """One cluster detector for every scale: the cluster label of each of n accounts (-1: none).

    `codes` are the n accounts' indicators (as `shared_links`); `features` [m, F] behavioural
    features of the accounts at rows `at` (m indices into the n; accounts with too few
    requests have none). A pair is linked when its shared indicators, plus `weights["behaviour"]`
    when the cosine similarity of its standardised features reaches `similarity`, weigh at
    least `min_weight`; the clusters are the connected components of the links with at least
    `min_size` accounts. Similarity is computed only for pairs it could tip over `min_weight`,
    so the cost follows the shared-infrastructure pairs, not n²."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    n = len(next(iter(codes.values()))) if codes else 0
    graph = shared_links(codes, weights, n)
    w = graph.data.copy()
    wb = float(weights.get("behaviour", 0.0))
    if wb and features is not None and len(features) > 1:
        cand = np.flatnonzero((w < min_weight) & (w + wb >= min_weight))
        pos = np.full(n, -1)
        pos[at] = np.arange(len(at))
        z = ((features - features.mean(0)) / (features.std(0) + 1e-6)).astype(np.float32)
        z /= np.linalg.norm(z, axis=1, keepdims=True) + 1e-9
        i, j = pos[graph.row[cand]], pos[graph.col[cand]]
        both = (i >= 0) & (j >= 0)
        sim = np.einsum("ij,ij->i", z[i[both]], z[j[both]])
        w[cand[both]] += wb * (sim >= similarity)
    keep = w >= min_weight
    edges = sparse.coo_matrix((np.ones(keep.sum()), (graph.row[keep], graph.col[keep])), shape=(n, n))
    _, label = connected_components(edges, directed=False)
    size = np.bincount(label, minlength=1)
    return np.where(size[label] >= min_size, label, -1)


def shared_identity(label: np.ndarray, payment: np.ndarray, device: np.ndarray) -> np.ndarray:
    """For each account, the share of its cluster's members (label >= 0) whose payment or
    client fingerprint is also another member's (codes as in `shared_links`; 0 outside a
    cluster). A NAT's people share an address but each pays and installs on their own; a
    campaign's accounts reuse cards and automation clients."""
    out = np.zeros(len(label))
    inside = label >= 0
    if not inside.any():
        return out
    reused = np.zeros(len(label), bool)
    for v in (payment, device):
        key = label.astype(np.int64) * (int(v.max()) + 2) + v  # (cluster, value) pairs
        _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
        reused |= inside & (v >= 0) & (cnt[inv] >= 2)
    share = np.bincount(label[inside], weights=reused[inside]) / np.maximum(np.bincount(label[inside]), 1)
    out[inside] = share[label[inside]]
    return out
