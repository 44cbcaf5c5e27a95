"""A reference-guided judge: the teacher grades by solving the question itself.

Reference-guided grading after Zheng et al. (2023), "Judging LLM-as-a-Judge with MT-Bench and
Chatbot Arena": the judge first writes its own reference solution, then grades the candidate
against it. Here the teacher answers the graded question with its reasoning (a hidden
generation, in the same batch as the tick's other requests) and the rubric of
`sim.grading` compares the candidate with that solution: the served response is the rubric's
step marks and score, as the format asks. A judge is then exactly as good as the teacher is
at the question; a teacher fine-tuned to emit grades directly (`teachers.judge`) has to
verify each step without writing it, which a 0.8M-parameter model does poorly (its card).

`ReferenceJudge` is the teacher config (`teacher=reference_judge`): the default teacher's
config and weights (the same hash: the shipped teacher), served through `Grader`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim import grading
from sim.tasks import EXPLAIN, Problem, Suite, final_answer, steps
from teachers.char_gpt import CharGPT
from teachers.lm import CharLM, Completion


class Grader:
    """A teacher that answers grading requests by reference-guided grading and every other
    request as the teacher does; everything else is the wrapped model's."""

    def __init__(self, lm: CharLM):
        self.lm = lm

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def generate(self, prompts: list[str], *, max_new_tokens: int, logits_processors=(), top_k_logprobs: int = 0,
                 **kw) -> list[Completion]:
        asked = [grading.parse(p) for p in prompts]
        # one batch: the plain requests and a solve request per grading request
        calls = [EXPLAIN + a[0] if a is not None else p for p, a in zip(prompts, asked)]
        outs = self.lm.generate(calls, max_new_tokens=max_new_tokens, logits_processors=logits_processors,
                                top_k_logprobs=top_k_logprobs, **kw)
        return [o if a is None else self.grade(a[0], a[1], o.text) for a, o in zip(asked, outs)]

    @staticmethod
    def grade(question: str, candidate: str, solution: str) -> Completion:
        reference = Problem("", 1, question, final_answer(solution), " ".join(steps(solution)))
        score, reason = grading.rubric(reference, candidate)
        return Completion(grading.response(score, reason), None, {"graded": True})


@dataclass
class ReferenceJudge(CharGPT):
    """The teacher of `CharGPT` (same fields, same hash, same weights), grading by reference."""

    def serve(self, lm: CharLM, card: dict, suite: Suite) -> tuple[Grader, dict]:
        grader = Grader(lm)
        if "judge" not in card:
            from teachers.judge import judge_card

            card = {**card, "judge": judge_card(grader, suite, self.max_new_tokens)}
        return grader, card
