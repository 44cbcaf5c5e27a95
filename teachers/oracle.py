"""An oracle teacher: the answer key, with a neural teacher's error rates, and no generation.

For runs where generation would dominate (detector calibration, incident-scale replays): the
world tells the oracle each request's problem as the actors send it (`watch`), and the oracle
answers with the problem's reference response (the rationale when asked for), or, with
probability 1 - acc[skill][difficulty] from a teacher card, a plausible wrong answer.
"""

from __future__ import annotations

import random

from sim.answers import plausible_wrong
from teachers.lm import Completion


class Oracle:
    def __init__(self, card: dict | None = None, seed: int = 0):
        self.acc = {s: {int(d): float(a) for d, a in by_d.items()} for s, by_d in (card or {}).items()}
        self.rng = random.Random(f"oracle-{seed}")
        self.answers: dict[str, str] = {}
        self.calls = 0

    def watch(self, *actors) -> None:
        """Wrap each actor's `requests` so the oracle learns the problem behind every text."""
        for actor in actors:
            inner = actor.requests

            def requests(tick, inner=inner):
                asks = inner(tick)
                for ask in asks:
                    self.answers[ask.text] = self._respond(ask.problem, ask.explain)
                return asks

            actor.requests = requests

    def _respond(self, problem, explain: bool) -> str:
        acc = self.acc.get(problem.skill, {}).get(problem.difficulty, 1.0)
        if self.rng.random() < acc:
            return problem.response(explain)
        wrong = plausible_wrong(problem.answer, problem.prompt, self.rng)
        return problem.response(explain).rsplit("#", 1)[0] + "#" + wrong

    def generate(self, prompts, *, max_new_tokens, logits_processors=(), top_k_logprobs=0, **_):
        self.calls += 1
        return [Completion(self.answers.get(p, "#?")) for p in prompts]
