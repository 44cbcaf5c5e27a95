"""Distillation recipes: the losses, the student's LightningModule, and the student base class.

Losses, on a harvest of (request, visible response[, top-k log-probs]):
- SFT on the visible text (`target=visible`) or on the final answer only (`target=answer`,
  the rationale is cut away before training);
- rationale weighting after Hsieh et al. (2023), "Distilling Step-by-Step! Outperforming
  Larger Language Models with Less Training Data and Smaller Model Sizes": the loss is
  L = L_label + λ L_rationale, here with L_label the cross-entropy of the answer tokens and
  L_rationale that of the rationale tokens of the same sequence (λ = `rationale_weight`);
- KD on top-k log-probabilities after Hinton et al. (2015), "Distilling the Knowledge in a
  Neural Network": α T² KL(q_T || p_T), with q_T the teacher's returned top-k renormalised
  at temperature T and p_T the student's distribution restricted to the same k tokens
  (an API returns only the top k, so the KL is over them).
The loss functions are pure (tensors in, a scalar out) and unit-tested.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from sim.tasks.base import ANSWER_MARK
from teachers.lm import CharLM
from teachers.train import CausalLMModule, fit
from teachers.vocab import EOS, PAD

TARGETS = ("visible", "answer")


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted next-token cross-entropy: Σ w_t CE_t / Σ w_t over the labelled positions.

    `logits` [B, T, V] predict position t+1 from t; `labels` [B, T] (-100 = no loss);
    `weights` [B, T] per label position (λ on rationale tokens, 1 on the answer)."""
    logits, labels, weights = logits[:, :-1], labels[:, 1:], weights[:, 1:]
    mask = labels != -100
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.clamp(min=0).reshape(-1),
                         reduction="none").view_as(labels)
    w = weights * mask
    return (ce * w).sum() / w.sum().clamp(min=1e-9)


def topk_kd_loss(logits: torch.Tensor, top_ids: torch.Tensor, top_logprobs: torch.Tensor, mask: torch.Tensor,
                 T: float = 1.0) -> torch.Tensor:
    """T² KL(q_T || p_T) averaged over the positions in `mask`, on the teacher's top-k tokens.

    `logits` [B, L, V] are the student's logits at the positions that predict each response
    token; `top_ids`/`top_logprobs` [B, L, k] the teacher's returned top-k; `mask` [B, L]
    the positions that have them. Both distributions are renormalised over the k tokens, so a
    constant shift of the teacher's log-probs (a missing normaliser) changes nothing."""
    if not mask.any():
        return logits.new_zeros(())
    q = F.log_softmax(top_logprobs.float() / T, dim=-1)
    p = F.log_softmax(logits.float().gather(-1, top_ids) / T, dim=-1)
    kl = (q.exp() * (q - p)).sum(-1)
    return (T * T) * (kl * mask).sum() / mask.sum()


@dataclass
class Recipe:
    """What the student learns from a harvest (see the module docstring)."""
    target: str = "visible"
    rationale_weight: float = 1.0  # λ
    kd_alpha: float = 0.0  # α: weight of the top-k KD term (0: SFT only)
    kd_temperature: float = 1.0  # T

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"student.recipe.target={self.target!r} must be one of {TARGETS}")
        if not self.rationale_weight >= 0:
            raise ValueError(f"student.recipe.rationale_weight={self.rationale_weight!r} must be >= 0")
        if not self.kd_alpha >= 0:
            raise ValueError(f"student.recipe.kd_alpha={self.kd_alpha!r} must be >= 0")
        if not self.kd_temperature > 0:
            raise ValueError(f"student.recipe.kd_temperature={self.kd_temperature!r} must be > 0")

    def example(self, tok, request: str, response: str, tokens=None, logprobs=None) -> dict:
        """Token ids, loss weights and (when given and used) the top-k targets of one exchange."""
        if self.target == "answer" and ANSWER_MARK in response:
            cut = response.rindex(ANSWER_MARK)
            response, tokens, logprobs = response[cut:], (tokens or [])[cut:], (logprobs or [])[cut:]
        ids, start = tok.pair_ids(request, response)
        # label positions: the response tokens, then EOS; rationale = the tokens before the mark
        # (exact for the char vocabulary; a sub-word tokenizer may merge across the boundary)
        n_rationale = min(len(tok.encode(response[: max(response.rfind(ANSWER_MARK), 0)])), len(ids) - start - 1)
        weights = [0.0] * start + [self.rationale_weight] * n_rationale + [1.0] * (len(ids) - start - n_rationale)
        ex = {"ids": ids, "start": start, "weights": weights, "top_ids": [], "top_lp": []}
        # top-k log-probs are per character: usable when every response token is one character
        if self.kd_alpha > 0 and tokens and len(tokens) == len(response) == len(ids) - start - 1:
            ex["top_ids"] = [[tok_id(tok, t) for t in pos] for pos in tokens]
            ex["top_lp"] = [list(map(float, pos)) for pos in logprobs]
        return ex


def clip(ex: dict, n_positions: int) -> dict:
    """An exchange longer than the student's context loses its tail (re-encoded text from a
    sub-word teacher can be longer than what the teacher generated)."""
    if len(ex["ids"]) <= n_positions:
        return ex
    keep = max(0, n_positions - ex["start"])
    return {**ex, "ids": ex["ids"][:n_positions], "weights": ex["weights"][:n_positions],
            "top_ids": ex["top_ids"][:keep], "top_lp": ex["top_lp"][:keep]}


