"""The one Hydra entry point: `python experiments/run.py [overrides]` (add -m for sweeps).

The only place that reads Hydra's runtime state: it records the chosen config options and
the output directory, then hands a plain config to `sim.run`.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import sim  # noqa: E402  (sets the offline switches before anything imports transformers)
from sim.records import config_hash, write_json  # noqa: E402
import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

GROUPS = ("teacher", "student", "recipe", "attacker", "policy", "counter", "users", "defense", "tasks", "scale", "experiment",
          "logger")


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def check_group_options(argv: list[str]) -> None:
    """`group=option` overrides naming no YAML: one line, before Hydra's multi-line error.

    Read with Hydra's own override grammar, so a sweep (`defense=none,full`), a stack of
    several options (`defense=[rate_limit,cluster]`) and both together are understood."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    def options(value):
        for v in (value if isinstance(value, list) else [value]):
            yield from (options(v) if isinstance(v, list) else [v])

    parser = OverridesParser.create()
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        try:
            override = parser.parse_overrides([arg])[0]
        except OverrideParseException:
            continue  # Hydra names the syntax error itself
        group = override.key_or_group
        if group not in GROUPS or override.is_delete():
            continue
        value = list(override.sweep_iterator()) if override.is_sweep_override() else override.value()
        for option in options(value):
            if option is None or option == "null" or (CONFIGS / group / f"{option}.yaml").exists():
                continue
            known = ", ".join(sorted(p.stem for p in (CONFIGS / group).glob("*.yaml")))
            print(f"error: {group}={option} is not a config option (available: {known})", file=sys.stderr)
            sys.exit(2)


def headline(results: dict) -> float:
    """What the job returns to Hydra's sweeper: transfer/net, NaN where no student was trained
    (an incident replay, `student=none`) or it could not be computed (null)."""
    value = results.get("transfer/net")
    return float("nan") if value is None else float(value)


def stacked_choices(overrides) -> dict[str, str]:
    """Groups given several options at once (`defense=[rate_limit,cluster]`), which Hydra leaves
    out of its runtime choices: recorded as `rate_limit+cluster`, so the report can group by them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group in GROUPS and isinstance(override.value(), list):
            out[override.key_or_group] = "+".join(map(str, override.value()))
    return out


@hydra.main(version_base="1.3", config_path="../configs", config_name="run")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.choices = {**stacked_choices(hc.overrides.task),
                       **{g: hc.runtime.choices.get(g) for g in GROUPS if hc.runtime.choices.get(g) is not None}}
    out = Path(hc.runtime.output_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    key = config_hash(cfg)
    done = out / "results.json"
    if sweep and done.is_file():  # a rerun of the sweep: a job whose results match is not run again
        try:
            previous = json.loads(done.read_text())
        except ValueError:
            print(f"warning: {done} is not valid JSON: the job runs again", file=sys.stderr)
            previous = {}
        if previous.get("config_hash") == key:
            print(f"skipped {out}: results.json exists for this config ({key})")
            return headline(previous)
    try:
        results = sim.run(cfg, out, progress=sys.stderr.isatty())
    except Exception as e:
        if sweep:  # the sweep goes on; the error stays in the job's directory for the report
            write_json(out / "error.json", {"config_hash": key, "error": f"{type(e).__name__}: {e}",
                                            "traceback": traceback.format_exc()})
            print(f"error: job {out} failed: {type(e).__name__}: {e}", file=sys.stderr)
            return float("nan")
        if isinstance(e, ValueError):  # a bad config value: one clear line, no traceback, nothing computed
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    (out / "error.json").unlink(missing_ok=True)  # an earlier failure of this job is fixed
    from experiments.report import table

    print(table([out]))
    files = ", ".join(sorted(p.name + "/" * p.is_dir() for p in out.iterdir() if not p.name.startswith(".")))
    print(f"\nrun directory: {out}\n  {files}")
    return headline(results)


if __name__ == "__main__":
    check_group_options(sys.argv[1:])
    main()
