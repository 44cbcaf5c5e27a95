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
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from defenses.info_budget import cell, command
from sim.surface import PREFIXES, SUFFIXES

FEATURES = ("log_volume", "why_rate", "template_rate", "typo_rate", "cell_entropy", "cell_coverage",
            "switch_rate", "followup_rate", "gap_cv", "night_rate", "length_trend")


def _templated(p: str) -> bool:
    return p.startswith(PREFIXES) or p.endswith(SUFFIXES)


def _typo(p: str) -> bool:
    """A doubled space, or a command word that `command` only recognised through a swap."""
    return "  " in p or command(p) not in ("other", *p.split())


def _core(p: str) -> str:
    """The question after its command word (without chat, the explain marker or tags)."""
    words = p.replace("?", " ").replace("!", " ").split()
    cmd = command(p)
    i = next((i for i, w in enumerate(words) if command(w) == cmd), -1)
    return " ".join(words[i + 1:])


def request_features(rows: pd.DataFrame, utc_offset: dict[str, int], tick_minutes: int) -> pd.DataFrame:
    """Per-request columns the account features aggregate (rows in time order)."""
    p = rows["prompt"]
    cells = p.map(lambda s: cell(s))
    out = pd.DataFrame({
        "account": rows["account"].to_numpy(),
        "tick": rows["tick"].to_numpy(),
        "why": p.str.contains(r"(?:^|\s)why\s", regex=True).to_numpy(),
        "templated": p.map(_templated).to_numpy(),
        "typo": p.map(_typo).to_numpy(),
        "command": [c[0] for c in cells],
        "cell": [f"{c[0]}:{c[1]}" for c in cells],
        "length": [c[1] for c in cells],
        "core": p.map(_core).to_numpy(),
        "answer": rows["response"].str.rsplit("#", n=1).str[-1].str.strip().to_numpy(),
    })
    hours = (out["tick"] * tick_minutes / 60 + out["account"].map(utc_offset).fillna(0)) % 24
    out["night"] = (hours < 6).to_numpy()
    prev = out.groupby("account", sort=False).shift(1)
    same_q = out["core"] == prev["core"]  # the same question again (a "why?" re-ask)
    hop = [bool(a) and f" {a} " in f" {c} " for a, c in zip(prev["answer"].fillna(""), out["core"])]
    out["followup"] = (same_q | np.array(hop)) & prev["core"].notna()
    out["switch"] = (out["command"] != prev["command"]) & prev["command"].notna()
    out["gap"] = out["tick"] - prev["tick"]
    out["order"] = out.groupby("account", sort=False).cumcount()
    return out


def _entropy(counts: pd.Series) -> float:
    q = counts / counts.sum()
    return float(-(q * np.log2(q)).sum())


def account_features(rows: pd.DataFrame, utc_offset: dict[str, int], tick_minutes: int,
                     min_requests: int = 1) -> pd.DataFrame:
    """One row per account with at least `min_requests` requests in `rows`, indexed by account."""
    if rows.empty:
        return pd.DataFrame(columns=FEATURES)
    r = request_features(rows, utc_offset, tick_minutes)
    g = r.groupby("account", sort=True)
    n = g.size()
    days = (g["tick"].max() - g["tick"].min() + 1) * tick_minutes / (24 * 60)
    gap_mean, gap_std = g["gap"].mean(), g["gap"].std(ddof=0)
    cells = r.groupby(["account", "cell"]).size()
    feats = pd.DataFrame({
        "log_volume": np.log1p(n / days.clip(lower=1.0)),
        "why_rate": g["why"].mean(),
        "template_rate": g["templated"].mean(),
        "typo_rate": g["typo"].mean(),
        "cell_entropy": cells.groupby(level=0).apply(_entropy),
        "cell_coverage": cells.groupby(level=0).size() / n,
        "switch_rate": g["switch"].sum() / (n - 1).clip(lower=1),
        "followup_rate": g["followup"].sum() / (n - 1).clip(lower=1),
        "gap_cv": (gap_std / gap_mean.replace(0, np.nan)).fillna(0.0),
        "night_rate": g["night"].mean(),
        "length_trend": g[["order", "length"]].apply(
            lambda d: d["order"].corr(d["length"]) if len(d) > 2 and d["length"].nunique() > 1 else 0.0),
    })
    return feats[n >= min_requests].fillna(0.0).astype(float)
