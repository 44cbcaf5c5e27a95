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
