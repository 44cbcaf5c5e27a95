"""Output poisoning: plausible wrong answers, with a rationale that agrees with them.

After Orekondy et al. (2020), "Prediction Poisoning: Towards Defenses Against DNN Model
Stealing Attacks", which perturbs the returned outputs to mislead the extractor's training
at a bounded cost to honest users. Here the perturbation is on text: the final answer is
replaced by a wrong one of the same form (another digit, another name from the question,
another city, one argument of a tool call changed, a near-miss string) and the rationale's
last step is rewritten to match, so the poison cannot be filtered by checking consistency.

`target`: `flagged` (only accounts a detector flagged, `ctx.flagged`) or `random` (each
response with probability `fraction`, whoever asked). A legitimate user who is flagged, or
unlucky, is harmed: `utility/relative` counts every poisoned answer as not served.
"""

from __future__ import annotations

import random
import re

from defenses.base import Defense
from defenses.shaping import join, split
from sim.tasks import kb as kb_task
from sim.tasks import tool as tool_task
from teachers.lm import Completion

TARGETS = ("flagged", "random")
_VOCABS = (kb_task.CITIES, kb_task.JOBS, kb_task.PETS, tool_task.CITIES)


def plausible_wrong(answer: str, prompt: str, rng: random.Random) -> str:
    """A wrong answer of the same form as `answer`."""
    if answer.isdigit():
        return str((int(answer) + rng.randint(1, 9)) % 10 ** len(answer)).zfill(len(answer))
    call = re.fullmatch(r"(\w+)\((.*)\)", answer)
    if call and call.group(2):
        args = call.group(2).split(",")
        i = rng.randrange(len(args))
        args[i] = plausible_wrong(args[i], prompt, rng)
        return f"{call.group(1)}({','.join(args)})"
    for vocab in _VOCABS:
        if answer in vocab:
            return rng.choice([v for v in vocab if v != answer])
    # another name of the same shape from the question (a table row, a person)
    names = sorted({t for t in re.findall(r"[a-z]+", prompt) if len(t) == len(answer) and t != answer})
    if names:
        return rng.choice(names)
    if len(set(answer)) > 1:  # a near miss: two different letters swapped
        chars = list(answer)
        while "".join(chars) == answer:
            i, j = rng.sample(range(len(chars)), 2)
            chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    return answer + answer[-1:]


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
        steps, answer = split(completion.text)
        answer = answer.strip()
        wrong = plausible_wrong(answer, request.prompt, self.rng)
        last = max((i for i, w in enumerate(steps) if "=" in w), default=None)
        if last is not None and answer and answer in steps[last]:  # the last step states the answer: agree with the lie
            i = steps[last].rfind(answer)
            steps[last] = steps[last][:i] + wrong + steps[last][i + len(answer):]
        return Completion(join(steps, wrong), None, {**completion.meta, "poisoned": True})
