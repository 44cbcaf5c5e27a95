"""Antidistillation sampling, as a logits processor on the teacher.

Savani, Trockman, Feng, Schwarzschild, Robey, Finzi and Kolter (2025), "Antidistillation
Sampling". The teacher's next-token scores are adjusted by how much training a proxy
student on each candidate token would *raise* that student's downstream loss:

    score'(x | x_<t) = score(x | x_<t) + λ Δ(x | x_<t)
    Δ(x | x_<t) = [log p_{θ_P + ε g}(x | x_<t) - log p_{θ_P}(x | x_<t)] / ε,   g = ∇_θ ℓ(θ_P)

Δ is the finite-difference estimate of <∇ℓ(θ_P), ∇ log p_{θ_P}(x | x_<t)>: the first-order
change in the proxy's downstream loss ℓ if it took a gradient step on token x. λ > 0 favours
tokens that poison a student; ε is the finite-difference step.

The proxy θ_P is a small char GPT trained here on the task distribution (`proxy_steps`
steps, never on held-out prompts); the downstream loss ℓ is its next-token loss on the
explained responses to `downstream` fresh problems, the capability an attacker wants. It reads
every sequence the teacher can write (`n_positions`, the teacher's context): at large λ the
teacher's answers run long, past the context of a proxy sized for the tasks alone.
"""

from __future__ import annotations

import random

import torch
from transformers import LogitsProcessor

from defenses.base import Defense
from sim.tasks import Voice
from teachers.vocab import PAD, collate


class AntidistillProcessor(LogitsProcessor):
    def __init__(self, proxy, perturbed, lam: float, eps: float, batch: dict):
        self.proxy, self.perturbed, self.lam, self.eps = proxy, perturbed, lam, eps
        self.batch = batch  # the downstream data ℓ is measured on

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = (input_ids != PAD).long()  # left padding, and the pad after a finished sequence
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        lp = [m(input_ids=input_ids, attention_mask=mask, position_ids=pos).logits[:, -1].float().log_softmax(-1)
              for m in (self.proxy, self.perturbed)]
        delta = (lp[1] - lp[0]) / self.eps
        return scores + self.lam * delta.to(scores.dtype)


class Antidistill(Defense):
    def __init__(self, suite, lam: float = 1.0, eps: float = 1e-3, proxy_layers: int = 1, proxy_embd: int = 64,
                 proxy_steps: int = 300, downstream: int = 64, n_positions: int = 192, seed: int = 0, voice=None):
        if not lam >= 0:
            raise ValueError(f"defense.antidistill.lam={lam!r} must be >= 0")
        if not eps > 0:
            raise ValueError(f"defense.antidistill.eps={eps!r} must be > 0")
        for k, v in (("proxy_layers", proxy_layers), ("proxy_embd", proxy_embd), ("proxy_steps", proxy_steps),
                     ("downstream", downstream), ("n_positions", n_positions)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"defense.antidistill.{k}={v!r} must be a positive integer")
        if proxy_embd % 2:
            raise ValueError(f"defense.antidistill.proxy_embd={proxy_embd} must be even (2 heads)")
        self.suite, self.lam, self.eps = suite, float(lam), float(eps)
        self.proxy_layers, self.proxy_embd, self.proxy_steps = proxy_layers, proxy_embd, proxy_steps
        self.downstream, self.n_positions, self.seed = downstream, n_positions, seed
        # the proxy speaks the teacher's voice: its gradient is taken on text like the teacher's
        self.voice = Voice(**{k: tuple(v) for k, v in dict(voice or {}).items()})
        self._processor = None

    def _build(self) -> AntidistillProcessor:
        """Train the proxy, take the gradient of its downstream loss, perturb a copy by ε g."""
        import copy

        from teachers.char_gpt import CharGPT

        spec = CharGPT(n_layer=self.proxy_layers, n_embd=self.proxy_embd, n_head=2, n_positions=self.n_positions,
                       steps=self.proxy_steps, batch_size=32, seed=self.seed, voice={k: list(getattr(self.voice, k))
                                                              for k in ("open", "connect", "close")})
        proxy, _ = spec.train(self.suite)
        rng = random.Random(f"antidistill-downstream-{self.seed}")
        problems = [self.suite.sample(rng) for _ in range(self.downstream)]
        batch = collate([proxy.tok.pair_ids(p.request(True), p.response(True, self.voice, rng)) for p in problems])
        model = proxy.model
        model.zero_grad()
        model.train()
        model(**batch).loss.backward()
        model.eval()
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            for p, q in zip(model.parameters(), perturbed.parameters()):
                if p.grad is not None:
                    q.add_(self.eps * p.grad)
        model.zero_grad()
        return AntidistillProcessor(model, perturbed, self.lam, self.eps, batch)

    def logits_processors(self) -> list:
        if self.lam == 0:
            return []
        if self._processor is None:
            self._processor = self._build()
        return [self._processor]
