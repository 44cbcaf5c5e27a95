"""The one Hydra entry point: `python experiments/run.py [overrides]` (add -m for sweeps).

The only place that reads Hydra's runtime state: it records the chosen config options and
the output directory, then hands a plain config to `sim.run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import sim  # noqa: E402  (sets the offline switches before anything imports transformers)
import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
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
    try:
        results = sim.run(cfg, out, progress=sys.stderr.isatty())
    except ValueError as e:  # a bad config value: one clear line, no traceback, nothing computed
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from experiments.report import table

    print(table([out]))
    files = ", ".join(sorted(p.name + "/" * p.is_dir() for p in out.iterdir() if not p.name.startswith(".")))
    print(f"\nrun directory: {out}\n  {files}")
    return float(results["transfer/mean"])


if __name__ == "__main__":
    check_group_options(sys.argv[1:])
    main()
