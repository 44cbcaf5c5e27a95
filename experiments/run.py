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
from sim.runner import config_hash, write_json  # noqa: E402
import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

GROUPS = ("teacher", "student", "recipe", "attacker", "policy", "counter", "users", "defense", "tasks", "scale", "experiment",
          "logger")


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def check_group_options(argv: list[str]) -> None:
    """`group=option` overrides naming no YAML: one line, before Hydra's multi-line error."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.lstrip("+~") not in GROUPS or value in ("null", ""):
            continue
        group = key.lstrip("+~")
        for option in value.split(","):  # a sweep lists several
            if not (CONFIGS / group / f"{option}.yaml").exists():
                known = ", ".join(sorted(p.stem for p in (CONFIGS / group).glob("*.yaml")))
                print(f"error: {group}={option} is not a config option (available: {known})", file=sys.stderr)
                sys.exit(2)


@hydra.main(version_base="1.3", config_path="../configs", config_name="run")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.choices = {g: hc.runtime.choices.get(g) for g in GROUPS if hc.runtime.choices.get(g) is not None}
    out = Path(hc.runtime.output_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    key = config_hash(cfg)
    done = out / "results.json"
    if sweep and done.is_file():  # a rerun of the sweep: a job whose results match is not run again
        previous = json.loads(done.read_text())
        if previous.get("config_hash") == key:
            print(f"skipped {out}: results.json exists for this config ({key})")
            return float(previous.get("transfer/mean", float("nan")))
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
    return float(results.get("transfer/mean", float("nan")))  # an incident replay trains no student


if __name__ == "__main__":
    check_group_options(sys.argv[1:])
    main()
