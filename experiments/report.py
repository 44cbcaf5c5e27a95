"""Result tables from run directories: `python -m experiments.report DIR... [--out FILE]`.

Tables come only from `results.json` files (found recursively, so a Hydra multirun directory
works). Runs are grouped by every config value that differs between them, except the seed;
each cell is mean ± std over the group's seeds, with n.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

# the better direction for the side a metric measures: transfer, fidelity and coverage the
# attacker's; utility and detection the defender's (no arrow: context, not a score)
ARROWS = {"transfer": "↑", "fidelity": "↑", "student": "↑", "coverage": "↑", "utility/relative": "↑",
          "utility/false_ban_rate": "↓", "detection/precision": "↑", "detection/recall": "↑",
          "detection/ticks_to_first_ban": "↓", "detection/leaked_before_ban": "↓"}
DEFAULT_METRICS = ("transfer/mean", "transfer/net", "fidelity", "coverage/kb", "student/acc", "teacher/acc",
                   "utility/relative", "utility/false_ban_rate", "attacker/queries", "attacker/accounts",
                   "attacker/harvested", "attacker/banned", "attacker/cost_usd", "detection/recall",
                   "detection/leaked_before_ban")
SKIP = ("config/seed", "config/choices.")


def load(dirs) -> pd.DataFrame:
    rows = []
    for d in dirs:
        d = Path(d)
        files = [d] if d.name == "results.json" else sorted(d.rglob("results.json"))
        for f in files:
            r = json.loads(f.read_text())
            r["run_dir"] = str(f.parent)
            rows.append(r)
    if not rows:
        raise SystemExit(f"no results.json under {', '.join(map(str, dirs))}")
    return pd.DataFrame(rows)


def varying_keys(df: pd.DataFrame) -> list[str]:
    keys = [c for c in df.columns if c.startswith("config/") and not c.startswith(SKIP)]
    return [k for k in keys if df[k].astype(str).nunique() > 1]


def _fmt(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "–"
    if len(v) == 1 or math.isclose(v.std(), 0.0, abs_tol=1e-12):
        return f"{v.mean():.3g}" if abs(v.mean()) >= 10 else f"{v.mean():.3f}"
    return f"{v.mean():.3f} ± {v.std():.3f}"


def summarise(df: pd.DataFrame, metrics=None, by=None) -> pd.DataFrame:
    skills = sorted(c for c in df.columns if c.startswith("transfer/") and c not in ("transfer/mean", "transfer/net"))
    metrics = list(metrics or [*DEFAULT_METRICS[:2], *skills, *DEFAULT_METRICS[2:]])
    metrics = [m for m in metrics if m in df.columns]
    by = list(by) if by is not None else varying_keys(df)
    # a metric that only echoes a grouping key (attacker/queries when sweeping the budget) is noise
    echoed = {k.removeprefix("config/").replace(".", "/") for k in by}
    metrics = [m for m in metrics if m not in echoed]
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    out = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = {k.removeprefix("config/").removeprefix("choice/"): v for k, v in zip(by, key)}
        row["n"] = len(g)
        for m in metrics:
            arrow = ARROWS.get(m, ARROWS.get(m.split("/")[0], ""))
            row[f"{m} {arrow}".strip()] = _fmt(g[m])
        out.append(row)
    return pd.DataFrame(out)


def table(dirs, metrics=None, by=None) -> str:
    return summarise(load(dirs), metrics, by).to_markdown(index=False)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="run directories or multirun directories")
    ap.add_argument("--by", nargs="*", default=None, help="config keys to group by (default: those that vary)")
    ap.add_argument("--metrics", nargs="*", default=None)
    ap.add_argument("--out", default=None, help="also write the Markdown table to this file")
    args = ap.parse_args(argv)
    # a key is a results column as given (`choice/attacker`) or a config value (`attacker.queries`)
    by = [k if k.startswith(("config/", "choice/")) else f"config/{k}" for k in args.by] if args.by is not None else None
    md = table(args.dirs, args.metrics, by)
    print(md)
    if args.out:
        Path(args.out).write_text(md + "\n")


if __name__ == "__main__":
    main()
