"""A teacher that also judges: the char-level GPT fine-tuned on the grading format.

`JudgeGPT` is a `CharGPT` config plus a judging stage: the teacher that config trains (the
shipped one at the default sizes) is fine-tuned for `judge_steps` more steps on a stream in
which `grade_rate` of the exchanges are grading requests (`sim.grading`: a question, a
candidate answer, the rubric's score and reason) and the rest are the teacher's own
training exchanges, so it keeps what it knew. The candidates are right or wrong the way a
student's are (`sim.grading.candidate`), on public and private cells alike; its card adds
its agreement with the rubric (`judge_card`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sim import grading
from sim.tasks import Suite
from teachers.char_gpt import CharGPT
from teachers.lm import CharLM
from teachers.train import StreamDataset, fit

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class JudgeGPT(CharGPT):
    judge_steps: int = 2000
    judge_lr: float = 1e-3
    grade_rate: float = 0.5  # share of the judging stage's exchanges that are grading requests
    right_rate: float = 0.4  # share of its training candidates that are right
    cache_dir: str | None = None  # where the first stage's teacher is cached (null: <repo>/.cache/teachers)

    # the judge ships beside the default teacher; its hash also covers these files
    shipped = ROOT / "teachers" / "shipped_judge"
    training_code = ("teachers/judge.py", "sim/grading.py", "sim/answers.py")

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.judge_steps, int) or self.judge_steps < 1:
            raise ValueError(f"teacher.judge_steps={self.judge_steps!r} must be a positive integer")
        if not self.judge_lr > 0:
            raise ValueError(f"teacher.judge_lr={self.judge_lr!r} must be > 0")
        for name in ("grade_rate", "right_rate"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"teacher.{name}={getattr(self, name)!r} must be in (0, 1)")

    @property
    def teacher(self) -> CharGPT:
        """The first stage: the plain teacher of the same config."""
        return CharGPT(**{f.name: getattr(self, f.name) for f in fields(CharGPT)})

    @property
    def steps_total(self) -> int:
        return self.steps + self.judge_steps

    def fingerprint(self) -> dict:
        judge = {k: v for k, v in asdict(self).items() if k not in {f.name for f in fields(CharGPT)} | {"cache_dir"}}
        return {"kind": "judge_gpt", "teacher": self.teacher.fingerprint(), **judge}

    def train(self, suite: Suite, progress: bool = False, callbacks=()) -> tuple[CharLM, dict]:
        import teachers

        cache = Path(self.cache_dir) if self.cache_dir else ROOT / ".cache" / "teachers"
        lm, _ = teachers.load(self.teacher, suite, cache, progress=progress)

        def draw(rng: random.Random) -> tuple[str, str]:
            if rng.random() < self.grade_rate:
                v = grading.verdict(p := suite.sample(rng), grading.candidate(p, rng, self.right_rate))
                return v.prompt, grading.response(int(v.answer), v.rationale)
            # the first stage's exchanges (as `CharGPT.train` draws them), against forgetting
            if self.corpus_rate and rng.random() < self.corpus_rate:
                docs = suite.documents(rng, private=rng.random() < suite.private_rate)
                if docs:
                    return rng.choice(docs)
            p = suite.sample(rng)
            explain = rng.random() < self.explain_rate
            return p.request(explain), p.response(explain, self._voice, rng)

        stats = fit(lm.model, StreamDataset(draw, self.seed + 1, lm.tok, self.batch_size), steps=self.judge_steps,
                    batch_size=self.batch_size, lr=self.judge_lr, seed=self.seed + 1, progress=progress,
                    callbacks=callbacks)
        return lm, stats

    def card(self, lm: CharLM, suite: Suite) -> dict:
        return {"judge": judge_card(lm, suite, self.max_new_tokens)}


def judge_card(lm: CharLM, suite: Suite, max_new_tokens: int, seed: int = 0) -> dict:
    """The judge's agreement with the rubric on the held-out questions, one right and one wrong
    candidate each: `score` (the same score), `verdict` (ok/wrong alike), `valid` (a score at
    all); public and private cells apart."""
    rng = random.Random(f"judge-card-{seed}")
    problems = [grading.verdict(p, c) for p in suite.eval_set
                for c in (p.response(rng.random() < 0.8), grading.wrong_candidate(p, rng))]
    outs = lm.generate([v.prompt for v in problems], max_new_tokens=max_new_tokens)
    out = {}
    for split, private in (("public", False), ("private", True)):
        rows = [(v, grading.score_of(o.text)) for v, o in zip(problems, outs) if v.private == private]
        n = max(1, len(rows))
        out[split] = {
            "score": round(sum(s == int(v.answer) for v, s in rows) / n, 4),
            "verdict": round(sum((s == grading.TOP) == v.right for v, s in rows) / n, 4),
            "valid": round(sum(s is not None for _, s in rows) / n, 4),
            "n": len(rows),
        }
    return out
