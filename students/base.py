"""The attacker's own base model: student-sized, pretrained by the attacker on public-like data.

Real campaigns distill into a strong base of their own rather than a blank network. Here the
attacker pretrains on what it can generate without the teacher: every skill's format at low
difficulty only (`max_difficulty`), with worked rationales, and for the knowledge skill a
*public* world (`public_world_seed`) disjoint from the teacher's private one, so the base
knows how a kb question is answered but none of the private facts (problems that touch a
person whose name also exists in the private world are dropped). Held-out prompts are never
drawn (`Suite.sample`).

The base is cached like the teacher: by a hash of its config, the suite and the code that
decides its weights (`teachers.load`), or read from any local checkpoint directory (`path`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from sim.tasks import Suite
from sim.tasks.kb import Kb
from teachers.lm import CharLM
from teachers.train import StreamDataset, fit
from teachers.vocab import build_gpt


@dataclass
class AttackerBase:
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    max_difficulty: int = 2
    explain_rate: float = 0.7
    public_world_seed: int = 1
    seed: int = 0
    max_new_tokens: int = 96
    path: str | None = None  # a local checkpoint to use instead of pretraining
    # the shape, set by the student that starts from this base
    n_layer: int = 2
    n_embd: int = 96
    n_head: int = 4
    n_positions: int = 160

    def __post_init__(self):
        for name in ("steps", "batch_size", "max_new_tokens", "n_layer", "n_embd", "n_head", "n_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"student.base.{name}={getattr(self, name)} must be >= 1")
        if not 1 <= self.max_difficulty <= 5:
            raise ValueError(f"student.base.max_difficulty={self.max_difficulty} must be in 1..5")
        if not 0 <= self.explain_rate <= 1:
            raise ValueError(f"student.base.explain_rate={self.explain_rate} must be in [0, 1]")
        if not self.lr > 0:
            raise ValueError(f"student.base.lr={self.lr} must be > 0")
        if self.path is not None and not (Path(self.path) / "config.json").exists():
            raise ValueError(f"student.base.path={self.path!r} is not a checkpoint directory (no config.json)")

    def fingerprint(self) -> dict:
        code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
        return {"kind": "attacker_base", "code": code, **asdict(self)}

    def public_kb(self, suite: Suite) -> tuple[Kb, set[str]] | None:
        private = suite.skills.get("kb")
        if private is None:
            return None
        public = Kb(n_people=private.n_people, world_seed=self.public_world_seed)
        if public.world_seed == private.world_seed:
            raise ValueError(f"student.base.public_world_seed={self.public_world_seed} is the teacher's private "
                             "world: the base must not know the private facts")
        return public, set(private.world)

    def sampler(self, suite: Suite):
        """`draw(rng) -> (request, response)`: the attacker's public pretraining data."""
        public = self.public_kb(suite)
        skills = list(suite.skills)

        def draw(rng: random.Random) -> tuple[str, str]:
            while True:
                skill, d = rng.choice(skills), rng.randint(1, self.max_difficulty)
                if skill == "kb":
                    kb, private_names = public
                    p = kb.sample(rng, d)
                    if any(f.split(".", 1)[0] in private_names for f in p.facts):
                        continue
                else:
                    p = suite.sample(rng, skill, d)
                explain = rng.random() < self.explain_rate
                return p.request(explain), p.response(explain)

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
        return teachers.load(self, suite, cache_dir, log=log, what="attacker base")
