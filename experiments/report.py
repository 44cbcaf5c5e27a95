"""Result tables from run directories: `python -m experiments.report DIR... [--out FILE.md]`.

Tables come only from `results.json` files (found recursively, so a Hydra multirun directory
works) and from the run archives `--docs` writes (`docs/data/NAME.jsonl`, one results.json
a line, so a page's runs outlive their directories and new runs add to them); jobs that
recorded an `error.json` instead are listed under the table. Runs are grouped by every config
value that differs between them, except the seeds (or by `--by KEY...`); each cell is the
mean ± the half-width of its 95% confidence interval over the group's seeds (Student's t with
n - 1 degrees of freedom), with n; columns are labelled (`LABELS`) with the direction the
defender wants (↓ lower, ↑ higher; none: context).

A preset's checks are paired tests: two groups are matched run by run on their seed streams
(`seeds/*`: arms that share every stream but the one they vary), and a claim **holds** when the
95% CI of the paired difference lies in the claimed direction (or inside the claimed margin),
**does not hold** when it excludes the claim, and is **inconclusive** otherwise.

`--out FILE.md` also writes FILE.tex (booktabs), FILE.csv (means, stds and n as numbers) and
FILE.png, the Pareto plot of the sweep: transfer against legitimate-user utility, one
labelled point per group, with the defender's frontier (lowest transfer for the utility).
`experiments.callbacks.Report` writes them into a multirun directory when the sweep ends.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
from pathlib import Path

import pandas as pd

# metric -> (column label, the direction the defender wants: ↓ lower, ↑ higher, "" context).
# One table for the Markdown and LaTeX headers and the plot's axes; the CSV keeps the keys.
LABELS = {
    "transfer/net": ("transfer", "↓"), "fidelity": ("fidelity", "↓"), "coverage/kb": ("kb coverage", "↓"),
    "student/acc": ("student acc.", "↓"), "student/private_acc": ("student private acc.", "↓"),
    "student/public_acc": ("student public acc.", ""), "teacher/private_acc": ("teacher private acc.", ""),
    "base/private_acc": ("base private acc.", ""), "utility/relative": ("utility", "↑"),
    "utility/false_ban_rate": ("false bans", "↓"), "detection/precision": ("precision", "↑"),
    "detection/recall": ("recall", "↑"), "detection/ticks_to_first_ban": ("ticks to first ban", "↓"),
    "detection/leaked_before_ban": ("leaked before ban", "↓"), "detection/cluster_ari": ("cluster ARI", "↑"),
    "detection/cluster_purity": ("cluster purity", "↑"), "attacker/queries": ("queries", ""),
    "attacker/accounts": ("accounts", ""), "attacker/harvested": ("harvested", "↓"), "attacker/banned": ("banned", "↑"),
    "attacker/cost_usd": ("cost (USD)", "↑"), "attacker/cost_per_example": ("USD per example", "↑"),
    "attacker/poisoned_fraction": ("poisoned share", "↑"), "watermark/student_z": ("student z", "↑"),
    "watermark/student_p": ("student p", "↓"), "watermark/harvest_z": ("harvest z", "↑"),
    "efficiency/transfer_per_kquery": ("transfer per 1k queries", "↓"),
    "attacker/grading_queries": ("grading queries", ""), "judge/served_agreement": ("judge agreement, attacker", "↓"),
    "judge/user_agreement": ("judge agreement, users", "↑"),
    "detection/fingerprint/false_positive_rate": ("fingerprint FPR", "↓"),
    "watermark/student_green": ("student green share", "↑"),
}


def label(metric: str) -> str:
    """The column label of a metric with the defender's direction (`transfer/<skill>` as
    `transfer: <skill> ↓`; a metric the table does not know keeps its key)."""
    if metric.startswith("transfer/") and metric not in LABELS:
        return f"transfer: {metric.removeprefix('transfer/')} ↓"
    if metric.startswith("utility/lost/"):
        return f"people lost: {metric.removeprefix('utility/lost/').replace('_', ' ')} ↓"
    name, arrow = LABELS.get(metric, (metric, ""))
    return f"{name} {arrow}".strip()


DEFAULT_METRICS = ("transfer/net", "student/public_acc", "fidelity", "coverage/kb", "student/private_acc",
                   "teacher/private_acc", "base/private_acc",
                   "utility/relative", "utility/false_ban_rate", "attacker/queries", "attacker/accounts",
                   "attacker/harvested", "attacker/banned", "attacker/cost_usd", "detection/recall",
                   "detection/leaked_before_ban")
SKIP = ("config/seed", "config/choices.", "config/preset.")
LEVEL = 0.95  # confidence level of every interval
VERDICTS = {True: "holds", False: "does not hold", None: "inconclusive"}
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _records(d: Path):
    """(where, text, archived) of each run under `d`: its results.json files, or the lines of
    an archive. An archive is the only copy of its runs, so one it cannot read stops the report."""
    if d.suffix == ".jsonl":
        try:
            text = d.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"error: run archive {d}: {e}") from None
        for i, line in enumerate(text.split("\n"), 1):
            if line.strip():
                yield f"{d}:{i}", line, True
        return
    for f in [d] if d.name == "results.json" else sorted(d.rglob("results.json")):
        yield str(f), f.read_bytes(), False  # json.loads decodes, so a bad byte is a corrupt record


def load(dirs) -> pd.DataFrame:
    """Every results.json under `dirs` (or line of a `.jsonl` archive), one row each (a metric
    that is null, or a key a run lacks, as NaN). A results.json that is not valid JSON is named
    in a warning and skipped (a resumed sweep reruns its job); an archive line that is not stops
    the report. Two runs of the same config (`config_hash`) count once: the first named, except
    that a run directory replaces an archived run (a rerun after a fix is the one to keep)."""
    import warnings

    rows, seen = [], {}  # seen: config_hash -> (index in rows, where, archived)
    for d in dirs:
        for where, text, archived in _records(Path(d)):
            try:
                r = json.loads(text)
                if not isinstance(r, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:  # UnicodeDecodeError is a ValueError
                if archived:
                    raise SystemExit(f"error: {where}: not a run's results ({e})") from None
                warnings.warn(f"{where}: corrupt results.json skipped ({e})", stacklevel=2)
                continue
            record = json.dumps(r, sort_keys=True)  # what an archive keeps of the run
            r["run_dir"], r["run_record"] = where if archived else str(Path(where).parent), record
            key = r.get("config_hash")
            if key is not None and key in seen:
                i, first, first_archived = seen[key]
                if first_archived and not archived:
                    warnings.warn(f"{where} replaces the archived run {first} (config_hash {key})", stacklevel=2)
                    rows[i], seen[key] = r, (i, where, False)
                else:
                    warnings.warn(f"{where}: the same config as {first} (config_hash {key}); counted once", stacklevel=2)
                continue
            if key is not None:
                seen[key] = (len(rows), where, archived)
            rows.append(r)
    if not rows:
        raise SystemExit(f"no results.json under {', '.join(map(str, dirs))}")
    df = pd.DataFrame(rows)
    for c in df.columns[df.dtypes == object]:
        df[c] = df[c].where(df[c].notna(), math.nan)  # null and absent alike, whichever way the runs came
        values = df[c].dropna()
        if values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
            df[c] = pd.to_numeric(df[c].astype(float))  # a metric null in some runs (or all) is a number column
    if "utility/lost/total" in df:
        # a run writes only the causes it met: one that lost people nothing is 0 there, not missing
        # (a run without the total predates the breakdown and stays NaN)
        has = df["utility/lost/total"].notna()
        for c in df.columns[df.columns.str.startswith("utility/lost/")]:
            df.loc[has, c] = df.loc[has, c].fillna(0.0)
    return df


def failures(dirs) -> list[tuple[str, str]]:
    """(job directory, why) of every job without results: one that recorded an error.json
    (an exception, or interrupted by Ctrl-C or SIGTERM), and one that left only Hydra's
    `.hydra/` behind (killed by SIGKILL or the OOM killer, or still running)."""
    out = []
    for d in map(Path, dirs):
        for job in sorted({f.parent.parent for f in d.rglob(".hydra/config.yaml")}) if d.is_dir() else []:
            if (job / "results.json").exists():
                continue
            try:
                why = json.loads((job / "error.json").read_text()).get("error", "?")
            except (OSError, ValueError):
                why = "no results.json and no error.json: killed (SIGKILL, out of memory) or still running"
            out.append((str(job), why))
    return out


def failed_section(dirs) -> str:
    failed = failures(dirs)
    return "" if not failed else "\n**Failed jobs** (rerun the sweep to run only these):\n\n" + "".join(
        f"- `{d}`: {e}\n" for d, e in failed)


# where each config group's choice lands in the config (its package)
PACKAGES = {"recipe": "student.recipe", "policy": "attacker.policy", "counter": "attacker.counter"}


def varying_keys(df: pd.DataFrame) -> list[str]:
    """The config choices and values that differ between runs: a group choice (`choice/defense`)
    stands for the values under its package that it alone explains (constant within each
    choice), so a none-vs-full sweep groups by `defense`, not by every knob of the stack."""
    def varies(col):
        return df[col].map(str).nunique() > 1  # NaN (a key some runs lack) counts as a value

    choices = [c for c in df.columns if c.startswith("choice/") and c != "choice/experiment" and varies(c)]
    # seeds, including a component's own `${seed}` (defense.watermark.seed), are what a mean is over
    keys = [c for c in df.columns if c.startswith("config/") and not c.startswith(SKIP) and not c.endswith(".seed")
            and varies(c)]

    labels = df[choices].astype(str) if choices else None

    def explained(key):
        # under a varying choice's package, and set by the choices together: `defense.fingerprint.campaigns`
        # is `calibration`'s, read through `defense=fingerprint`
        for c in choices:
            group = c.removeprefix("choice/")
            package = PACKAGES.get(group, group)
            # or under a copy of that package inside another component (the judge policy's working
            # student carries `student.recipe` as `attacker.policy.student.recipe`)
            if f".{package}." in f".{key.removeprefix('config/')}." and \
                    df.groupby([labels[k] for k in choices])[key].agg(lambda v: v.map(str).nunique()).max() == 1:
                return True
        return False

    def copied(key):
        # a component's copy of another varying value, equal wherever it is set: the fingerprint's
        # calibration population interpolates `users.tenure_days` as `defense.fingerprint.users.tenure_days`
        k = key.removeprefix("config/")
        return any(o != key and k.endswith("." + o.removeprefix("config/"))
                   and (df[key].isna() | (df[key] == df[o]) | (df[key].map(str) == df[o].map(str))).all() for o in keys)

    return choices + [k for k in keys if not explained(k) and not copied(k)]


def ci(values) -> tuple[float, float, int]:
    """(mean, half-width of its `LEVEL` confidence interval, n) of a sample: Student's t with
    n - 1 degrees of freedom (the half-width is NaN for n < 2)."""
    from scipy import stats

    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    if n < 2:
        return float(v.mean()), math.nan, 1
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return float(v.mean()), half, n


def _decimals(m: float) -> int:
    """Three decimals for shares and accuracies, fewer as numbers grow (counts, dollars), and
    never a power of ten: 0.377, 36.3, 1453."""
    return 3 if abs(m) < 10 else 1 if abs(m) < 100 else 0


def _fmt(values: pd.Series) -> str:
    m, half, n = ci(values)
    if n == 0:
        return "–"
    d = _decimals(m)
    if n == 1 or math.isclose(half, 0.0, abs_tol=1e-12):
        return f"{m:.{d}f}"
    return f"{m:.{d}f} ± {half:.{d}f}"


def _groups(df: pd.DataFrame, by: list[str]):
    """(row of the group's key values and n, the group's runs) per group."""
    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row = {k.removeprefix("config/").removeprefix("choice/"): v for k, v in zip(by, key)}
        row["n"] = len(g)
        yield row, g


def summarise(df: pd.DataFrame, metrics=None, by=None) -> pd.DataFrame:
    skills = sorted(c for c in df.columns if c.startswith("transfer/") and c != "transfer/net")
    metrics = list(metrics or [*DEFAULT_METRICS[:1], *skills, *DEFAULT_METRICS[1:]])
    metrics = [m for m in metrics if m in df.columns]
    by = list(by) if by is not None else varying_keys(df)
    # a metric that only echoes a grouping key (attacker/queries when sweeping the budget) is noise
    echoed = {k.removeprefix("config/").replace(".", "/") for k in by}
    metrics = [m for m in metrics if m not in echoed]
    out = []
    for row, g in _groups(df, by):
        for m in metrics:
            row[label(m)] = _fmt(g[m])
        out.append(row)
    return pd.DataFrame(out)


def table(dirs, metrics=None, by=None) -> str:
    return summarise(load(dirs), metrics, by).to_markdown(index=False)


def numbers(df: pd.DataFrame, metrics=None, by=None) -> pd.DataFrame:
    """The summary as numbers (CSV): per group n, and mean, std and 95% CI half-width of every metric."""
    by = list(by) if by is not None else varying_keys(df)
    metrics = [m for m in (metrics or df.columns) if m in df.columns and m != "run_dir" and not m.startswith(("config/", "choice/"))
               and pd.api.types.is_numeric_dtype(df[m])]
    out = []
    for row, g in _groups(df, by):
        for m in metrics:
            row[f"{m}/mean"], row[f"{m}/std"] = g[m].mean(), g[m].std()
            row[f"{m}/ci95"] = ci(g[m])[1]
        out.append(row)
    return pd.DataFrame(out)


def latex(summary: pd.DataFrame) -> str:
    """booktabs LaTeX of the Markdown table: ± and arrows as math, numbers right-aligned, the
    best group of each column with a direction in bold, a caption with n and the CI method."""
    import re

    def mean(cell) -> float:
        m = re.match(r"\s*(-?[0-9.]+(?:e[-+]?\d+)?)", str(cell))
        return float(m.group(1)) if m else math.nan

    tex = summary.astype(str).copy()
    for col in summary.columns:
        arrow = col.strip()[-1:] if col.strip()[-1:] in "↑↓" else ""
        values = summary[col].map(mean)
        if arrow and values.notna().sum() > 1 and values.nunique() > 1:
            best = values.min() if arrow == "↓" else values.max()
            tex[col] = [rf"\textbf{{{c}}}" if v == best else c for c, v in zip(tex[col], values)]
    tex = tex.apply(lambda col: col.str.replace("±", r"$\pm$", regex=False).str.replace("_", r"\_", regex=False))
    tex.columns = [c.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("_", r"\_")
                   for c in tex.columns]
    n = sorted(set(summary["n"].astype(int))) if "n" in summary else []
    caption = (f"Mean $\\pm$ half-width of the 95\\% confidence interval over n = {', '.join(map(str, n)) or '?'} "
               "seeds (Student's t, n $-$ 1 degrees of freedom); $\\downarrow$/$\\uparrow$: the direction the "
               "defender wants; the best group of each such column in bold.")
    align = "".join("r" if summary[c].map(mean).notna().any() else "l" for c in summary.columns)
    return tex.to_latex(index=False, escape=False, column_format=align, caption=caption, position="htbp")


def pareto(df: pd.DataFrame, path: str | Path, by=None, x: str = "utility/relative", y: str = "transfer/net") -> bool:
    """Transfer (the attacker's gain) against utility (the users' service), one point per group
    with its 95% CIs as error bars: coloured by the first grouping key, marked by the second.
    A few points are labelled beside them; more get a legend, so labels never collide.

    The defender's frontier joins the groups no other group beats on both (lower transfer
    and higher utility). Returns False, with a warning naming what is missing, when no plot
    can be drawn (and writes nothing)."""
    import warnings

    missing = [m for m in (x, y) if m not in df.columns or df[m].isna().all()]
    if missing:
        warnings.warn(f"no plot {Path(path).name}: the runs have no {' and no '.join(missing)}", stacklevel=2)
        return False
    nums = numbers(df, [x, y], by)
    nums = nums.dropna(subset=[f"{x}/mean", f"{y}/mean"])
    if nums.empty:
        warnings.warn(f"no plot {Path(path).name}: no group has both {x} and {y}", stacklevel=2)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    keys = [c for c in nums.columns if c != "n" and "/" not in c]
    colour_key, marker_key = (keys + [None, None])[:2]
    colours = {v: plt.cm.tab10(i % 10) for i, v in enumerate(dict.fromkeys(nums[colour_key]))} if colour_key else {}
    shapes = "osD^vPX<>*"
    markers = {v: shapes[i % len(shapes)] for i, v in enumerate(dict.fromkeys(nums[marker_key]))} if marker_key else {}
    labels = [", ".join(f"{k}={r[k]}" for k in keys) or "all" for _, r in nums.iterrows()]
    annotate = len(nums) <= 8 and len(keys) <= 1
    every = len(keys) > 2  # more groupings than colour and marker: each group its own, named in the legend
    fig, ax = plt.subplots(figsize=(7, 5) if annotate else (9, 5))
    styles = [(plt.cm.tab10(i % 10), shapes[i // 10 % len(shapes)]) if every else
              (colours.get(r[colour_key], "C0") if colour_key else "C0", markers.get(r[marker_key], "o") if marker_key else "o")
              for i, (_, r) in enumerate(nums.iterrows())]  # (colour, marker) of each group
    for (_, r), (colour, marker) in zip(nums.iterrows(), styles):
        ax.errorbar(r[f"{x}/mean"], r[f"{y}/mean"], xerr=0 if pd.isna(r[f"{x}/ci95"]) else r[f"{x}/ci95"],
                    yerr=0 if pd.isna(r[f"{y}/ci95"]) else r[f"{y}/ci95"], capsize=3, linestyle="none",
                    marker=marker, color=colour)
    if annotate:
        mid = (nums[f"{x}/mean"].min() + nums[f"{x}/mean"].max()) / 2
        for (_, r), text in zip(nums.iterrows(), labels):
            right = r[f"{x}/mean"] > mid  # labels of right-hand points go left, inside the frame
            ax.annotate(text, (r[f"{x}/mean"], r[f"{y}/mean"]), textcoords="offset points",
                        xytext=(-4 if right else 4, 4), ha="right" if right else "left", fontsize=7)
    front = frontier(list(zip(nums[f"{x}/mean"], nums[f"{y}/mean"])))
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray")
    handles = [Line2D([], [], linestyle="--", color="gray", label="defender's frontier")]
    if every:
        handles += [Line2D([], [], linestyle="none", marker=m, color=c, label=text) for (c, m), text in zip(styles, labels)]
    elif not annotate:
        handles += [Line2D([], [], linestyle="none", marker="o", color=c, label=f"{colour_key}={v}")
                    for v, c in colours.items()]
        handles += [Line2D([], [], linestyle="none", marker=m, color="black", label=f"{marker_key}={v}")
                    for v, m in markers.items()]
    ax.set_xlabel(f"{label(x)}\n(legitimate service kept, as a fraction of the undefended service)")
    ax.set_ylabel(f"{label(y)}\n(share of the teacher's private advantage the student closed)")
    ax.margins(x=0.2, y=0.15)  # room for the point labels
    if annotate:
        ax.legend(handles=handles, fontsize=7, loc="best")
    else:  # beside the axes, where it covers no point
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def curves(df: pd.DataFrame, path: str | Path, along: str, metrics: list[str], by: str | None = None,
           where: dict | None = None) -> bool:
    """Each metric against the config value `along` (one panel a metric), one line per value of
    `by`, over the runs `where` selects: the mean at each point with its 95% CI as error bars.
    Returns False, with a warning naming what is missing, when no curve can be drawn."""
    import warnings

    df = _select(df, where or {})
    cols = [_column(df, k) for k in (along, *([by] if by else []))]
    missing = [m for m in (*metrics, *cols) if m not in df.columns or df[m].isna().all()]
    if df.empty or missing:
        warnings.warn(f"no plot {Path(path).name}: the runs have no {' and no '.join(missing) or 'point selected'}",
                      stacklevel=2)
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, line = cols[0], cols[1] if by else None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for i, (key, g) in enumerate(df.groupby(line, sort=True) if line else [(None, df)]):
            points = sorted((v, *ci(gx[m])[:2]) for v, gx in g.groupby(x))
            ax.errorbar([p[0] for p in points], [p[1] for p in points],
                        yerr=[0 if math.isnan(p[2]) else p[2] for p in points], capsize=3, marker="o",
                        color=plt.cm.tab10(i % 10), label=None if key is None else f"{by}={key}")
        ax.set_xlabel(along)
        ax.set_ylabel(label(m))
        if line:
            ax.legend(fontsize=7)
    fig.suptitle(_name(where or {}), fontsize=8)
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
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a page from the rest of a shared group
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- preset pages ------------------------------------------------------------------------
# A preset (configs/experiment/NAME.yaml) states its claim, its source and how to check it:
#   preset: {claim: ..., source: ..., command: ..., check: [CHECK, ...], curve: CURVE}
# where CURVE (optional) plots metrics along a swept value, beside the table:
#   {along: KEY, metrics: [M, ...], by: KEY, where: SEL}   one panel a metric, one line per `by` value
# where a CHECK compares groups of runs, each group a {key: value} selection (`key` a config
# group choice like `defense`, or a config value like `attacker.queries`):
#   {metric: M, higher: SEL, than: SEL}       mean M of the first group above the second's
#   {metric: M, close: SEL, to: SEL, within: d}   the two means within d of each other
#   {metric: M, where: SEL, below: v}          the group's mean M below v (or `above: v`)
#   {drop: M1, vs: M2, from: SEL, to: SEL}     M1 falls, and more than M2, from one group to the other
#   {metric: M, against: X, below: SEL, curve: SEL[, tolerance: t]}   at equal X, the group's M lies
#                                              under the other group's M(X) curve of the same seed (linear
#                                              interpolation; points up to t outside the curve's X range
#                                              count at its end)
#   {metric: M, recovers: SEL, lost: SEL, from: SEL}   the first group wins back more than half of
#                                              what the `lost` group lost against the `from` group


def _select(df: pd.DataFrame, sel: dict) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    for k, v in (sel or {}).items():
        col = f"choice/{k}" if f"choice/{k}" in df.columns else f"config/{k}"
        if col not in df.columns:  # no run has this key: an empty group, the check cannot tell
            return df.iloc[:0]
        keep &= _equals(df[col], v)
    return df[keep]


def _equals(col: pd.Series, v) -> pd.Series:
    """Which values of a results column are `v`: as text, or as numbers (a column with missing
    values holds 40 as 40.0)."""
    same = col.astype(str) == str(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return same
    return same | (pd.to_numeric(col, errors="coerce") == v)


def _name(sel: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sel.items()) or "all runs"


def paired(df: pd.DataFrame, a: dict, b: dict, metric: str) -> pd.Series:
    """Per seed, the metric of group `a` minus that of group `b`: runs matched on every seed
    stream (`seeds/*`, or the run's `seed`), so each difference shares all the randomness the
    two arms do not vary."""
    both = pairs(df, a, b, metric)
    return both["a"] - both["b"]


def pairs(df: pd.DataFrame, a: dict, b: dict, metric: str) -> pd.DataFrame:
    """The matched runs of `paired`: one row per pair, the metric of `a` and of `b`."""
    both = matched(df, [a, b], metric)
    return pd.DataFrame({"a": both[0] if len(both) else pd.Series(dtype=float),
                         "b": both[1] if len(both) else pd.Series(dtype=float)})


def matched(df: pd.DataFrame, sels: list[dict], metric: str, within: tuple[str, ...] = ()) -> pd.DataFrame:
    """The runs of several groups matched on every seed stream (`seeds/*`, or the run's `seed`)
    and on every other key the sweep varies that no selection fixes: one row per match, the
    metric of group i in column i. With `within` (more columns to keep), a group may hold several
    runs of a match (a curve swept along a key): the rows are then runs, with their `group`, the
    match's `key`, the metric and the `within` columns."""
    seeds = [c for c in df.columns if c.startswith("seeds/")] or ["seed"]
    # every other key the sweep varies that neither selection fixes is matched too (a budget
    # check across recipes pairs answer with answer and kd with kd, never across)
    fixed = {c for sel in sels for k in sel for c in (f"choice/{k}", f"config/{k}")}
    groups = [_select(df, sel).dropna(subset=[c for c in seeds if c in df.columns]) for sel in sels]
    if metric not in df.columns or any(g.empty or not set(seeds) <= set(g.columns) for g in groups):
        return pd.DataFrame(columns=["group", "key", "run", metric, *within] if within else list(range(len(sels))))

    def values(g, k):
        return g[k].astype(str).unique() if k in g else []

    def apart(k):
        # a key with one value in each arm, a different one in each, goes with what the selections
        # name (policy=judge brings its recipe): it tells the arms apart, it does not pair them
        one = [values(g, k) for g in groups]
        return all(len(v) == 1 for v in one) and len({v[0] for v in one}) > 1

    # a key swept inside one group and fixed in another (the curve's own axis) is what that group
    # is made of; a key every group sweeps (two recipes, a curve each) is matched like a seed
    inside = {k for k in varying_keys(df) if within and any(len(values(g, k)) > 1 for g in groups)
              and not all(len(values(g, k)) > 1 for g in groups)}
    keys = seeds + [k for k in varying_keys(df) if k not in fixed and k not in inside and not apart(k)]
    cols = list(dict.fromkeys(keys + sorted(inside) + [metric, *within]))
    groups = [g[[k for k in cols if k in g]].astype({k: str for k in keys}) for g in groups]
    if any(g.duplicated([k for k in keys + sorted(inside) if k in g]).any() for g in groups):
        raise ValueError(f"paired comparison of {' and '.join(_name(s) for s in sels)}: two runs share the seeds "
                         f"and settings {keys}; pass the sweep directories once each")
    if within:  # `run`: the run's row, so a run in two groups can be told from two runs
        out = pd.concat([g.assign(group=i, run=g.index) for i, g in enumerate(groups)], ignore_index=True)
        out["key"] = out[keys].agg("|".join, axis=1)
        for k in (metric, *within):
            out[k] = pd.to_numeric(out[k], errors="coerce") if k in out else float("nan")
        return out[["group", "key", "run", metric, *within]]
    both = groups[0].rename(columns={metric: 0})
    for i, g in enumerate(groups[1:], 1):
        both = both.merge(g.rename(columns={metric: i}), on=keys)
    return pd.DataFrame({i: pd.to_numeric(both[i], errors="coerce") for i in range(len(sels))})


def _interval(m: float, half: float, n: int) -> str:
    return f"{m:+.3f}, 95% CI [{m - half:+.3f}, {m + half:+.3f}], n = {n}" if n > 1 else f"{m:+.3f}, n = {n}"


def verdict(df: pd.DataFrame, check: dict) -> tuple[bool | None, str]:
    """(holds: True, does not hold: False, inconclusive: None; one line with the numbers) for
    one CHECK, decided by a 95% CI: of the paired difference (`higher`, `close`), of the paired
    difference in differences (`drop`), of the paired contrast `recovers` - (`from` + `lost`) / 2
    (`recovers`), of each seed's mean distance from its own curve (`against`), of the group's
    mean (`where`)."""
    c = dict(check)
    if "higher" in c or "close" in c:
        a, b = (c["higher"], c["than"]) if "higher" in c else (c["close"], c["to"])
        both = pairs(df, a, b, c["metric"])  # the means printed are those of the paired runs
        m, half, n = ci(both["a"] - both["b"])
        text = (f"{c['metric']}: {both['a'].mean():.3f} ({_name(a)}) vs {both['b'].mean():.3f} "
                f"({_name(b)}); paired difference {_interval(m, half, n)}")
        if n < 2 or half != half:
            return None, text + " — too few paired runs for an interval"
        lo, hi = m - half, m + half
        if "higher" in c:
            return (True if lo > 0 else False if hi <= 0 else None), text
        w = float(c["within"])
        text += f" (claim: within ±{w})"
        return (True if -w <= lo and hi <= w else False if lo > w or hi < -w else None), text
    if "drop" in c:
        # per seed, how far M1 falls, and by how much more than M2 (a difference in differences);
        # both come from the same pairing of the same runs, so they line up row by row
        p1, p2 = pairs(df, c["from"], c["to"], c["drop"]), pairs(df, c["from"], c["to"], c["vs"])
        (a0, a1), (b0, b1) = (p1["a"].mean(), p1["b"].mean()), (p2["a"].mean(), p2["b"].mean())
        fall = p1["a"] - p1["b"]
        (m1, h1, n), (m2, h2, _) = ci(fall), ci(fall - (p2["a"] - p2["b"]))
        text = (f"from {_name(c['from'])} to {_name(c['to'])}, {c['drop']} goes {a0:.3f} → {a1:.3f} ({a1 - a0:+.3f}) "
                f"and {c['vs']} {b0:.3f} → {b1:.3f} ({b1 - b0:+.3f}); paired fall of {c['drop']} "
                f"{_interval(m1, h1, n)}, and beyond {c['vs']}'s {_interval(m2, h2, n)}")
        if n < 2 or h1 != h1 or h2 != h2:
            return None, text + " — too few paired runs for an interval"
        if m1 - h1 > 0 and m2 - h2 > 0:  # M1 falls, and by more than M2
            return True, text
        return (False if m1 + h1 <= 0 or m2 + h2 <= 0 else None), text
    if "recovers" in c:
        # recovering more than half the loss, got - lost > (full - lost) / 2, is got - (full + lost) / 2
        # > 0: a linear contrast, decided per matched seed like a paired difference
        runs = matched(df, [c["recovers"], c["lost"], c["from"]], c["metric"]).dropna()
        got, lost, full = runs[0], runs[1], runs[2]
        m, half, n = ci(got - (full + lost) / 2)
        text = (f"{c['metric']}: {full.mean():.3f} ({_name(c['from'])}), {lost.mean():.3f} ({_name(c['lost'])}), "
                f"{got.mean():.3f} ({_name(c['recovers'])})")
        if not len(runs):
            return None, text + " — no matched runs"
        if not full.mean() > lost.mean():  # nothing was lost: nothing to recover
            return None, text + f": the `{_name(c['lost'])}` runs lost nothing, so there is nothing to recover"
        text += (f": {(got.mean() - lost.mean()) / (full.mean() - lost.mean()):.0%} of the loss recovered; "
                 f"paired {_name(c['recovers'])} minus the loss's midpoint {_interval(m, half, n)} (claim: above 0, "
                 "more than half recovered)")
        if n < 2 or half != half:
            return None, text + " — too few matched runs for an interval"
        return (True if m - half > 0 else False if m + half <= 0 else None), text
    if "against" in c:
        import numpy as np

        # per matched seed: the points' mean distance above that seed's own curve (linear
        # interpolation), so the curve and the points share every seed stream
        runs = matched(df, [c["below"], c["curve"]], c["metric"], within=(c["against"],))
        runs = runs.rename(columns={c["against"]: "x"})
        tol = float(c.get("tolerance", 0.0))  # how far outside the curve's x range still counts as equal
        gaps, used = [], 0
        for _, g in runs.groupby("key"):
            curve = g[g["group"] == 1].dropna().sort_values("x")
            # a run on the curve itself (λ = 0, greedy) is no point against it
            pts = g[(g["group"] == 0) & ~g["run"].isin(curve["run"])].dropna()
            inside = pts[(pts["x"] >= curve["x"].min() - tol) & (pts["x"] <= curve["x"].max() + tol)]
            if len(curve) and len(inside):
                used += len(inside)
                gaps.append(float(np.mean(inside[c["metric"]] - np.interp(inside["x"], curve["x"], curve[c["metric"]]))))
        m, half, n = ci(gaps)
        text = (f"{_name(c['below'])} against the {_name(c['curve'])} curve of {c['metric']} over {c['against']}, "
                f"per seed the mean distance above it ({used} points in its range): {_interval(m, half, n)} "
                "(claim: below 0)")
        if n < 2 or half != half:
            return None, text + " — too few matched seeds for an interval"
        return (True if m + half < 0 else False if m - half >= 0 else None), text
    g = _select(df, c.get("where", {}))
    m, half, n = ci(g[c["metric"]] if c["metric"] in g else [])
    bound = f"below {c['below']}" if "below" in c else f"above {c['above']}"
    text = (f"{c['metric']} ({_name(c.get('where', {}))}): {m:.3g}"
            + (f", 95% CI [{m - half:.3g}, {m + half:.3g}], n = {n}" if n > 1 else f", n = {n}")
            + f" (claim: {bound})")
    if n < 2 or half != half:
        return None, text + " — too few runs for an interval"
    lo, hi = m - half, m + half
    if "below" in c:
        return (True if hi < c["below"] else False if lo >= c["below"] else None), text
    return (True if lo > c["above"] else False if hi <= c["above"] else None), text


def preset_page(name: str, df: pd.DataFrame, png: str | None, metrics=None, by=None, curve: str | None = None) -> str:
    """The docs page of a preset, from its YAML's `preset` node and its runs (never by hand)."""
    from omegaconf import OmegaConf

    spec = OmegaConf.to_container(OmegaConf.load(CONFIGS / "experiment" / f"{name}.yaml")).get("preset") or {}
    checks = [verdict(df, c) for c in spec.get("check", [])]
    scales = ", ".join(sorted(df.get("config/scale_name", pd.Series(["?"])).astype(str).unique()))
    commits = ", ".join(sorted({str(c)[:8] for c in df.get("git/commit", [])}))
    # the teacher decides every number: a page measured on an earlier shipped teacher says so
    teachers = ", ".join(sorted({str(c)[:8] for c in df.get("teacher/hash", pd.Series(dtype=str)).dropna()})) or "?"
    lines = [f"# `experiment={name}`", "", f"**Claim.** {spec.get('claim', '(no claim stated)')}", "",
             f"**Source.** {spec.get('source', '–')}", "", "**Command.**", "", "```",
             *(spec.get("command") or [f"python experiments/run.py -m experiment={name}"]),
             f"python -m experiments.report docs/data/{name}.jsonl <new sweep directories> --docs docs", "```", "",
             f"(`docs/data/{name}.jsonl` holds these runs' results, one a line.)", "",
             f"**Result** ({len(df)} runs at scale={scales}, commit {commits}, teacher {teachers}; "
             "each cell the mean ± the half-width of its 95% confidence interval over seeds, Student's t):", "",
             summarise(df, metrics or spec.get("metrics"), by).to_markdown(index=False), ""]
    if png:
        lines += [f"![Pareto plot: transfer against utility]({png})", ""]
    if curve:
        c = spec["curve"]
        lines += [f"![{', '.join(label(m) for m in c['metrics'])} against {c['along']}]({curve})", ""]
    lines += ["**Does the claim hold here?**", ""]
    for held, text in checks:
        lines.append(f"- **{VERDICTS[held]}**: {text}")
    if not checks:
        lines.append("- (the preset states no check)")
    lines += ["", "_Generated by `python -m experiments.report --docs` from the runs' results.json; do not edit._", ""]
    return "\n".join(lines)


def write_docs(dirs, docs: str | Path, metrics=None, by=None) -> list[Path]:
    """One page (and Pareto plot) per preset found among the runs (`choice/experiment`)."""
    from omegaconf import OmegaConf

    docs = Path(docs)
    df = load(dirs)
    if "choice/experiment" not in df.columns:
        raise SystemExit("these runs name no experiment preset (choice/experiment)")
    written = []
    for name, g in df.groupby("choice/experiment"):
        spec = CONFIGS / "experiment" / f"{name}.yaml"
        if not spec.exists() or not OmegaConf.load(spec).get("preset"):
            continue  # an experiment without a stated claim has no page
        png = docs / f"{name}.png"
        docs.mkdir(parents=True, exist_ok=True)
        has_png = pareto(g, png, by)
        # a preset's `curve`: metrics along a swept value (the detection preset's mixing sweep)
        c = OmegaConf.to_container(OmegaConf.load(spec)).get("preset", {}).get("curve")
        curve = docs / f"{name}_curve.png"
        has_curve = bool(c) and curves(g, curve, c["along"], c["metrics"], c.get("by"), c.get("where"))
        if not has_curve:
            curve.unlink(missing_ok=True)  # a page never shows a curve of other runs
        # the page's runs, kept beside it (first, so a page never outlives its runs): a later
        # sweep adds to them without rerunning these
        archive = docs / "data" / f"{name}.jsonl"
        atomic_write(archive, archive_lines(g))
        page = docs / f"{name}.md"
        atomic_write(page, preset_page(str(name), g, png.name if has_png else None, metrics, by,
                                       curve.name if has_curve else None))
        written += [page, archive] + ([png] if has_png else []) + ([curve] if has_curve else [])
    return written


def archive_lines(df: pd.DataFrame) -> str:
    """The runs' results.json, one a line, as `load` read them."""
    return "".join(r + "\n" for r in df["run_record"])


def _column(df: pd.DataFrame, key: str) -> str:
    """The results column of a key as the table shows it (`defense` -> `choice/defense`,
    `attacker.queries` -> `config/attacker.queries`), or the key itself when no run has it."""
    return next((c for c in (key, f"choice/{key}", f"config/{key}") if c in df.columns), key)


def resolve_key(df: pd.DataFrame, key: str) -> str:
    """A grouping key as the table shows it (`defense`, `attacker.queries`) or as a results
    column (`choice/defense`, `config/attacker.queries`) -> the column; else an error naming
    the nearest."""
    if _column(df, key) in df.columns:
        return _column(df, key)
    shown = sorted({c.removeprefix("choice/").removeprefix("config/") for c in df.columns
                    if c.startswith(("choice/", "config/"))})
    near = difflib.get_close_matches(key, shown, n=1)
    raise SystemExit(f"error: --by {key}: not a config choice or value of these runs"
                     + (f" (did you mean {near[0]}?)" if near else ""))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="run directories, multirun directories or run archives (docs/data/NAME.jsonl)")
    ap.add_argument("--by", nargs="*", default=None, help="config keys to group by (default: those that vary)")
    ap.add_argument("--metrics", nargs="*", default=None)
    ap.add_argument("--out", default=None, help="also write FILE.md, FILE.tex, FILE.csv and the Pareto plot FILE.png")
    ap.add_argument("--docs", default=None, help="write each preset's page DOCS/NAME.md (and NAME.png) from the runs, and their archive DOCS/data/NAME.jsonl")
    args = ap.parse_args(argv)
    import warnings

    warnings.formatwarning = lambda message, *a, **k: f"warning: {message}\n"  # one line, not the source line
    df = load(args.dirs)
    by = [resolve_key(df, k) for k in args.by] if args.by is not None else None
    for m in args.metrics or []:
        if m not in df.columns:
            near = difflib.get_close_matches(m, [c for c in df.columns if not c.startswith(("config/", "choice/"))], n=1)
            raise SystemExit(f"error: --metrics {m}: no run has this metric" + (f" (did you mean {near[0]}?)" if near else ""))
    md = table(args.dirs, args.metrics, by)
    print(md + failed_section(args.dirs))
    if args.out:
        for path in write(args.dirs, args.out, args.metrics, by):
            print(f"wrote {path}")
    if args.docs:
        for path in write_docs(args.dirs, args.docs, args.metrics, by):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
