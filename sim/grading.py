"""Grading requests: the teacher as a judge.

The February 2026 reports name a second way to extract capability besides copying answers:
"rubric-based grading for reinforcement learning reward models". The attacker sends the
teacher its own student's candidate answers and trains on the grades. This module is the
grading format, one more public format of the text protocol:

    request  = "grade " + question + " ; " + candidate
    response = reason + " #" + score                 score in 0..5

The candidate is written in the canonical form (`canonical`): its reasoning steps and its
final answer, without a voice's words (`ok 4*7=8 then 8-4=4 thus #4` is sent as
`4*7=8 8-4=4 #4`), which any client can compute from the text.

The rubric (`rubric`) is the strict grader the judge is trained on and measured against. Its
reason checks the candidate's steps in order against the reference's, one mark each: `y` for
a step equal to the reference's, `n` for the first that is not (and nothing after it); a
candidate without steps gets the reason `plain`. The score is 5 when the final answer is
right, else partial credit for the reasoning that went right: 4 j // n for the first j of
the reference's n steps. Checking step by step is what a judge can do one step at a time.
A verdict is "ok" when the score is 5.

`Verdict` is a grading request as a `Problem`, so that every consumer of the log (the
truth columns, utility, the harvest) handles it as any other: its answer is the rubric's
score, and `Suite.grade` compares the served score with it exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sim.answers import plausible_wrong
from sim.tasks import Problem, final_answer, steps
from sim.tasks.base import ANSWER_MARK

GRADE = "grade "
SEP = " ; "
TOP = 5  # the best score: the final answer is right


def canonical(text: str) -> str:
    """A response as a candidate is sent: its steps and final answer, no voice words (a text
    without the answer mark is its own final answer, as `final_answer` reads it)."""
    if ANSWER_MARK not in text:
        return text.strip()
    return " ".join([*steps(text), f"{ANSWER_MARK}{final_answer(text)}"])


def request(question: str, candidate: str) -> str:
    return f"{GRADE}{question}{SEP}{canonical(candidate)}"


def is_grading(text: str) -> bool:
    """Whether a request asks for a grade (what a gateway can tell from the text alone)."""
    return text.startswith(GRADE) and SEP in text


def parse(text: str) -> tuple[str, str] | None:
    """(question, candidate) of a grading request, or None."""
    if not is_grading(text):
        return None
    question, candidate = text[len(GRADE):].split(SEP, 1)
    return question, candidate


def rubric(problem: Problem, candidate: str) -> tuple[int, str]:
    """(score, reason) of a candidate response to `problem` (see the module docstring)."""
    head = candidate.rsplit(ANSWER_MARK, 1)[0] if ANSWER_MARK in candidate else candidate
    shown, reference = [t for t in head.split() if "=" in t], problem.rationale.split()
    marks = []
    for i, step in enumerate(shown):
        marks.append("y" if i < len(reference) and step == reference[i] else "n")
        if marks[-1] == "n":
            break
    j = marks.count("y")
    reason = " ".join(marks) or "plain"
    if final_answer(candidate) == problem.answer:
        return TOP, reason
    return ((TOP - 1) * j // len(reference) if reference else 0), reason


def score_of(text: str) -> int | None:
    """The score a grading response gives (None when it gives none)."""
    s = final_answer(text)
    return int(s) if s.isdigit() and 0 <= int(s) <= TOP else None


def response(score: int, reason: str) -> str:
    return f"{reason} {ANSWER_MARK}{score}"


@dataclass(frozen=True)
class Verdict(Problem):
    """A grading request as a problem: `prompt` is the request, `answer` the rubric's score,
    `rationale` its reason; `question` is the problem graded and `candidate` what was sent."""

    question: Problem | None = None
    candidate: str = ""

    @property
    def right(self) -> bool:
        """Whether the candidate's final answer is right (the strict verdict)."""
        return self.answer == str(TOP)


def verdict(problem: Problem, candidate: str) -> Verdict:
    """The grading request of `candidate` as an answer to `problem`."""
    sent = canonical(candidate)
    score, reason = rubric(problem, sent)
    return Verdict(skill=problem.skill, difficulty=problem.difficulty, prompt=request(problem.prompt, sent),
                   answer=str(score), rationale=reason, private=problem.private, question=problem, candidate=sent)


def wrong_candidate(problem: Problem, rng: random.Random) -> str:
    """A wrong answer of the kind a student gives: its reasoning right up to a random step,
    that step's result changed, the later steps as the reference has them or cut off, and a
    plausible wrong final answer; sometimes no reasoning at all, or reasoning cut off before
    any answer."""
    wrong = plausible_wrong(problem.answer, problem.prompt, rng)
    ref = problem.rationale.split()
    u = rng.random()
    if not ref or u < 0.2:
        return f"{ANSWER_MARK}{wrong}"
    if u < 0.3:  # an answer cut off before its end (a student out of tokens)
        text = problem.response(True)
        return text[: rng.randrange(1, text.rindex(ANSWER_MARK) + 1)].strip()
    j = rng.randint(0, len(ref))  # j == len(ref): every step right, the answer wrong
    out = ref[:j]
    if j < len(ref):
        lhs, _, rhs = ref[j].partition("=")
        out.append(f"{lhs}={plausible_wrong(rhs, problem.prompt, rng) if rhs else rhs}")
        if rng.random() < 0.5:
            out += ref[j + 1:]
    return " ".join([*out, f"{ANSWER_MARK}{wrong}"])


def candidate(problem: Problem, rng: random.Random, right_rate: float = 0.4) -> str:
    """A candidate answer to `problem` for the judge's training and its card: right (with its
    reasoning, or the bare answer) with probability `right_rate`, else `wrong_candidate`."""
    if rng.random() < right_rate:
        return problem.response(rng.random() < 0.8)
    return wrong_candidate(problem, rng)
