"""Hydra callbacks: when a multirun ends, its table is printed and its report (Markdown,
LaTeX, CSV, Pareto plot) is written into the sweep directory as `report.*`, from the runs'
results.json files. A preset's sweep prints its own metrics and the verdict of each of its
claims (paired, with the 95% CI of the difference). A sweep with a failed job exits with
status 1 after its report, naming the failed jobs."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.experimental.callback import Callback


class Report(Callback):
    def __init__(self, name: str = "report"):
        self.name = name

    def on_multirun_end(self, config, **kwargs) -> None:
        from experiments import report

        sweep = Path(config.hydra.sweep.dir)
        try:
            if any(sweep.rglob("results.json")):  # else every job failed: nothing to tabulate
                self.report(config, sweep)
        finally:
            failed = report.failures([sweep])
            if failed:  # the sweep as a whole failed: a scheduler or script must be able to tell
                print(f"error: {len(failed)} job(s) of the sweep failed (rerun it to run only these):", file=sys.stderr)
                for d, e in failed:
                    print(f"  {d}: {e}", file=sys.stderr)
                sys.exit(1)

    def report(self, config, sweep: Path) -> None:
        from omegaconf import OmegaConf

        from experiments import report

        metrics = OmegaConf.select(config, "preset.metrics")
        metrics = list(metrics) if metrics else None
        print(f"\n{report.table([sweep], metrics)}{report.failed_section([sweep])}\n")
        checks = OmegaConf.select(config, "preset.check")
        if checks:
            df = report.load([sweep])
            for check in OmegaConf.to_container(checks):
                held, text = report.verdict(df, check)
                print(f"{report.VERDICTS[held]}: {text}")
            print()
        for path in report.write([sweep], sweep / f"{self.name}.md", metrics):
            print(f"report: {path}")
