"""`make teacher` / `make base`: retrain the default teacher or the public base model from code
and ship it (`teachers/shipped/`, `students/shipped/`).

    python -m experiments.train             # the default (scale=small) teacher -> teachers/shipped/
    python -m experiments.train base            # the public base model -> students/shipped/
    python -m experiments.train judge           # the teacher that also grades -> teachers/shipped_judge/
    python -m experiments.train scale=tiny ...  # any other config -> the cache (.cache/teachers/<hash>)

The checkpoint is written atomically with its card (accuracy per skill x difficulty) and the
hash of its config and training code; `tests/test_teacher.py` fails when that hash no longer
matches the current config, so a stale teacher is an error, never a silent mismatch.
"""

from __future__ import annotations

import sys
import time
from collections import Counter

import sim  # noqa: F401  (offline switches)
import lightning as L
from hydra import compose, initialize_config_dir

from sim.metrics import accuracy_grid, evaluate
from sim.quiet import quiet
from teachers.lm import CharLM

from sim.runner import ROOT, World
from teachers import SHIPPED, format_card, full_card, stage_steps, teacher_hash


class LearningCurve(L.Callback):
    """Every `every` steps, held-out accuracy (explain mode) on a few problems per cell."""

    def __init__(self, suite, every: int, per_cell: int = 8, max_new_tokens: int = 96):
        taken: Counter = Counter()
        self.problems = []
        for p in suite.eval_set:  # the first `per_cell` held-out problems of each cell
            taken[p.skill, p.difficulty, p.private] += 1
            if taken[p.skill, p.difficulty, p.private] <= per_cell:
                self.problems.append(p)
        self.suite, self.every, self.max_new_tokens = suite, every, max_new_tokens
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every:
            return
        rows = evaluate(CharLM(pl_module.model), self.suite, max_new_tokens=self.max_new_tokens, problems=self.problems)
        for r in rows:  # private cells as `skill*`
            r["skill"] += "*" if r["private"] else ""
        acc = accuracy_grid(rows)
        pl_module.model.train()
        print(f"\nstep {step} ({time.perf_counter() - self.t0:.0f} s) loss {float(outputs['loss']):.3f}\n"
              f"{acc.round(2).to_string()}", flush=True)


def main(argv: list[str]) -> None:
    import torch

    from students.base import SHIPPED_BASE

    what = argv[0] if argv[:1] in (["base"], ["judge"]) else "teacher"
    overrides = argv[1:] if what != "teacher" else argv
    fixed = {"base": ["student=finetune"], "judge": ["teacher=judge"], "teacher": []}[what]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("run", overrides=fixed + overrides)
    quiet()
    world = World(cfg)
    torch.set_num_threads(int(cfg.threads))
    spec, suite = (world.student_spec.base, world.suite) if what == "base" else (world.teacher_spec, world.suite)
    key = teacher_hash(spec, suite)
    print(f"training {what} {key}: {spec}")
    steps = stage_steps(spec)
    curve = LearningCurve(suite, every=max(1, steps // 10), max_new_tokens=spec.max_new_tokens)
    lm, stats = spec.train(suite, callbacks=[curve])
    card = full_card(spec, lm, suite)
    card.update(hash=key, train=stats)
    # only the default models ship with the repo; any other config goes to the cache, where
    # `teachers.load` finds it by hash (a `scale=tiny` trial must not overwrite the shipped one)
    shipped = SHIPPED_BASE if what == "base" else getattr(spec, "shipped", SHIPPED)
    dest = shipped if not overrides else ROOT / ".cache" / "teachers" / key
    lm.save(dest, extra={"card.json": card})
    print(format_card(card, what))
    print(f"\ntrained in {stats['seconds'] / 60:.1f} min ({stats['tokens_per_s']:,.0f} tokens/s); saved to {dest}")


if __name__ == "__main__":
    main(sys.argv[1:])
