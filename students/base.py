"""The public base model every attacker starts from, as real attackers start from an open model.

Student-sized, and trained only on what is public: every skill's public procedures at every
difficulty (copying, scanning, one- and two-digit operations, the string programs, the tool-call
syntax, table reading), with worked rationales in its own voice (`voice`: other words than the
teacher's, so a student's phrasing says whose outputs it learned from), and the records and
questions of the *public* knowledge world. It has never seen a private cell (the teacher's
private operator, operation, query, tool schema or world), so it sits near chance there: what
a student gains on the private cells is what distillation moved (`transfer/net`).

The `scale=small` base ships in `students/shipped/` (`make base` retrains it; a test fails when
it no longer matches its config and code); any other config is trained once and cached by
hash like the teacher (`teachers.load`), or read from a local checkpoint directory (`path`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sim.tasks import Suite, Voice
from teachers.lm import CharLM
from teachers.train import StreamDataset, fit
from teachers.vocab import build_gpt

SHIPPED_BASE = Path(__file__).resolve().parent / "shipped"


@dataclass
class AttackerBase:
    steps: int = 6000
    batch_size: int = 64
    lr: float = 3e-3
    explain_rate: float = 0.7
    corpus_rate: float = 0.1  # fraction of pages of the public knowledge world's records
    seed: int = 0
    max_new_tokens: int = 128
    path: str | None = None  # a local checkpoint to use instead of pretraining
    # the shape, set by the student that starts from this base
    n_layer: int = 3
    n_embd: int = 96
    n_head: int = 4
    n_positions: int = 192
    voice: Mapping = field(default_factory=dict)  # {open, connect, close}: word lists (sim.tasks.Voice)

    def __post_init__(self):
        try:
            self._voice = Voice(**{k: tuple(v) for k, v in dict(self.voice).items()})
        except TypeError as e:
            raise ValueError(f"student.base.voice={dict(self.voice)!r}: {e}") from None
        self.voice = {k: list(getattr(self._voice, k)) for k in ("open", "connect", "close")}
        for name in ("steps", "batch_size", "max_new_tokens", "n_layer", "n_embd", "n_head", "n_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"student.base.{name}={getattr(self, name)} must be >= 1")
        for name in ("explain_rate", "corpus_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"student.base.{name}={getattr(self, name)} must be in [0, 1]")
        if not self.lr > 0:
            raise ValueError(f"student.base.lr={self.lr} must be > 0")
        if self.path is not None and not (Path(self.path) / "config.json").exists():
            raise ValueError(f"student.base.path={self.path!r} is not a checkpoint directory (no config.json)")

    def fingerprint(self) -> dict:
        code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
        return {"kind": "attacker_base", "code": code, **asdict(self)}

    def sampler(self, suite: Suite):
        """`draw(rng) -> (request, response)`: public cells and public records only, in the
        base's voice. The attacker can make as much of this as it likes (public replay while
        distilling)."""

        def draw(rng: random.Random) -> tuple[str, str]:
            if self.corpus_rate and rng.random() < self.corpus_rate:
                docs = suite.documents(rng, private=False)
                if docs:
                    return rng.choice(docs)
            p = suite.sample(rng, private=False)
            explain = rng.random() < self.explain_rate
            return p.request(explain), p.response(explain, self._voice, rng)

        return draw

    def train(self, suite: Suite, progress: bool = False, callbacks=()) -> tuple[CharLM, dict]:
        lm = CharLM(build_gpt(self.n_layer, self.n_embd, self.n_head, self.n_positions))
        stats = fit(lm.model, StreamDataset(self.sampler(suite), self.seed, lm.tok, self.batch_size),
                    steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed, progress=progress,
                    callbacks=callbacks)
        return lm, stats

    def load(self, suite: Suite, cache_dir: str | Path, log=print) -> tuple[CharLM, dict]:
        import teachers

        if self.path is not None:
            return CharLM.load(self.path), {"hash": f"path:{self.path}"}
        return teachers.load(self, suite, cache_dir, log=log, what="base", shipped=SHIPPED_BASE)
