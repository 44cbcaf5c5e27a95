"""Training progress as plain lines: one every `every` steps with the step, the losses, the
time so far and the time left at the rate so far. Lines, not a bar, so progress reads the same
in a terminal, a sweep's `job.log` and a cluster's output file."""

from __future__ import annotations

import time

import lightning as L


class ProgressLines(L.Callback):
    def __init__(self, what: str, every: int, log=print):
        self.what, self.every, self.write, self.t0 = what, max(1, int(every)), log, None

    def on_train_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step, total = trainer.global_step, trainer.max_steps
        if step % self.every and step != total:
            return
        loss = trainer.callback_metrics.get("train/loss")
        val = trainer.callback_metrics.get("val/loss")
        spent = time.perf_counter() - self.t0
        left = spent / step * (total - step) if 0 < step < total else 0.0
        self.write(f"{self.what}: step {step}/{total}" + (f", loss {float(loss):.3f}" if loss is not None else "")
                   + (f", val {float(val):.3f}" if val is not None else "") + f", {spent:.0f} s"
                   + (f", about {left / 60:.0f} min left" if left >= 60 else ""))
