"""Result tables from run directories: `python -m experiments.report DIR... [--out FILE.md]`.

Tables come only from `results.json` files (found recursively, so a Hydra multirun directory
works); jobs that recorded an `error.json` instead are listed under the table. Runs are grouped by every config value that differs between them, except the seed
(or by `--by KEY...`); each cell is mean ± std over the group's seeds, with n, and each
metric carries the direction that is better for its side (↑/↓).

`--out FILE.md` also writes FILE.tex (booktabs), FILE.csv (means, stds and n as numbers) and
FILE.png, the Pareto plot of the sweep: transfer against legitimate-user utility, one
labelled point per group, with the defender's frontier (lowest transfer for the utility).
`experiments.callbacks.Report` writes them into a multirun directory when the sweep ends.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

# the better direction for the side a metric measures: transfer, fidelity and coverage the
# attacker's; utility and detection the defender's (no arrow: context, not a score)
ARROWS = {"transfer": "↑", "fidelity": "↑", "student/acc": "↑", "coverage": "↑", "utility/relative": "↑",
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


def failures(dirs) -> list[tuple[str, str]]:
    """(job directory, error) of every job that recorded an error.json and has no results."""
    out = []
    for d in map(Path, dirs):
        for f in sorted(d.rglob("error.json")) if d.is_dir() else []:
            if not (f.parent / "results.json").exists():
                out.append((str(f.parent), json.loads(f.read_text()).get("error", "?")))
    return out


def failed_section(dirs) -> str:
    failed = failures(dirs)
    return "" if not failed else "\n**Failed jobs** (rerun the sweep to run only these):\n\n" + "".join(
        f"- `{d}`: {e}\n" for d, e in failed)


def varying_keys(df: pd.DataFrame) -> list[str]:
    # seeds, including a component's own `${seed}` (defense.watermark.seed), are what a mean is over
    keys = [c for c in df.columns if c.startswith("config/") and not c.startswith(SKIP) and not c.endswith(".seed")]
    return [k for k in keys if df[k].astype(str).nunique() > 1]


def _fmt(values: pd.Series) -> str:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return "–"
    if len(v) == 1 or math.isclose(v.std(), 0.0, abs_tol=1e-12):
        return f"{v.mean():.3g}" if abs(v.mean()) >= 10 else f"{v.mean():.3f}"
    return f"{v.mean():.3f} ± {v.std():.3f}"


def _groups(df: pd.DataFrame, by: list[str]):
    """(row of the group's key values and n, the group's runs) per group."""
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = {k.removeprefix("config/").removeprefix("choice/"): v for k, v in zip(by, key)}
        row["n"] = len(g)
        yield row, g


def summarise(df: pd.DataFrame, metrics=None, by=None) -> pd.DataFrame:
    skills = sorted(c for c in df.columns if c.startswith("transfer/") and c not in ("transfer/mean", "transfer/net"))
    metrics = list(metrics or [*DEFAULT_METRICS[:2], *skills, *DEFAULT_METRICS[2:]])
    metrics = [m for m in metrics if m in df.columns]
    by = list(by) if by is not None else varying_keys(df)
    # a metric that only echoes a grouping key (attacker/queries when sweeping the budget) is noise
    echoed = {k.removeprefix("config/").replace(".", "/") for k in by}
    metrics = [m for m in metrics if m not in echoed]
    out = []
    for row, g in _groups(df, by):
        for m in metrics:
            arrow = ARROWS.get(m, ARROWS.get(m.split("/")[0], ""))
            row[f"{m} {arrow}".strip()] = _fmt(g[m])
        out.append(row)
    return pd.DataFrame(out)


def table(dirs, metrics=None, by=None) -> str:
    return summarise(load(dirs), metrics, by).to_markdown(index=False)


def numbers(df: pd.DataFrame, metrics=None, by=None) -> pd.DataFrame:
    """The summary as numbers (CSV): per group n, and mean and std of every metric."""
    by = list(by) if by is not None else varying_keys(df)
    metrics = [m for m in (metrics or df.columns) if m in df.columns and m != "run_dir" and not m.startswith(("config/", "choice/"))
               and pd.api.types.is_numeric_dtype(df[m])]
    out = []
    for row, g in _groups(df, by):
        for m in metrics:
            row[f"{m}/mean"], row[f"{m}/std"] = g[m].mean(), g[m].std()
        out.append(row)
    return pd.DataFrame(out)


def latex(summary: pd.DataFrame) -> str:
    """booktabs LaTeX of the Markdown table (± and arrows as math)."""
    tex = summary.astype(str).apply(lambda col: col.str.replace("±", r"$\pm$", regex=False))
    tex.columns = [c.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("_", r"\_")
                   for c in tex.columns]
    tex = tex.apply(lambda col: col.str.replace("_", r"\_", regex=False))
    return tex.to_latex(index=False, escape=False)


def pareto(df: pd.DataFrame, path: str | Path, by=None, x: str = "utility/relative", y: str = "transfer/mean") -> bool:
    """Transfer (the attacker's gain) against utility (the users' service), one point per group.

    The defender's frontier joins the groups no other group beats on both (lower transfer
    and higher utility). Returns False (and writes nothing) when the runs lack either metric."""
    if x not in df.columns or y not in df.columns:
        return False
    nums = numbers(df, [x, y], by)
    nums = nums.dropna(subset=[f"{x}/mean", f"{y}/mean"])
    if nums.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [c for c in nums.columns if c != "n" and "/" not in c]
    labels = [", ".join(str(r[k]) for k in keys) or "all" for _, r in nums.iterrows()]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.errorbar(nums[f"{x}/mean"], nums[f"{y}/mean"], xerr=nums[f"{x}/std"].fillna(0), yerr=nums[f"{y}/std"].fillna(0),
                fmt="o", capsize=3)
    for (_, r), label in zip(nums.iterrows(), labels):
        ax.annotate(label, (r[f"{x}/mean"], r[f"{y}/mean"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = frontier(list(zip(nums[f"{x}/mean"], nums[f"{y}/mean"])))
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray", label="defender's frontier")
    ax.set_xlabel(f"{x} (legitimate users) →")
    ax.set_ylabel(f"{y} (attacker) ↓")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (utility, transfer) points no other point beats on both: higher utility and lower
    transfer. Ordered by falling utility."""
    front, best = [], float("inf")
    for u, t in sorted(points, key=lambda p: (-p[0], p[1])):  # keep each point that lowers the transfer
        if t < best:
            front.append((u, t))
            best = t
    return front


