"""Response shaping: lower the extractive value of what the API returns, after generation.

Each option is off by default; the 2026 reports name "response shaping" without details, so
the options follow what providers and the anti-distillation literature describe:

- `hide_reasoning`: drop the rationale and return only the final answer: `never`, `always`,
  `elicited` (only when the request asked for the reasoning) or `flagged` (only for accounts
  a detector flagged, `ctx.flagged`). Legitimate users who asked for an explanation are then
  not served well (`utility/relative` counts it).
- `summarise_steps` k: keep the first k rationale steps ("summarised reasoning").
- `logprob_top_k`, `logprob_decimals`: when the API exposes per-token log-probabilities,
  keep only the top k and round them (what log-prob distillation can use).
- `temperature` T > 1: flatten the next-token distribution the API samples from and exposes
  log-probs of (a `TemperatureLogitsWarper`; greedy text is unchanged, exposed log-probs are
  flatter).
- `noise` p: each rationale step is corrupted (two characters swapped) with probability p;
  the final answer is kept, so answer-only users lose nothing.
- `grade_noise` σ and `grade_round` g, on grading requests (`sim.grading`): the 0-5 score is
  served as round(s + σ ε), ε ~ N(0, 1), clipped to 0..5, then floored to a multiple of g
  (the top score stays the top: g = 5 serves only ok/wrong, without the reason's partial
  credit). People who ask "is this right?" get the same grades.
"""

from __future__ import annotations

import random

from defenses.base import Defense
from sim.grading import TOP, is_grading, score_of
from sim.tasks import EXPLAIN
from sim.tasks.base import ANSWER_MARK
from teachers.lm import Completion

HIDE = ("never", "always", "elicited", "flagged")


def split(text: str) -> tuple[list[str], str]:
    """(rationale words, final answer) of a response; no mark: no words, the text is the answer.
    The words are the steps (`=` in them) and the model's voice between them."""
    if ANSWER_MARK not in text:
        return [], text
    head, answer = text.rsplit(ANSWER_MARK, 1)
    return head.split(), answer


def join(steps: list[str], answer: str) -> str:
    return (" ".join(steps) + " " if steps else "") + ANSWER_MARK + answer


def elicited(prompt: str) -> bool:
    """Whether a request asks for the reasoning (the marker may sit after a chatty prefix)."""
    return prompt.startswith(EXPLAIN) or f" {EXPLAIN}" in prompt


class Shaping(Defense):
    def __init__(self, hide_reasoning: str = "never", summarise_steps: int | None = None,
                 logprob_top_k: int | None = None, logprob_decimals: int | None = None,
                 temperature: float = 1.0, noise: float = 0.0, grade_noise: float = 0.0, grade_round: int = 1,
                 seed: int = 0):
        if hide_reasoning not in HIDE:
            raise ValueError(f"defense.shaping.hide_reasoning={hide_reasoning!r} must be one of {HIDE}")
        for k, v in (("summarise_steps", summarise_steps), ("logprob_top_k", logprob_top_k),
                     ("logprob_decimals", logprob_decimals)):
            if v is not None and (not isinstance(v, int) or v < (1 if k == "logprob_top_k" else 0)):
                raise ValueError(f"defense.shaping.{k}={v!r} must be a non-negative integer (or null)")
        if not temperature > 0:
            raise ValueError(f"defense.shaping.temperature={temperature!r} must be > 0")
        if not 0 <= noise <= 1:
            raise ValueError(f"defense.shaping.noise={noise!r} must be in [0, 1]")
        if isinstance(grade_noise, bool) or not isinstance(grade_noise, (int, float)) or not 0 <= grade_noise <= 10:
            raise ValueError(f"defense.shaping.grade_noise={grade_noise!r} must be in [0, 10] (score points)")
        if not isinstance(grade_round, int) or isinstance(grade_round, bool) or not 1 <= grade_round <= TOP:
            raise ValueError(f"defense.shaping.grade_round={grade_round!r} must be an integer in 1..{TOP}")
        self.grade_noise, self.grade_round = float(grade_noise), grade_round
        self.hide_reasoning, self.summarise_steps = hide_reasoning, summarise_steps
        self.logprob_top_k, self.logprob_decimals = logprob_top_k, logprob_decimals
        self.temperature, self.noise = float(temperature), float(noise)
        self.rng = random.Random(f"shaping-{seed}")

    def logits_processors(self) -> list:
        if self.temperature == 1.0:
            return []
        from transformers import TemperatureLogitsWarper

        return [TemperatureLogitsWarper(self.temperature)]

    def _hide(self, request, ctx) -> bool:
        return {"never": False, "always": True, "elicited": elicited(request.prompt),
                "flagged": request.account.id in ctx.flagged}[self.hide_reasoning]

    def shape(self, request, completion, ctx):
        if (self.grade_noise or self.grade_round > 1) and is_grading(request.prompt):
            completion = self._grade(completion)
        steps, answer = split(completion.text)
        if self._hide(request, ctx):
            steps = []
        if self.summarise_steps is not None:  # the words up to the k-th step
            at = [i for i, w in enumerate(steps) if "=" in w]
            steps = steps[: at[self.summarise_steps - 1] + 1] if 0 < self.summarise_steps <= len(at) else (
                steps if self.summarise_steps else [])
        if self.noise:
            steps = [self._corrupt(s) if "=" in s and self.rng.random() < self.noise else s for s in steps]
        tops = completion.top_logprobs
        if tops is not None and (self.logprob_top_k is not None or self.logprob_decimals is not None):
            k = self.logprob_top_k or None
            d = self.logprob_decimals
            tops = [[(t, round(v, d) if d is not None else v) for t, v in pos[:k]] for pos in tops]
        if ANSWER_MARK in completion.text:
            text = join(steps, answer)
        else:  # cut off before the answer, or a model that never marks one: all of it is reasoning
            text = "" if self._hide(request, ctx) else completion.text
        if text == completion.text and tops is completion.top_logprobs:
            return completion
        # log-probs of dropped text no longer line up with it: an API would not return them
        if text != completion.text:
            tops = None
        return Completion(text, tops, {**completion.meta, "shaped": True})

    def _grade(self, completion):
        score = score_of(completion.text)
        if score is None:
            return completion
        served = score
        if self.grade_noise:
            served = min(TOP, max(0, round(score + self.rng.gauss(0.0, self.grade_noise))))
        if served < TOP:
            served -= served % self.grade_round
        if served == score and self.grade_round == 1:
            return completion
        # a changed or coarsened score cannot keep a reason that tells more than it does
        reason = "right" if served == TOP else "wrong"
        return Completion(f"{reason} {ANSWER_MARK}{served}", None, {**completion.meta, "shaped": True})

    def _corrupt(self, step: str) -> str:
        if len(step) < 2:
            return step
        i = self.rng.randrange(len(step) - 1)
        return step[:i] + step[i + 1] + step[i] + step[i + 2:]
