"""The default teacher: a small character-level GPT trained on the skill suite.

`CharGPT` is the teacher's config (built by Hydra from `configs/teacher/char_gpt.yaml`); its
`train` draws an endless stream of suite problems, public and private cells alike (never
held-out ones), asks for the reasoning in `explain_rate` of them and phrases it in the
teacher's `voice`, mixes in the suite's public and private corpus (the knowledge worlds'
records) at `corpus_rate`, and fits the model with Lightning.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from sim.tasks import Suite, Voice
from teachers.lm import CharLM
from teachers.vocab import build_gpt
from teachers.train import StreamDataset, fit


@dataclass
class CharGPT:
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 160
    dropout: float = 0.0
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    explain_rate: float = 0.7
    corpus_rate: float = 0.05
    seed: int = 0
    max_new_tokens: int = 96
    voice: Mapping = field(default_factory=dict)  # {open, connect, close}: word lists (sim.tasks.Voice)

    def __post_init__(self):
        try:
            self._voice = Voice(**{k: tuple(v) for k, v in dict(self.voice).items()})
        except TypeError as e:
            raise ValueError(f"teacher.voice={dict(self.voice)!r}: {e}") from None
        self.voice = {k: list(getattr(self._voice, k)) for k in ("open", "connect", "close")}
        for name in ("n_layer", "n_embd", "n_head", "n_positions", "steps", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"teacher.{name}={getattr(self, name)} must be >= 1")
        if self.n_embd % self.n_head:
            raise ValueError(f"teacher.n_embd={self.n_embd} must be divisible by teacher.n_head={self.n_head}")
        for name in ("explain_rate", "corpus_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"teacher.{name}={getattr(self, name)} must be in [0, 1]")
        if not self.lr > 0:
            raise ValueError(f"teacher.lr={self.lr} must be > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"teacher.dropout={self.dropout} must be in [0, 1)")

    def fingerprint(self) -> dict:
        return {"kind": "char_gpt", **asdict(self)}

    def train(self, suite: Suite, progress: bool = False, callbacks=()) -> tuple[CharLM, dict]:
        model = build_gpt(self.n_layer, self.n_embd, self.n_head, self.n_positions, self.dropout)
        lm = CharLM(model)

        def draw(rng: random.Random) -> tuple[str, str]:
            if self.corpus_rate and rng.random() < self.corpus_rate:
                docs = suite.documents(rng, private=rng.random() < suite.private_rate)
                if docs:
                    return rng.choice(docs)
            p = suite.sample(rng)
            explain = rng.random() < self.explain_rate
            return p.request(explain), p.response(explain, self._voice, rng)

        stats = fit(model, StreamDataset(draw, self.seed, lm.tok, self.batch_size), steps=self.steps, batch_size=self.batch_size,
                    lr=self.lr, seed=self.seed, progress=progress, callbacks=callbacks)
        return lm, stats