def write(dirs, out: str | Path, metrics=None, by=None) -> list[Path]:
    """FILE.md, FILE.tex, FILE.csv and (when the runs have transfer and utility) FILE.png."""
    out = Path(out)
    df = load(dirs)
    summary = summarise(df, metrics, by)
    written = []
    for suffix, text in ((".md", summary.to_markdown(index=False) + "\n" + failed_section(dirs)), (".tex", latex(summary)),
                         (".csv", numbers(df, metrics, by).to_csv(index=False))):
        path = out.with_suffix(suffix)
        atomic_write(path, text)
        written.append(path)
    png = out.with_suffix(".png")
    if pareto(df, png, by):
        written.append(png)
    return written


def atomic_write(path: Path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="run directories or multirun directories")
    ap.add_argument("--by", nargs="*", default=None, help="config keys to group by (default: those that vary)")
    ap.add_argument("--metrics", nargs="*", default=None)
    ap.add_argument("--out", default=None, help="also write FILE.md, FILE.tex, FILE.csv and the Pareto plot FILE.png")
    args = ap.parse_args(argv)
    # a key is a results column as given (`choice/attacker`) or a config value (`attacker.queries`)
    by = [k if k.startswith(("config/", "choice/")) else f"config/{k}" for k in args.by] if args.by is not None else None
    md = table(args.dirs, args.metrics, by)
    print(md + failed_section(args.dirs))
    if args.out:
        for path in write(args.dirs, args.out, args.metrics, by):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
