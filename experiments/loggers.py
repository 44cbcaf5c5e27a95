"""Weights & Biases as its users expect it, for `logger=wandb`.

A Lightning `WandbLogger` (the student's training curves) whose run is described the way a
W&B project is browsed: the runs of one sweep in one `group` (the sweep directory's name),
`tags` from the config choices (`defense=full`, `attacker=hydra`, ...), a `job_type` and a
readable `name`; every metric of `results.json` in `run.summary` (so runs sort and plot by
it, not as one-point charts); the run's row of the report as a numeric `wandb.Table` (each
metric's value, with its 95% CI half-width in its own column when the row pools seeds).

`WANDB_MODE`, `WANDB_PROJECT` and `WANDB_ENTITY` are honoured (the project sets
`WANDB_MODE=offline` only when the user has not set it). wandb is an optional extra:
`pip install -e '.[wandb]'`.
"""

from __future__ import annotations

import os

from lightning.pytorch.loggers import WandbLogger


class Wandb(WandbLogger):
    def __init__(self, save_dir: str = ".", project: str | None = None, entity: str | None = None,
                 group: str | None = None, tags: list | None = None, job_type: str = "distill",
                 name: str | None = None):
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ValueError("logger=wandb: wandb is not installed (pip install -e '.[wandb]')") from None
        if not isinstance(job_type, str) or not job_type:
            raise ValueError(f"logger.job_type={job_type!r} must be a non-empty string")
        super().__init__(save_dir=save_dir, project=project or os.environ.get("WANDB_PROJECT", "distill-arena"),
                         entity=entity or os.environ.get("WANDB_ENTITY"), group=group, tags=list(tags or []),
                         job_type=job_type, name=name)

    def log_results(self, results: dict) -> None:
        """Every numeric result in the run's summary, and its row of the report as a table."""
        import pandas as pd
        import wandb

        from experiments.report import numbers

        numeric = {k: float(v) for k, v in results.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("config/")}
        self.experiment.summary.update(numeric)
        self.experiment.summary.update({k: v for k, v in results.items() if isinstance(v, str)})
        row = numbers(pd.DataFrame([results]), by=[])
        cols = [c for c in row.columns if not c.endswith("/std")]
        self.experiment.log({"results_table": wandb.Table(dataframe=row[cols].astype(float))})
