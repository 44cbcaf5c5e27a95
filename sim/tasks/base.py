"""The skill contract: `sample(rng, difficulty) -> Problem`, `grade(problem, text) -> bool`.

Every skill renders to the same text protocol, which the teacher is trained on and every
student learns from:

    request  = [EXPLAIN] + question          (EXPLAIN asks for the reasoning)
    response = rationale + " #" + answer     (explained)
             | "#" + answer                  (plain)

An explained response is phrased in a model's `Voice`: words that open it, connect its steps
and close it, sampled from a few equally good choices. The plain voice (no words) is the bare
format above; the teacher's voice is its own (`teacher.voice`), so its outputs carry entropy a
watermark can mark and a student's learned phrasing is a provenance signal.

Every skill has *public* cells (procedures and knowledge any open base model has) and
*private* ones (`Problem.private`): variants built from the public primitives that only the
teacher was trained on, learnable from tens of worked examples and otherwise unguessable.
They are the capability distillation can steal.

The grader reads the final answer after the last "#" (or the whole text when a student
dropped the marker) and compares it exactly: answers are machine-checkable strings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

EXPLAIN = "why "
ANSWER_MARK = "#"
MIN_DIFFICULTY, MAX_DIFFICULTY = 1, 5


@dataclass(frozen=True)
class Problem:
    skill: str
    difficulty: int
    prompt: str  # the question, without the explain marker
    answer: str
    rationale: str
    facts: tuple[str, ...] = ()  # knowledge-base facts the problem depends on (kb only)
    private: bool = False  # a private variant: only the teacher was trained on it

    def request(self, explain: bool) -> str:
        return (EXPLAIN if explain else "") + self.prompt

    def response(self, explain: bool, voice: Voice | None = None, rng: random.Random | None = None) -> str:
        if explain:
            if voice is not None and voice.words:
                return voice.render(self.rationale, self.answer, rng)
            return f"{self.rationale} {ANSWER_MARK}{self.answer}"
        return f"{ANSWER_MARK}{self.answer}"


@dataclass(frozen=True)
class Voice:
    """How a model phrases an explained response: one word of `open` before the first step,
    one of `connect` between two steps, one of `close` after the last, each drawn uniformly.

        ok 4*7=8 then 8-4=4 thus #4

    Voice words never contain `=`: a step is a token with `=` in it (`steps`), so graders,
    shaping and poisoning find the reasoning whatever the phrasing."""

    open: tuple[str, ...] = ()
    connect: tuple[str, ...] = ()
    close: tuple[str, ...] = ()

    def __post_init__(self):
        for part in ("open", "connect", "close"):
            words = tuple(str(w) for w in getattr(self, part))
            for w in words:
                if not w or "=" in w or ANSWER_MARK in w or " " in w:
                    raise ValueError(f"voice.{part} word {w!r} must be one non-empty word without '=' or "
                                     f"{ANSWER_MARK!r}")
            object.__setattr__(self, part, words)

    @property
    def words(self) -> bool:
        return bool(self.open or self.connect or self.close)

    def render(self, rationale: str, answer: str, rng: random.Random) -> str:
        out = [rng.choice(self.open)] if self.open else []
        for i, step in enumerate(rationale.split()):
            if i and self.connect:
                out.append(rng.choice(self.connect))
            out.append(step)
        if self.close:
            out.append(rng.choice(self.close))
        return " ".join(out) + f" {ANSWER_MARK}{answer}"


def steps(text: str) -> list[str]:
    """The reasoning steps of a response: its tokens with `=` before the answer mark."""
    head = text.rsplit(ANSWER_MARK, 1)[0] if ANSWER_MARK in text else ""
    return [t for t in head.split() if "=" in t]


def shows_reasoning(problem: Problem, text: str) -> bool:
    """Whether `text` shows every step of the problem's rationale, in order (in any voice)."""
    pos = 0
    for step in problem.rationale.split():
        i = text.find(step, pos)
        if i < 0:
            return False
        pos = i + len(step)
    return True


def final_answer(text: str) -> str:
    """The final answer of a response: what follows the last answer mark, stripped."""
    return text.rsplit(ANSWER_MARK, 1)[-1].strip()


def check_difficulty(difficulty: int) -> int:
    if not isinstance(difficulty, int) or not MIN_DIFFICULTY <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(
            f"difficulty={difficulty!r} is out of range: must be an integer in "
            f"{MIN_DIFFICULTY}..{MAX_DIFFICULTY}"
        )
    return difficulty


class Skill:
    """Base class: subclasses set `name` and implement `_sample` (public and private variants)."""

    name: str = ""

    def sample(self, rng: random.Random, difficulty: int, private: bool = False) -> Problem:
        return self._sample(rng, check_difficulty(difficulty), bool(private))

    def _sample(self, rng: random.Random, difficulty: int, private: bool) -> Problem:
        raise NotImplementedError

    def grade(self, problem: Problem, text: str) -> bool:
        return final_answer(text) == problem.answer

    def documents(self, rng: random.Random, private: bool) -> list[tuple[str, str]]:
        """The skill's corpus as (request, response) pairs: training text that is not a
        question of the task distribution (the knowledge base's records), of the public world
        (any base model's) or the private one (the teacher's). Empty for skills whose
        capability is a procedure rather than knowledge."""
        return []