def tok_id(tok, text: str) -> int:
    return EOS if text == "<eos>" else tok.stoi.get(text, PAD)


def collate(examples: list[dict]) -> dict:
    width = max(len(e["ids"]) for e in examples)
    B = len(examples)
    input_ids = torch.full((B, width), PAD, dtype=torch.long)
    labels = torch.full((B, width), -100, dtype=torch.long)
    attention = torch.zeros((B, width), dtype=torch.long)
    weights = torch.zeros((B, width))
    k = max((len(e["top_ids"][0]) for e in examples if e["top_ids"]), default=0)
    top_ids = torch.zeros((B, width, max(k, 1)), dtype=torch.long)
    top_lp = torch.full((B, width, max(k, 1)), -1e4)
    top_mask = torch.zeros((B, width))
    for i, e in enumerate(examples):
        n, s = len(e["ids"]), e["start"]
        input_ids[i, :n] = torch.tensor(e["ids"])
        labels[i, s:n] = torch.tensor(e["ids"][s:])
        attention[i, :n] = 1
        weights[i, :n] = torch.tensor(e["weights"][:n])
        for j, (ids, lps) in enumerate(zip(e["top_ids"], e["top_lp"])):
            # the logits at position s-1+j predict response token j
            top_ids[i, s - 1 + j, : len(ids)] = torch.tensor(ids)
            top_lp[i, s - 1 + j, : len(lps)] = torch.tensor(lps)
            top_mask[i, s - 1 + j] = 1.0
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention, "weights": weights,
            "top_ids": top_ids, "top_lp": top_lp, "top_mask": top_mask}


class DistillModule(CausalLMModule):
    """The teacher's module (optimiser and schedule) with the recipe's loss."""

    def __init__(self, model, recipe: Recipe, lr: float, max_steps: int):
        super().__init__(model, lr=lr, max_steps=max_steps)
        self.recipe = recipe

    def training_step(self, batch, batch_idx):
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = sft_loss(logits, batch["labels"], batch["weights"])
        if self.recipe.kd_alpha > 0:
            kd = topk_kd_loss(logits, batch["top_ids"], batch["top_lp"], batch["top_mask"],
                              self.recipe.kd_temperature)
            self.log("train/kd", kd, on_step=True, batch_size=logits.shape[0])
            loss = loss + self.recipe.kd_alpha * kd
        self.tokens_seen += int(batch["attention_mask"].sum())
        self.log("train/loss", loss, prog_bar=True, on_step=True, batch_size=logits.shape[0])
        return loss


def train(model, examples: list[dict], recipe: Recipe, *, steps: int, batch_size: int, lr: float, seed: int,
          logger=False) -> dict:
    """`steps` optimiser steps on shuffled `examples`; deterministic on CPU for a seed."""
    return fit(model, examples, steps=steps, batch_size=min(batch_size, len(examples)), lr=lr, seed=seed,
               logger=logger, shuffle=True, module=DistillModule(model, recipe, lr=lr, max_steps=steps),
               collate_fn=collate)


@dataclass
class Student(ABC):
    """A student's shape and training budget; subclasses say where its weights start
    (`build`). `distill` fits it on a harvest with the recipe."""
    n_layer: int = 2
    n_embd: int = 96
    n_head: int = 4
    n_positions: int = 160
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    recipe: Recipe = field(default_factory=Recipe)

    def __post_init__(self):
        for name in ("n_layer", "n_embd", "n_head", "n_positions", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"student.{name}={getattr(self, name)} must be >= 1")
        if self.n_embd % self.n_head:
            raise ValueError(f"student.n_embd={self.n_embd} must be divisible by student.n_head={self.n_head}")
        if not self.lr > 0:
            raise ValueError(f"student.lr={self.lr} must be > 0")
        if not isinstance(self.recipe, Recipe):
            raise ValueError(f"student.recipe must build a students.distill.Recipe, got {self.recipe!r}")

    @abstractmethod
    def build(self, seed: int, suite=None, cache_dir=None, log=print) -> CharLM:
        """The student before distillation (its weights: random, or the attacker's base)."""

    def prepare(self, student: CharLM) -> CharLM:
        """Wrap the model for training (LoRA adapters); the default trains every weight."""
        return student

    def finish(self, student: CharLM) -> CharLM:
        """Undo `prepare` after training (merge adapters) so evaluation runs a plain model."""
        return student

    def distill(self, student: CharLM, harvest, seed: int, logger=False) -> tuple[CharLM, dict]:
        """Fit `student` on a harvest (a datasets.Dataset with request/response columns, and
        top_tokens/top_logprobs when the API exposed them). Returns the trained student (a
        plain model again) and training statistics."""
        student = self.prepare(student)
        trainable = sum(p.numel() for p in student.model.parameters() if p.requires_grad)
        if len(harvest) == 0:
            stats = {"steps": 0, "tokens": 0, "seconds": 0.0, "tokens_per_s": 0.0, "final_loss": math.nan}
        else:
            cols = harvest.column_names
            tokens = harvest["top_tokens"] if "top_tokens" in cols else [None] * len(harvest)
            logprobs = harvest["top_logprobs"] if "top_logprobs" in cols else [None] * len(harvest)
            examples = [clip(self.recipe.example(student.tok, r, s, t, lp), student.n_positions)
                        for r, s, t, lp in zip(harvest["request"], harvest["response"], tokens, logprobs)]
            stats = train(student.model, examples, self.recipe, steps=self.steps, batch_size=self.batch_size,
                          lr=self.lr, seed=seed, logger=logger)
        return self.finish(student), {**stats, "trainable_params": trainable}
