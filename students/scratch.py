"""A student trained from scratch: a char GPT smaller than the teacher, fitted on the harvest
with the recipe (`students.distill`). The baseline every other student is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass

from students.distill import Student
from teachers.lm import CharLM
from teachers.vocab import build_gpt


@dataclass
class Scratch(Student):
    def build(self, seed: int, suite=None, cache_dir=None, log=print) -> CharLM:
        import torch

        torch.manual_seed(seed)
        return CharLM(build_gpt(self.n_layer, self.n_embd, self.n_head, self.n_positions))
