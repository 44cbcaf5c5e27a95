"""Output poisoning: plausible wrong answers, with a rationale that agrees with them.

After Orekondy et al. (2020), "Prediction Poisoning: Towards Defenses Against DNN Model
Stealing Attacks", which perturbs the returned outputs to mislead the extractor's training
at a bounded cost to honest users. Here the perturbation is on text: the final answer is
replaced by a wrong one of the same form (another digit, another name from the question,
another city, one argument of a tool call changed, a near-miss string) and the rationale's
last step is rewritten to match, so the poison cannot be filtered by checking consistency.
A grade (`sim.grading`) is flipped: a right candidate is told it is wrong and a wrong one right.

`target`: `flagged` (only accounts a detector flagged, `ctx.flagged`) or `random` (each
response with probability `fraction`, whoever asked). A legitimate user who is flagged, or
unlucky, is harmed: `utility/relative` counts every poisoned answer as not served.
"""

from __future__ import annotations

import random

from defenses.base import Defense
from defenses.shaping import join, split
from sim.answers import plausible_wrong
from sim.grading import TOP, is_grading, score_of
from sim.tasks.base import ANSWER_MARK
from teachers.lm import Completion

TARGETS = ("flagged", "random")


class Poison(Defense):
    def __init__(self, target: str = "flagged", fraction: float = 1.0, seed: int = 0):
        if target not in TARGETS:
            raise ValueError(f"defense.poison.target={target!r} must be one of {TARGETS}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"defense.poison.fraction={fraction!r} must be in [0, 1]")
        self.target, self.fraction = target, float(fraction)
        self.rng = random.Random(f"poison-{seed}")

    def shape(self, request, completion, ctx):
        if self.target == "flagged" and request.account.id not in ctx.flagged:
            return completion
        if self.rng.random() >= self.fraction:
            return completion
        if is_grading(request.prompt):  # a grade: the opposite verdict
            score = score_of(completion.text)
            if score is None:
                return completion
            flipped = 0 if score == TOP else TOP
            return Completion(f"{'right' if flipped == TOP else 'wrong'} {ANSWER_MARK}{flipped}", None,
                              {**completion.meta, "poisoned": True})
        steps, answer = split(completion.text)
        answer = answer.strip()
        wrong = plausible_wrong(answer, request.prompt, self.rng)
        last = max((i for i, w in enumerate(steps) if "=" in w), default=None)
        if last is not None and answer and answer in steps[last]:  # the last step states the answer: agree with the lie
            i = steps[last].rfind(answer)
            steps[last] = steps[last][:i] + wrong + steps[last][i + len(answer):]
        return Completion(join(steps, wrong), None, {**completion.meta, "poisoned": True})
