"""The skill contract: `sample(rng, difficulty) -> Problem`, `grade(problem, text) -> bool`.

Every skill renders to the same text protocol, which the teacher is trained on and every
student learns from:

    request  = [EXPLAIN] + question          (EXPLAIN asks for the reasoning)
    response = rationale + " #" + answer     (explained)
             | "#" + answer                  (plain)

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

    def request(self, explain: bool) -> str:
        return (EXPLAIN if explain else "") + self.prompt

    def response(self, explain: bool) -> str:
        if explain:
            return f"{self.rationale} {ANSWER_MARK}{self.answer}"
        return f"{ANSWER_MARK}{self.answer}"


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
    """Base class: subclasses set `name` and implement `_sample`."""

    name: str = ""

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        return self._sample(rng, check_difficulty(difficulty))

    def _sample(self, rng: random.Random, difficulty: int) -> Problem:
        raise NotImplementedError

    def grade(self, problem: Problem, text: str) -> bool:
        return final_answer(text) == problem.answer

    def documents(self, rng: random.Random) -> list[tuple[str, str]]:
        """The skill's private corpus as (request, response) pairs: text the teacher is trained
        on that is not a question of the task distribution (the knowledge base's records).
        Empty for skills whose capability is a procedure rather than knowledge."""
        return []
