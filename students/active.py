"""Active selection: a query policy with the attacker's student in the loop.

Uncertainty sampling (Lewis & Gale 1994), as used by model-extraction attacks that pick
their queries with the substitute model (Papernot et al. 2017; Pal et al. 2020,
"ActiveThief"): the budget is spent in `rounds`. Round 1 asks random questions; before
each later round the in-loop student is trained (`steps` more optimiser steps on everything
harvested so far), a pool of `pool` x round-size candidate questions is drawn from the task
distribution, and the round asks the ones the student is least sure of:

- `confidence`: the lowest mean log-probability of the student's own greedy answer
  characters (what follows the answer mark);
- `disagreement`: the most distinct final answers among `samples` sampled answers.

The in-loop student is the attacker's working copy (a scratch student of the configured
shape); the run's student is still trained on the whole harvest afterwards.
"""

from __future__ import annotations

import math
from collections import deque

from sim.policies import Policy
from sim.records import rate
from sim.tasks.base import ANSWER_MARK, final_answer

CRITERIA = ("confidence", "disagreement")


class Active(Policy):
    def __init__(self, rounds: int = 4, pool: int = 4, criterion: str = "confidence", samples: int = 4,
                 steps: int = 200, n_layer: int = 2, n_embd: int = 96, n_head: int = 4, explain_rate: float = 1.0,
                 max_new_tokens: int = 96, seed: int = 0):
        for name, v in (("rounds", rounds), ("pool", pool), ("samples", samples), ("steps", steps),
                        ("n_layer", n_layer), ("n_embd", n_embd), ("n_head", n_head),
                        ("max_new_tokens", max_new_tokens)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"attacker.policy.{name}={v!r} must be a positive integer")
        if criterion not in CRITERIA:
            raise ValueError(f"attacker.policy.criterion={criterion!r} must be one of {CRITERIA}")
        self.rounds, self.pool, self.criterion, self.samples, self.steps = rounds, pool, criterion, samples, steps
        self.shape = (n_layer, n_embd, n_head)
        self.explain_rate = rate(explain_rate, "attacker.policy.explain_rate")
        self.seed, self.max_new_tokens = seed, max_new_tokens
        self.queue: deque = deque()
        self.data: list[tuple[str, str]] = []
        self.round = 0
        self.student = None

    def bind(self, suite, budget):
        super().bind(suite, budget)
        self.per_round = max(1, math.ceil(budget / self.rounds))

    def next(self, rng):
        if not self.queue:
            self.round += 1
            self.queue.extend(self.select(rng))
        return self.queue.popleft()

    def feedback(self, problem, explain, exchange, rng):
        if exchange.status == "served":
            self.data.append((problem.request(explain), exchange.response))

    # -- the student in the loop

    def candidates(self, rng, n: int) -> list:
        return [(self.suite.sample(rng), rng.random() < self.explain_rate) for _ in range(n)]

    def select(self, rng) -> list:
        if not self.data:  # nothing learned yet: a random round
            return self.candidates(rng, self.per_round)
        self.fit()
        pool = self.candidates(rng, self.pool * self.per_round)
        scores = self.uncertainty([p.request(e) for p, e in pool])
        order = sorted(range(len(pool)), key=lambda i: -scores[i])  # most uncertain first (stable)
        return [pool[i] for i in order[: self.per_round]]

    def fit(self) -> None:
        from students.distill import Recipe, train
        from students.scratch import Scratch

        if self.student is None:
            n_layer, n_embd, n_head = self.shape
            self.student = Scratch(n_layer=n_layer, n_embd=n_embd, n_head=n_head).build(self.seed)
        recipe = Recipe()
        examples = [recipe.example(self.student.tok, r, s) for r, s in self.data]
        train(self.student.model, examples, recipe, steps=self.steps, batch_size=64, lr=3e-3,
              seed=self.seed + self.round)

    def uncertainty(self, requests: list[str]) -> list[float]:
        """Higher = the student is less sure of its answer."""
        lm = self.student
        if self.criterion == "confidence":
            outs = lm.generate(requests, max_new_tokens=self.max_new_tokens, top_k_logprobs=1)
            scores = []
            for o in outs:
                start = o.text.rfind(ANSWER_MARK) + 1
                lps = [pos[0][1] for pos in (o.top_logprobs or [])[start:]]
                # no answer at all is the least sure
                scores.append(-sum(lps) / len(lps) if lps and start > 0 else math.inf)
            return scores
        answers = [set() for _ in requests]
        for s in range(self.samples):
            for i, o in enumerate(lm.generate(requests, max_new_tokens=self.max_new_tokens, temperature=1.0,
                                              seed=self.seed * 7919 + self.round * 101 + s)):
                answers[i].add(final_answer(o.text))
        return [float(len(a)) for a in answers]
