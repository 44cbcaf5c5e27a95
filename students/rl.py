"""Learning from the teacher's grades (`policy=judge`): rejection sampling and a reward model.

Two recipes for a harvest of graded candidates (question, the student's candidate answer, the
teacher's 0-5 score; `sim.grading`):

- `BestOfK`: rejection-sampling fine-tuning. SFT on the candidates the teacher accepted
  (score >= `threshold`), as in Yuan et al. (2023), "Scaling Relationship on Learning
  Mathematical Reasoning with Large Language Models" (RFT), and expert iteration / STaR
  (Zelikman et al. 2022) when the rounds of `policy=judge` alternate sampling and training.
- `Reward`: a reward model r_φ(x, y) fitted to the grades (a regression head on the
  student's own transformer, as RLHF initialises it from the policy; Ouyang et al. 2022),
  then group-relative policy optimisation against it (GRPO, Shao et al. 2024,
  "DeepSeekMath"): for each question x, G samples y_1..y_G from the policy, advantages
  A_i = (r_i - mean(r)) / (std(r) + ε) within the group, and the loss

      L = - mean_i A_i (1/|y_i|) Σ_t log π_θ(y_i,t | x, y_i,<t)  +  β KL(π_θ || π_ref)

  with π_ref the student before RL (the attacker's base) and the KL estimated per token with
  k3 = exp(log π_ref - log π_θ) - (log π_ref - log π_θ) - 1 (Schulman 2020). One update per
  batch of samples, so PPO's ratio is 1 and its clipping never binds.

`accepted` and `grpo_loss` are pure functions, tested on their own.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from sim import grading
from sim.tasks import EXPLAIN
from students.distill import Recipe
from students.judge import cut
from teachers.lm import CharLM
from teachers.train import CausalLMModule
from teachers.vocab import PAD

GRADED_COLUMNS = ("question", "candidate", "score")


def accepted(questions: list[str], candidates: list[str], scores: list[int], threshold: int,
             per_question: int | None = None) -> list[int]:
    """Row indices of the candidates to fine-tune on: score >= `threshold`, each distinct
    (question, candidate) once, at most `per_question` per question (the first ones)."""
    seen, kept, count = set(), [], {}
    for i, (q, c, s) in enumerate(zip(questions, candidates, scores)):
        if s is None or s < threshold or (q, c) in seen:
            continue
        if per_question is not None and count.get(q, 0) >= per_question:
            continue
        seen.add((q, c))
        count[q] = count.get(q, 0) + 1
        kept.append(i)
    return kept


def grpo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor, group: int,
              beta: float, eps: float = 1e-4) -> tuple[torch.Tensor, dict]:
    """The GRPO loss (module docstring) and its parts.

    `logp`, `ref_logp` [N, T]: log-probabilities of each sampled token under the policy and
    the reference; `mask` [N, T] the positions of sampled tokens; `rewards` [N], the N = B x G
    samples in groups of `group` consecutive rows (one question each)."""
    n = rewards.shape[0]
    if n % group:
        raise ValueError(f"{n} samples do not split into groups of {group}")
    r = rewards.float().view(-1, group)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=False, keepdim=True) + eps)).view(-1).detach()
    mask = mask.float()
    length = mask.sum(1).clamp(min=1)
    seq = (logp * mask).sum(1) / length
    pg = -(adv * seq).mean()
    d = (ref_logp - logp) * mask
    kl = ((torch.exp(d) - d - 1) * mask).sum() / mask.sum().clamp(min=1)
    return pg + beta * kl, {"pg": pg.item(), "kl": kl.item(), "advantage_abs": adv.abs().mean().item()}


def _no_kd(recipe) -> None:
    if recipe.kd_alpha:
        raise ValueError(f"student.recipe.kd_alpha={recipe.kd_alpha}: a graded recipe trains on the student's own "
                         "candidates, which carry no teacher log-probs")


def _graded(harvest) -> None:
    missing = [c for c in GRADED_COLUMNS if c not in harvest.column_names]
    if missing:
        raise ValueError(f"the harvest has no {', '.join(missing)} column: a graded recipe trains on policy=judge's "
                         f"graded candidates")


@dataclass
class BestOfK(Recipe):
    """SFT (the parent recipe's loss) on the accepted candidates, asked as the question."""
    threshold: int = grading.TOP  # the lowest score accepted
    per_question: int | None = None  # accepted candidates kept per question (null: all distinct)

    graded = True

    def __post_init__(self):
        super().__post_init__()
        _no_kd(self)
        if not isinstance(self.threshold, int) or isinstance(self.threshold, bool) or not 0 <= self.threshold <= grading.TOP:
            raise ValueError(f"student.recipe.threshold={self.threshold!r} must be an integer in 0..{grading.TOP}")
        if self.per_question is not None and (not isinstance(self.per_question, int) or isinstance(self.per_question, bool)
                                              or self.per_question < 1):
            raise ValueError(f"student.recipe.per_question={self.per_question!r} must be a positive integer or null")

    def select(self, harvest):
        _graded(harvest)
        keep = accepted(harvest["question"], harvest["candidate"], harvest["score"], self.threshold,
                        self.per_question)
        rows = harvest.select(keep)
        return rows.select_columns(["question", "candidate"]).rename_columns(
            {"question": "request", "candidate": "response"})


class RewardModel(torch.nn.Module):
    """r_φ(x, y) in [0, 1]: a scalar head on the last token of the grading request, on a copy of
    a model's transformer (`transformers.GPT2ForSequenceClassification`)."""

    def __init__(self, lm: CharLM):
        super().__init__()
        from transformers import GPT2ForSequenceClassification

        model = lm.model
        if hasattr(model, "merge_and_unload"):  # a LoRA student: the weights it would be merged into
            model = copy.deepcopy(model).merge_and_unload()
        config = copy.deepcopy(model.config)
        config.num_labels, config.pad_token_id = 1, PAD
        self.net = GPT2ForSequenceClassification(config)
        self.net.transformer.load_state_dict(model.transformer.state_dict())
        self.tok, self.n_positions = lm.tok, config.n_positions

    def batch(self, texts: list[str]) -> dict:
        # a request longer than the context keeps its end (the candidate's answer)
        ids = [self.tok.request_ids(t)[-self.n_positions:] for t in texts]
        width = max(len(i) for i in ids)
        input_ids = torch.full((len(ids), width), PAD, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for k, i in enumerate(ids):  # right-padded: the head reads the last real token
            input_ids[k, : len(i)], attention[k, : len(i)] = torch.tensor(i), 1
        device = next(self.parameters()).device
        return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}

    def forward(self, input_ids, attention_mask):
        return self.net(input_ids=input_ids, attention_mask=attention_mask).logits.squeeze(-1)

    @torch.no_grad()
    def score(self, texts: list[str], batch_size: int = 256) -> list[float]:
        self.eval()
        out = []
        for b in range(0, len(texts), batch_size):
            out += self(**self.batch(texts[b : b + batch_size])).clamp(0, 1).cpu().tolist()
        return out


class Endless(IterableDataset):
    """Shuffled batches of `items`, pass after pass (seeded)."""

    def __init__(self, items: list, batch_size: int, seed: int):
        self.items, self.batch_size, self.seed = items, batch_size, seed

    def __iter__(self):
        rng = random.Random(f"endless-{self.seed}")
        while True:
            order = list(range(len(self.items)))
            rng.shuffle(order)
            for b in range(0, max(1, len(order) - self.batch_size + 1), self.batch_size):
                yield [self.items[i] for i in order[b : b + self.batch_size]]


class RewardModule(CausalLMModule):
    """Regression of the score / 5 (the teacher's optimiser and schedule)."""

    def training_step(self, batch, batch_idx):
        texts, targets = zip(*batch)
        pred = self.model(**self.model.batch(list(texts)))
        loss = F.mse_loss(pred, torch.tensor(targets, dtype=pred.dtype, device=pred.device))
        self.log("rm/loss", loss, on_step=True, batch_size=len(texts))
        return loss


class GRPOModule(CausalLMModule):
    """Each step: G samples per question from the policy, scored by the reward model, one update."""

    def __init__(self, lm: CharLM, reward: RewardModel, group: int, beta: float, temperature: float,
                 max_new_tokens: int, max_candidate: int, lr: float, max_steps: int, seed: int):
        super().__init__(lm.model, lr=lr, max_steps=max_steps)
        self.group, self.beta, self.max_candidate = group, beta, max_candidate
        self.temperature, self.max_new_tokens, self.seed = temperature, max_new_tokens, seed
        # frozen helpers, not submodules: the optimiser and the train/eval switch leave them alone
        object.__setattr__(self, "lm", lm)
        object.__setattr__(self, "reward", reward.eval().requires_grad_(False))
        object.__setattr__(self, "ref", copy.deepcopy(lm.model).eval().requires_grad_(False))
        self.rewards: list[float] = []

    def on_fit_start(self):
        self.ref.to(self.device)
        self.reward.to(self.device)

    def token_logp(self, model, input_ids, attention, labels):
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        return torch.gather(F.log_softmax(logits, -1), -1, labels[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)

    def training_step(self, questions, batch_idx):
        prompts = [q for q in questions for _ in range(self.group)]
        self.model.eval()
        outs = self.lm.generate(prompts, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                seed=self.seed * 100_003 + self.global_step)
        self.model.train()
        texts = [o.text for o in outs]
        # scored as the judge was asked: the candidate canonical and cut as policy=judge sends it
        rewards = torch.tensor(self.reward.score([
            grading.request(q.removeprefix(EXPLAIN), cut(grading.canonical(t), self.max_candidate))
            for q, t in zip(prompts, texts)]), device=self.device)
        pairs = []
        for p, t, o in zip(prompts, texts, outs):
            ids, start = self.lm.tok.pair_ids(p, t)
            pairs.append((ids if o.finished else ids[:-1], start))  # no EOS the sample did not end with
        width = min(max(len(i) for i, _ in pairs), self.lm.n_positions)
        input_ids = torch.full((len(pairs), width), PAD, dtype=torch.long)
        labels = torch.full((len(pairs), width), -100, dtype=torch.long)
        attention = torch.zeros((len(pairs), width), dtype=torch.long)
        for k, (ids, start) in enumerate(pairs):
            ids = ids[:width]
            input_ids[k, : len(ids)], attention[k, : len(ids)] = torch.tensor(ids), 1
            labels[k, start : len(ids)] = torch.tensor(ids[start:])
        input_ids, attention, labels = input_ids.to(self.device), attention.to(self.device), labels.to(self.device)
        logp = self.token_logp(self.model, input_ids, attention, labels)
        with torch.no_grad():
            ref = self.token_logp(self.ref, input_ids, attention, labels)
        loss, parts = grpo_loss(logp, ref, labels[:, 1:] != -100, rewards, self.group, self.beta)
        self.tokens_seen += int(attention.sum())
        self.rewards.append(float(rewards.mean()))
        self.log("rl/loss", loss, on_step=True, batch_size=len(prompts))
        self.log("rl/reward", rewards.mean(), on_step=True, batch_size=len(prompts))
        self.log("rl/kl", parts["kl"], on_step=True, batch_size=len(prompts))
        return loss


def _trainer(steps: int, logger, callbacks=()) -> L.Trainer:
    return L.Trainer(max_steps=steps, max_epochs=-1, accelerator="cpu" if not torch.cuda.is_available() else "auto",
                     devices=1, deterministic=True, logger=logger, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     log_every_n_steps=max(1, min(50, steps // 10)), gradient_clip_val=1.0, callbacks=list(callbacks))


@dataclass
class Reward(Recipe):
    """A reward model on the grades, then GRPO on the student against it (module docstring)."""
    rm_steps: int = 300  # reward-model optimiser steps
    rm_lr: float = 1e-3
    rl_steps: int = 200  # policy optimiser steps (each samples `questions` x G answers)
    rl_lr: float = 2e-4
    questions: int = 16  # questions per step
    group: int = 4  # G: samples per question
    beta: float = 0.05  # β: weight of the KL penalty to the base
    temperature: float = 1.0  # sampling temperature of the policy
    max_new_tokens: int = 96
    max_candidate: int = 96  # characters of a sample the reward model reads (as policy=judge cuts them)

    graded = True

    def __post_init__(self):
        super().__post_init__()
        _no_kd(self)
        for name in ("rm_steps", "rl_steps", "questions", "group", "max_new_tokens", "max_candidate"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"student.recipe.{name}={v!r} must be a positive integer")
        if self.group < 2:
            raise ValueError(f"student.recipe.group={self.group}: group-relative advantages need G >= 2")
        for name in ("rm_lr", "rl_lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"student.recipe.{name}={getattr(self, name)!r} must be > 0")
        if not self.beta >= 0:
            raise ValueError(f"student.recipe.beta={self.beta!r} must be >= 0")

    def select(self, harvest):
        _graded(harvest)
        keep = [i for i, s in enumerate(harvest["score"]) if s is not None and s >= 0]
        return harvest.select(keep)

    def fit(self, spec, student: CharLM, harvest, seed: int, *, logger=False, suite=None, log=print,
            steps: int | None = None) -> dict:
        L.seed_everything(seed, workers=True, verbose=False)
        t0 = time.perf_counter()
        rm_steps = min(self.rm_steps, steps or self.rm_steps)
        rl_steps = min(self.rl_steps, steps or self.rl_steps)
        # the reward model: the grading request as it was sent -> score / 5
        reward = RewardModel(student)
        pairs = [(r, s / grading.TOP) for r, s in zip(harvest["request"], harvest["score"])]
        rm = RewardModule(reward, lr=self.rm_lr, max_steps=rm_steps)
        _trainer(rm_steps, False).fit(rm, DataLoader(Endless(pairs, min(64, len(pairs)), seed), batch_size=None,
                                                      collate_fn=lambda b: b))
        fitted = reward.score([r for r, _ in pairs])
        rm_mse = sum((f - t) ** 2 for f, (_, t) in zip(fitted, pairs)) / len(pairs)
        # the policy: GRPO on the questions the attacker graded
        questions = sorted(set(harvest["question"]))
        module = GRPOModule(student, reward, self.group, self.beta, self.temperature, self.max_new_tokens,
                            self.max_candidate, lr=self.rl_lr, max_steps=rl_steps, seed=seed)
        loader = DataLoader(Endless(questions, min(self.questions, len(questions)), seed + 1), batch_size=None,
                            collate_fn=lambda b: b)
        student.model.train()
        _trainer(rl_steps, logger).fit(module, loader)
        student.model.eval()
        seconds = time.perf_counter() - t0
        first, last = module.rewards[: max(1, rl_steps // 10)], module.rewards[-max(1, rl_steps // 10):]
        log(f"reward: model fitted on {len(pairs):,} grades (train MSE {rm_mse:.3f}); {rl_steps} GRPO steps, "
            f"reward {sum(first) / len(first):.3f} -> {sum(last) / len(last):.3f} in {seconds:.0f} s")
        return {"steps": rl_steps, "rm_steps": rm_steps, "rm_mse": rm_mse, "tokens": module.tokens_seen,
                "seconds": seconds, "tokens_per_s": module.tokens_seen / max(seconds, 1e-9),
                "reward_start": sum(first) / len(first), "reward_end": sum(last) / len(last),
                "final_loss": math.nan, "train_exchanges": len(pairs)}
