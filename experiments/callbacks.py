"""Hydra callbacks: when a multirun ends, its table is printed and its report (Markdown,
LaTeX, CSV, Pareto plot) is written into the sweep directory as `report.*`, from the runs'
results.json files."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback


class Report(Callback):
    def __init__(self, name: str = "report"):
        self.name = name

    def on_multirun_end(self, config, **kwargs) -> None:
        from experiments import report

        sweep = Path(config.hydra.sweep.dir)
        if not any(sweep.rglob("results.json")):  # every job failed: nothing to report
            return
        print(f"\n{report.table([sweep])}{report.failed_section([sweep])}\n")
        for path in report.write([sweep], sweep / f"{self.name}.md"):
            print(f"report: {path}")
