"""Grader harvesting: a query policy that uses the teacher as a judge, not as a source of answers.

The February 2026 reports describe a campaign focused on "rubric-based grading for
reinforcement learning reward models": the attacker sends the teacher its own student's
candidate answers and trains on the grades. `Judge` does that with any campaign (naive,
hydra, router). The budget is spent in `rounds`; each round, for fresh questions of the task
distribution, the attacker's working student samples `k` candidate answers (at
`temperature`), and each distinct candidate is sent as a grading request (`sim.grading`),
one query each. Before every round after the first, the working student is trained on the
grades so far with the run's own recipe (`students.rl`: `best_of_k` fine-tunes on the
accepted candidates, `reward` fits a reward model and takes GRPO steps), so later rounds
sample from a better student (expert iteration). The run's student is then trained the same
way, from its base, on every grade harvested.

The working student starts as the run's student does (`student`: its base); a candidate
whose reasoning is longer than `max_candidate` characters loses the steps past it (the
attacker trims runaway samples to what the API accepts; the final answer is kept).
"""

from __future__ import annotations

import math
from collections import deque

from sim import grading
from sim.policies import Policy
from sim.tasks.base import ANSWER_MARK


class Judge(Policy):
    grades = True

    def __init__(self, student=None, k: int = 4, rounds: int = 4, temperature: float = 1.0, explain: bool = True,
                 steps: int = 300, max_new_tokens: int = 96, max_candidate: int = 96, seed: int = 0,
                 cache_dir: str | None = None):
        from students.distill import Student

        if not isinstance(student, Student):
            raise ValueError(f"attacker.policy.student={student!r}: policy=judge samples candidates from the "
                             "attacker's student (a student config with weights, not student=none)")
        if not getattr(student.recipe, "graded", False):
            raise ValueError(f"student.recipe={type(student.recipe).__name__}: policy=judge harvests grades, not "
                             "answers; use recipe=best_of_k or recipe=reward")
        for name, v in (("k", k), ("rounds", rounds), ("steps", steps), ("max_new_tokens", max_new_tokens),
                        ("max_candidate", max_candidate)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"attacker.policy.{name}={v!r} must be a positive integer")
        if not temperature > 0:
            raise ValueError(f"attacker.policy.temperature={temperature!r} must be > 0 (k greedy samples are one)")
        self.student, self.k, self.rounds, self.temperature = student, k, rounds, float(temperature)
        self.explain, self.steps, self.max_new_tokens = bool(explain), steps, max_new_tokens
        self.max_candidate, self.seed, self.cache_dir = max_candidate, seed, cache_dir
        self.queue: deque = deque()
        self.rows: list[dict] = []  # every grade received: what the working student learns from
        self.seen: set[str] = set()  # every grading request made
        self.issued = self.answered = 0
        self.round = 0
        self.model = None
        self.stats: list[dict] = []

    def bind(self, suite, budget):
        super().bind(suite, budget)
        self.per_round = max(1, math.ceil(budget / self.rounds))

    def ready(self) -> bool:
        return bool(self.queue) or self.answered == self.issued

    def next(self, rng):
        if not self.queue:
            self.round += 1
            self.queue.extend(self.select(rng))
        self.issued += 1
        return self.queue.popleft()

    def render(self, problem, explain, rng):
        return problem.prompt  # the grading request, exactly as the format asks

    def columns(self, problem, exchange) -> dict:
        score = grading.score_of(exchange.response)
        return {"question": problem.question.request(self.explain), "candidate": problem.candidate,
                "score": -1 if score is None else score}

    def feedback(self, problem, explain, exchange, rng):
        self.answered += 1
        if exchange.status == "served":
            self.rows.append({"request": problem.prompt, "response": exchange.response,
                              **self.columns(problem, exchange)})

    # -- the working student

    def select(self, rng) -> list:
        """This round's grading requests: distinct candidates of fresh questions."""
        if self.model is None:
            from sim.records import ROOT

            cache = self.cache_dir or str(ROOT / ".cache" / "teachers")  # as the run's own student
            self.model = self.student.build(self.seed, self.suite, cache, log=lambda *a: None)
        elif self.rows:
            self.fit()
        out, tries = [], 0
        while len(out) < self.per_round and tries < 50:  # a student that keeps repeating itself stops
            need = math.ceil((self.per_round - len(out)) / self.k)
            questions = [self.suite.sample(rng) for _ in range(need)]
            outs = self.model.generate([q.request(self.explain) for q in questions for _ in range(self.k)],
                                       max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                       seed=(self.seed * 1_000 + self.round) * 1_000 + tries)
            tries += 1
            for i, o in enumerate(outs):
                v = grading.verdict(questions[i // self.k], cut(grading.canonical(o.text), self.max_candidate))
                if v.prompt not in self.seen:  # the same candidate is graded once
                    self.seen.add(v.prompt)
                    out.append((v, False))
        if not out:
            raise RuntimeError("policy=judge: the working student gave no new candidate in 50 samplings")
        return out[: self.per_round]

    def fit(self) -> None:
        import datasets

        spec = self.student
        harvest = spec.recipe.select(datasets.Dataset.from_list(self.rows))
        if len(harvest) == 0:
            return
        model = spec.prepare(self.model)
        stats = spec.recipe.fit(spec, model, harvest, self.seed + self.round, suite=self.suite,
                                log=lambda *a: None, steps=self.steps)
        self.model = spec.finish(model)
        self.stats.append({"round": self.round, "rows": len(harvest), "steps": stats.get("steps", 0)})


def cut(candidate: str, limit: int) -> str:
    """A canonical candidate within `limit` characters: its steps past the limit dropped, its
    final answer kept."""
    if len(candidate) <= limit or ANSWER_MARK not in candidate:
        return candidate[:limit]
    head, answer = candidate.rsplit(ANSWER_MARK, 1)
    tail, kept = f"{ANSWER_MARK}{answer}"[:limit], []
    for step in head.split():
        if len(" ".join([*kept, step, tail])) > limit:
            break
        kept.append(step)
    return " ".join([*kept, tail])
