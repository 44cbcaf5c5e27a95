"""Behavioural features of accounts, computed from public log rows only (vectorised pandas).

The 2026 reports describe what tells automated campaigns from people: organic users make
typos, change topic, ask follow-ups and keep human hours; campaigns are methodical,
uniformly formatted, elicit reasoning, and rarely pivot. One row per account:

| feature            | what it measures |
|--------------------|------------------|
| `log_volume`       | log(1 + requests per simulated day seen) |
| `why_rate`         | share of requests that ask for the reasoning |
| `template_rate`    | share wrapped in chat (a greeting before, a tag after) |
| `typo_rate`        | share with a misspelt command word or a doubled space |
| `cell_entropy`     | entropy (bits) of the request cells (command x length bucket) |
| `cell_coverage`    | distinct cells / requests (how little it repeats itself) |
| `switch_rate`      | share of consecutive requests that change command (topic switching) |
| `followup_rate`    | share that build on the previous answer (a "why" re-ask, a next kb hop) |
| `gap_cv`           | coefficient of variation of inter-arrival ticks (regularity; low = metronomic) |
| `night_rate`       | share of requests between 0:00 and 6:00 in the account's region |
| `length_trend`     | correlation of question length with time (difficulty progression) |

The words read from the text (commands, chat words) come from a `defenses.lexicon.Lexicon`
learned from traffic, never from how the simulator writes its requests: the detector's own
calibration traffic, or else the rows being scored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from defenses.lexicon import OTHER, Lexicon, bucket
from sim.tasks import EXPLAIN

FEATURES = ("log_volume", "why_rate", "template_rate", "typo_rate", "cell_entropy", "cell_coverage",
            "switch_rate", "followup_rate", "gap_cv", "night_rate", "length_trend")


def request_features(rows: pd.DataFrame, lexicon: Lexicon | None = None) -> pd.DataFrame:
    """Per-request columns read from the text, for `aggregate` (rows in time order), with
    `lexicon` (default: learned from these rows' prompts)."""
    p = rows["prompt"]
    lex = lexicon or Lexicon.fit(p)
    parsed = [lex.parse(s) for s in p]
    cells = [(c, bucket(rest)) for c, rest, _ in parsed]
    out = pd.DataFrame({
        "account": rows["account"].to_numpy(),
        "tick": rows["tick"].to_numpy(),
        "why": p.str.contains(rf"(?:^|\s){EXPLAIN}", regex=True).to_numpy(),
        "templated": p.map(lex.wrapped).to_numpy(),
        # a doubled space, or a command word read only through a swap of its letters
        "typo": p.str.contains("  ", regex=False).to_numpy() | np.array([t for _, _, t in parsed], bool),
        "command": [c[0] for c in cells],
        "cell": [f"{c[0]}:{c[1]}" for c in cells],
        "length": [c[1] for c in cells],
        # the question after its command word (without chat, the explain marker or tags)
        "core": [" ".join(rest if c == OTHER else rest[1:]) for c, rest, _ in parsed],
        "answer": rows["response"].str.rsplit("#", n=1).str[-1].str.strip().to_numpy(),
    })
    prev = out.groupby("account", sort=False).shift(1)
    same_q = out["core"] == prev["core"]  # the same question again (a "why?" re-ask)
    hop = [bool(a) and f" {a} " in f" {c} " for a, c in zip(prev["answer"].fillna(""), out["core"])]
    out["followup"] = (same_q | np.array(hop)) & prev["core"].notna()
    return out


def aggregate(account: np.ndarray, tick: np.ndarray, cols: dict[str, np.ndarray], utc_offset: np.ndarray,
              tick_minutes: int, min_requests: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The account features from per-request columns, in numpy only (no per-row Python), so
    the same code serves a 100-account run and an incident-scale replay.

    `account`: integer account index per request; `tick`: its tick, rows in time order;
    `cols`: `why`, `templated`, `typo`, `followup` (bools), `command`, `cell`, `length`
    (integers); `utc_offset`: hours, per account index. Returns (the accounts with at least
    `min_requests` requests, sorted; their FEATURES matrix, float64).
    """
    order = np.argsort(account, kind="stable")  # each account's rows in time order
    acc, t = account[order], tick[order].astype(np.int64)
    ids, first, n = np.unique(acc, return_index=True, return_counts=True)
    seg = np.repeat(np.arange(len(ids)), n)  # segment number of every row
    c = {k: np.asarray(v)[order] for k, v in cols.items()}
    has_prev = np.ones(len(acc), bool)
    has_prev[first] = False

    def total(x):
        return np.bincount(seg, weights=np.asarray(x, float), minlength=len(ids))

    def prev(x):
        return np.concatenate([x[:1], x[:-1]])

    pairs = np.maximum(n - 1, 1)
    span_days = (np.maximum.reduceat(t, first) - np.minimum.reduceat(t, first) + 1) * tick_minutes / (24 * 60)
    # cells: entropy log2(n) - sum c log2 c / n over each account's cell counts
    m = int(c["cell"].max()) + 1 if len(acc) else 1
    cell_keys, cell_n = np.unique(seg.astype(np.int64) * m + c["cell"], return_counts=True)
    cell_seg = cell_keys // m
    clog = np.bincount(cell_seg, weights=cell_n * np.log2(cell_n), minlength=len(ids))
    distinct = np.bincount(cell_seg, minlength=len(ids))
    # inter-arrival gaps (each account's first row has none)
    gap = np.where(has_prev, t - prev(t), 0).astype(float)
    g_mean = total(gap) / pairs
    g_var = np.maximum(total(np.where(has_prev, gap ** 2, 0.0)) / pairs - g_mean ** 2, 0.0)
    gap_cv = np.where((n > 1) & (g_mean > 0), np.sqrt(g_var) / np.where(g_mean > 0, g_mean, 1), 0.0)
    hours = (t * tick_minutes / 60 + utc_offset[acc]) % 24
    # difficulty progression: Pearson correlation of a request's order with its length
    o = np.arange(len(acc)) - np.repeat(first, n)
    x, y = o.astype(float), c["length"].astype(float)
    sx, sy, sxy, sxx, syy = total(x), total(y), total(x * y), total(x * x), total(y * y)
    cov, vx, vy = sxy - sx * sy / n, sxx - sx ** 2 / n, syy - sy ** 2 / n
    ok = (n > 2) & (vx > 1e-9) & (vy > 1e-9)
    trend = np.where(ok, cov / np.sqrt(np.where(ok, vx * vy, 1.0)), 0.0)
    feats = np.column_stack([
        np.log1p(n / np.maximum(span_days, 1.0)),
        total(c["why"]) / n,
        total(c["templated"]) / n,
        total(c["typo"]) / n,
        np.log2(n) - clog / n,
        distinct / n,
        total(has_prev & (c["command"] != prev(c["command"]))) / pairs,
        total(has_prev & c["followup"]) / pairs,
        gap_cv,
        total(hours < 6) / n,
        trend,
    ])
    keep = n >= min_requests
    return ids[keep], feats[keep]


def account_features(rows: pd.DataFrame, utc_offset: dict[str, int], tick_minutes: int,
                     min_requests: int = 1, lexicon: Lexicon | None = None) -> pd.DataFrame:
    """One row per account with at least `min_requests` requests in `rows`, indexed by account
    (`lexicon`: see `request_features`)."""
    if rows.empty:
        return pd.DataFrame(columns=FEATURES)
    r = request_features(rows, lexicon)
    names, account = np.unique(r["account"].to_numpy(), return_inverse=True)
    cols = {k: r[k].to_numpy() for k in ("why", "templated", "typo")}
    cols["followup"] = r["followup"].to_numpy(bool)
    cols["command"] = pd.factorize(r["command"])[0]
    cols["cell"] = pd.factorize(r["cell"])[0]
    cols["length"] = r["length"].to_numpy()
    offsets = np.array([utc_offset.get(a, 0) for a in names], float)
    ids, x = aggregate(account, r["tick"].to_numpy(), cols, offsets, tick_minutes, min_requests)
    return pd.DataFrame(x, index=pd.Index(names[ids], name="account"), columns=list(FEATURES))
