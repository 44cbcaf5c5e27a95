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
import random
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from sim.tasks.base import ANSWER_MARK, EXPLAIN
from teachers.lm import CharLM
from teachers.progress import ProgressLines
from teachers.train import CausalLMModule
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

    graded = False  # trains on graded candidates (`policy=judge`'s harvest), not on answers

    def select(self, harvest):
        """The rows of a harvest this recipe trains on (all of them: answers)."""
        return harvest

    def fit(self, spec: "Student", student: CharLM, harvest, seed: int, *, logger=False, suite=None, log=print,
            steps: int | None = None) -> dict:
        """SFT of `student` (prepared by `spec`) on a harvest of answers: a validation split by
        distinct prompt, early stopping on it with the best weights kept, steps that scale
        with the harvest (at most `steps` when given), public replay from `suite` (none
        without one)."""
        cols = harvest.column_names
        tokens = harvest["top_tokens"] if "top_tokens" in cols else [None] * len(harvest)
        logprobs = harvest["top_logprobs"] if "top_logprobs" in cols else [None] * len(harvest)
        examples = [clip(self.example(student.tok, r, s, t, lp), student.n_positions)
                    for r, s, t, lp in zip(harvest["request"], harvest["response"], tokens, logprobs)]
        train_idx, val_idx = split_by_prompt(harvest["request"], spec.val_fraction, seed)
        if len(val_idx) < 8 or not train_idx:  # too few distinct prompts to validate on
            train_idx, val_idx = list(range(len(examples))), []
        replay = None
        if suite is not None and spec.replay > 0:
            draw, plain = spec.public_data(suite), Recipe()
            replay = lambda rng: clip(plain.example(student.tok, *draw(rng)), student.n_positions)  # noqa: E731
        n_steps = spec.schedule(len(train_idx), replay is not None)
        stats = train(student.model, [examples[i] for i in train_idx], self,
                      steps=min(n_steps, steps or n_steps), batch_size=spec.batch_size, lr=spec.lr, seed=seed,
                      logger=logger, val=[examples[i] for i in val_idx], val_every=spec.val_every,
                      patience=spec.patience, replay=replay, replay_share=spec.replay,
                      progress_every=spec.val_every, log=log)
        stats.update(train_exchanges=len(train_idx), val_exchanges=len(val_idx))
        return stats

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
        self.computed_tokens = 0  # padding included

    def loss(self, batch):
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = sft_loss(logits, batch["labels"], batch["weights"])
        if self.recipe.kd_alpha > 0:
            kd = topk_kd_loss(logits, batch["top_ids"], batch["top_lp"], batch["top_mask"],
                              self.recipe.kd_temperature)
            loss = loss + self.recipe.kd_alpha * kd
        return loss

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.tokens_seen += int(batch["attention_mask"].sum())
        self.computed_tokens += batch["attention_mask"].numel()
        self.log("train/loss", loss, prog_bar=True, on_step=True, batch_size=batch["input_ids"].shape[0])
        return loss



class ValidatedDistillModule(DistillModule):
    """The same loss on a validation split of the harvest (`val/loss`, for early stopping)."""

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch), on_epoch=True, batch_size=batch["input_ids"].shape[0])


