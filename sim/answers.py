"""Wrong answers of the same form as a right one: what a poisoned response or an imperfect
teacher says instead (another digit, another name from the question, another city, one
argument of a tool call changed, a near-miss string). A contract below the teachers and the
defenses, which both use it.
"""

from __future__ import annotations

import random
import re

from sim.tasks import kb as kb_task
from sim.tasks import tool as tool_task

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
