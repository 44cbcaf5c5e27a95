"""A student fine-tuned from the attacker's base model, every weight trainable.

The base (`students.base`) is pretrained by the attacker on public-like data; its shape is
the student's (`n_layer`, `n_embd`, ...), so `transfer/net` measures what distillation added
to what the attacker already had.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from students.base import AttackerBase
from students.distill import Student
from teachers.lm import CharLM


@dataclass
class Finetune(Student):
    base: AttackerBase = field(default_factory=AttackerBase)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.base, AttackerBase):
            raise ValueError(f"student.base must build a students.base.AttackerBase, got {self.base!r}")
        # the base has the student's shape
        for name in ("n_layer", "n_embd", "n_head", "n_positions"):
            setattr(self.base, name, getattr(self, name))

    def build(self, seed: int, suite=None, cache_dir=None, log=print) -> CharLM:
        lm, card = self.base.load(suite, cache_dir, log=log)
        self.base_card = card
        return lm

    def public_data(self, suite):
        return self.base.sampler(suite)