class Batches(IterableDataset):
    """Length-bucketed batches of the harvest, mixed with public replay.

    Each pass over `examples` is shuffled (seeded), cut into pools of `pool` batches, each pool
    sorted by length and cut into batches, so a batch pads to its own length. A pool also draws
    `n_replay` fresh public exchanges per batch from `replay` (the attacker's own data, against
    forgetting what the base knew), sorted by length too, and the i-th shortest harvest batch
    takes the i-th shortest replay group: every drawn exchange is trained on, and a batch no
    longer pads to a long replayed one. The batches of a pool are then shuffled."""

    def __init__(self, examples: list[dict], n_harvest: int, seed: int, replay=None, n_replay: int = 0,
                 pool: int = 16):
        self.examples, self.n_harvest, self.seed = examples, n_harvest, seed
        self.replay, self.n_replay, self.pool = replay, n_replay if replay is not None else 0, pool

    def __iter__(self):
        rng = random.Random(f"batches-{self.seed}")
        epoch = 0
        while True:
            order = list(range(len(self.examples)))
            random.Random(f"epoch-{self.seed}-{epoch}").shuffle(order)
            step = self.n_harvest * self.pool
            for i in range(0, len(order), step):
                chunk = sorted((self.examples[j] for j in order[i : i + step]), key=lambda e: len(e["ids"]))
                batches = [chunk[k : k + self.n_harvest] for k in range(0, len(chunk), self.n_harvest)]
                extra = sorted((self.replay(rng) for _ in range(self.n_replay * len(batches))),
                               key=lambda e: len(e["ids"]))
                batches = [b + extra[k * self.n_replay : (k + 1) * self.n_replay] for k, b in enumerate(batches)]
                rng.shuffle(batches)
                yield from batches
            epoch += 1


class BestWeights(L.Callback):
    """Keeps the weights of the lowest validation loss in memory and restores them at the end
    (the best checkpoint, without writing one)."""

    def __init__(self):
        self.best, self.state, self.best_step = math.inf, None, 0

    def on_validation_end(self, trainer, pl_module):
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None and float(loss) < self.best:
            self.best, self.best_step = float(loss), trainer.global_step
            self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_end(self, trainer, pl_module):
        if self.state is not None:
            pl_module.model.load_state_dict(self.state)


