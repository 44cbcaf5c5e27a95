"""A student trained from scratch: a char GPT smaller than the teacher, SFT on the harvest.

SFT on the visible response (rationale and answer when the API showed them) with the
request as context: the attacker imitates exactly what it was served.
"""

from __future__ import annotations

from dataclasses import dataclass

from teachers.lm import CharLM
from teachers.vocab import build_gpt
from teachers.train import fit


@dataclass
class Scratch:
    n_layer: int = 2
    n_embd: int = 96
    n_head: int = 4
    n_positions: int = 160
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3

    def __post_init__(self):
        for name in ("n_layer", "n_embd", "n_head", "n_positions", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"student.{name}={getattr(self, name)} must be >= 1")
        if self.n_embd % self.n_head:
            raise ValueError(f"student.n_embd={self.n_embd} must be divisible by student.n_head={self.n_head}")
        if not self.lr > 0:
            raise ValueError(f"student.lr={self.lr} must be > 0")

    def build(self, seed: int) -> CharLM:
        import torch

        torch.manual_seed(seed)
        return CharLM(build_gpt(self.n_layer, self.n_embd, self.n_head, self.n_positions))

    def distill(self, student: CharLM, harvest, seed: int, logger=False) -> dict:
        """Fit `student` on a harvest (a datasets.Dataset with request/response columns)."""
        if len(harvest) == 0:
            return {"steps": 0, "tokens": 0, "seconds": 0.0, "tokens_per_s": 0.0, "final_loss": float("nan")}
        data = [student.tok.pair_ids(r, s) for r, s in zip(harvest["request"], harvest["response"])]
        return fit(student.model, data, steps=self.steps, batch_size=min(self.batch_size, len(data)),
                   lr=self.lr, seed=seed, logger=logger, shuffle=True)