def train(model, examples: list[dict], recipe: Recipe, *, steps: int, batch_size: int, lr: float, seed: int,
          logger=False, val: list[dict] = (), val_every: int = 100, patience: int = 3, replay=None,
          replay_share: float = 0.0, progress_every: int = 0, log=print) -> dict:
    """Up to `steps` optimiser steps on length-bucketed batches of `examples` (a share
    `replay_share` of each batch drawn from `replay(rng) -> example`); with a validation split
    `val`, `val/loss` every `val_every` steps, early stopping after `patience` checks without a
    new best, and the best weights kept. Deterministic on CPU for a seed."""

    from lightning.pytorch.callbacks import EarlyStopping

    if val:  # end on a validation, so the last steps are weighed before the best weights return
        steps = math.ceil(steps / min(val_every, steps)) * min(val_every, steps)
    L.seed_everything(seed, workers=True, verbose=False)
    n_replay = int(round(batch_size * replay_share)) if replay is not None else 0
    n_harvest = max(1, min(batch_size - n_replay, len(examples)))
    loader = DataLoader(Batches(examples, n_harvest, seed, replay, n_replay), batch_size=None, collate_fn=collate,
                        num_workers=0)
    module = (ValidatedDistillModule if val else DistillModule)(model, recipe, lr=lr, max_steps=steps)
    callbacks, val_loader = ([ProgressLines("student", progress_every, log)] if progress_every else []), None
    if val:
        val_loader = DataLoader(sorted(val, key=lambda e: len(e["ids"])), batch_size=batch_size, collate_fn=collate)
        best = BestWeights()
        callbacks += [EarlyStopping("val/loss", patience=patience, mode="min", check_finite=False), best]
    trainer = L.Trainer(
        max_steps=steps, max_epochs=-1, accelerator="cpu" if not torch.cuda.is_available() else "auto", devices=1,
        deterministic=True, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=max(1, min(50, steps // 10)), gradient_clip_val=1.0,
        callbacks=callbacks, val_check_interval=min(val_every, steps) if val else None,
        check_val_every_n_epoch=None, num_sanity_val_steps=0, limit_val_batches=1.0 if val else 0)
    model.train()
    t0 = time.perf_counter()
    trainer.fit(module, loader, val_loader)
    model.eval()
    seconds = time.perf_counter() - t0
    loss = trainer.callback_metrics.get("train/loss")
    return {"steps": trainer.global_step, "max_steps": steps, "tokens": module.tokens_seen,
            "computed_tokens": module.computed_tokens, "seconds": seconds,
            "tokens_per_s": module.tokens_seen / max(seconds, 1e-9),
            "padding_share": 1 - module.tokens_seen / max(module.computed_tokens, 1),
            "final_loss": float(loss) if loss is not None else float("nan"),
            "best_val_loss": best.best if val else float("nan"), "best_step": best.best_step if val else steps}


def split_by_prompt(requests: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) row indices: `fraction` of the distinct questions (and every row that
    asked one, explained or not) held out, so that no validation question was trained on (a
    harvest repeats prompts: a row-level split would validate on training data)."""
    questions = [r.removeprefix(EXPLAIN) for r in requests]
    distinct = sorted(set(questions))
    random.Random(f"val-{seed}").shuffle(distinct)
    held = set(distinct[: int(len(distinct) * fraction)])
    train_idx = [i for i, q in enumerate(questions) if q not in held]
    val_idx = [i for i, q in enumerate(questions) if q in held]
    return train_idx, val_idx


@dataclass
class Student(ABC):
    """A student's shape and training budget; subclasses say where its weights start
    (`build`). `distill` fits it on a harvest with the recipe."""
    n_layer: int = 2
    n_embd: int = 96
    n_head: int = 4
    n_positions: int = 160
    steps: int = 1200  # the cap on optimiser steps
    epochs: float = 15.0  # passes over the harvest's training split, up to `steps`
    min_steps: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    replay: float = 0.25  # share of each batch of fresh public data (against forgetting)
    val_fraction: float = 0.1  # distinct prompts of the harvest held out for early stopping
    val_every: int = 100
    patience: int = 3
    recipe: Recipe = field(default_factory=Recipe)

    def __post_init__(self):
        for name in ("n_layer", "n_embd", "n_head", "n_positions", "steps", "batch_size", "min_steps", "val_every",
                     "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"student.{name}={getattr(self, name)} must be >= 1")
        if not self.epochs > 0:
            raise ValueError(f"student.epochs={self.epochs!r} must be > 0")
        for name in ("replay", "val_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"student.{name}={getattr(self, name)!r} must be in [0, 1)")
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

    def public_data(self, suite):
        """`draw(rng) -> (request, response)`: the public data the attacker makes itself (replay)."""
        from students.base import AttackerBase

        return AttackerBase().sampler(suite)

    def schedule(self, n_train: int, replay: bool = True) -> int:
        """Optimiser steps for a training split of `n_train` exchanges: `epochs` passes over it
        (at the harvest's share of each batch), between `min_steps` and the cap `steps`."""
        per_batch = max(1, self.batch_size - (int(round(self.batch_size * self.replay)) if replay else 0))
        return int(min(self.steps, max(self.min_steps, math.ceil(self.epochs * n_train / per_batch))))

    def distill(self, student: CharLM, harvest, seed: int, logger=False, suite=None, log=print) -> tuple[CharLM, dict]:
        """Fit `student` on a harvest (a datasets.Dataset with request/response columns, and
        top_tokens/top_logprobs when the API exposed them; a judge policy's graded candidates)
        the recipe's way (`Recipe.select` then `Recipe.fit`). Returns the trained student (a
        plain model again) and training statistics."""
        student = self.prepare(student)
        trainable = sum(p.numel() for p in student.model.parameters() if p.requires_grad)
        harvest = self.recipe.select(harvest)
        if len(harvest) == 0:
            stats = {"steps": 0, "tokens": 0, "seconds": 0.0, "tokens_per_s": 0.0, "final_loss": math.nan}
        else:
            stats = self.recipe.fit(self, student, harvest, seed, logger=logger, suite=suite, log=log)
        return self.finish(student), {**stats, "trainable_params": trainable}
