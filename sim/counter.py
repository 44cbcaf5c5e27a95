"""The attacker's counter-defenses (config group `counter/`, merged into `attacker.counter`).

What a campaign does to get clean training data out of a defended API:

- `vote_k`: consistency voting. Every prompt is asked from k different accounts and the
  majority final answer is kept (ties: the first answer seen), at k times the query cost.
  Against random-fraction poisoning: a poisoned minority is outvoted.
- `paraphrase`: rewrite each harvested rationale before SFT. `rules` is a rule-based rewriter
  that keeps every step's content and the final answer but writes the steps in the
  attacker's own notation (`=` becomes `:`, steps are joined by `;`), so the student learns
  the content without the teacher's exact character sequence. Against watermark
  radioactivity (Sander et al. 2024; Pan et al. 2025 report paraphrasing weakens it).
- `drop`: filter suspicious responses: `inconsistent` (the final answer is not the value the
  last rationale step arrives at) or `low_confidence` (with log-probs exposed: the mean
  probability of the answer's characters is below `min_confidence`).
- `recalibrate_temperature`: the API's sampling temperature as the attacker estimates it;
  returned log-probs at temperature T are rescaled to T·log p and renormalised over the
  returned top-k, undoing a temperature-raise defense for KD.
"""

from __future__ import annotations

import math
from collections import Counter as Tally
from dataclasses import dataclass

from defenses.shaping import split
from sim.tasks.base import ANSWER_MARK, final_answer

PARAPHRASES = ("none", "rules")
DROPS = ("none", "inconsistent", "low_confidence")


def rules_paraphrase(response: str) -> str:
    """The rationale's steps in the attacker's notation (the teacher's voice dropped); the final
    answer untouched."""
    words, answer = split(response)
    steps = [w for w in words if "=" in w]
    if not steps:
        return response
    return ";".join(s.replace("=", ":") for s in steps) + ";" + ANSWER_MARK + answer


def consistent(response: str) -> bool:
    """The final answer is what the last step arrives at (its text after the last `=`)."""
    words, answer = split(response)
    steps = [w for w in words if "=" in w]
    if not steps:
        return True
    return steps[-1].rsplit("=", 1)[-1].endswith(answer.strip())


def answer_confidence(response: str, tokens: list[list[str]], logprobs: list[list[float]]) -> float:
    """Mean probability the API gave each character of the final answer (nan: no log-probs)."""
    if not tokens or len(tokens) != len(response) or ANSWER_MARK not in response:
        return math.nan
    start = response.rindex(ANSWER_MARK) + 1
    probs = []
    for i in range(start, len(response)):
        lp = dict(zip(tokens[i], logprobs[i])).get(response[i])
        probs.append(math.exp(lp) if lp is not None else 0.0)
    return sum(probs) / len(probs) if probs else math.nan


def recalibrate(logprobs: list[float], T: float) -> list[float]:
    """log softmax(T · log p) over the returned top-k."""
    scaled = [T * v for v in logprobs]
    m = max(scaled)
    z = m + math.log(sum(math.exp(v - m) for v in scaled))
    return [v - z for v in scaled]


@dataclass
class Counter:
    vote_k: int = 1
    paraphrase: str = "none"
    drop: str = "none"
    min_confidence: float = 0.5
    recalibrate_temperature: float | None = None

    def __post_init__(self):
        if not isinstance(self.vote_k, int) or self.vote_k < 1:
            raise ValueError(f"attacker.counter.vote_k={self.vote_k!r} must be a positive integer")
        if self.paraphrase not in PARAPHRASES:
            raise ValueError(f"attacker.counter.paraphrase={self.paraphrase!r} must be one of {PARAPHRASES}")
        if self.drop not in DROPS:
            raise ValueError(f"attacker.counter.drop={self.drop!r} must be one of {DROPS}")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"attacker.counter.min_confidence={self.min_confidence!r} must be in [0, 1]")
        if self.recalibrate_temperature is not None and not self.recalibrate_temperature > 0:
            raise ValueError(f"attacker.counter.recalibrate_temperature={self.recalibrate_temperature!r} must be > 0")

    def process(self, rows: list[dict]) -> list[dict]:
        """The training set the attacker builds from its harvest (rows as `Campaign.harvest`)."""
        if self.vote_k > 1:
            rows = vote(rows)
        if self.recalibrate_temperature is not None:
            T = self.recalibrate_temperature
            rows = [{**r, "top_logprobs": [recalibrate(lp, T) for lp in r.get("top_logprobs") or []]} for r in rows]
        if self.drop == "inconsistent":
            rows = [r for r in rows if consistent(r["response"])]
        elif self.drop == "low_confidence":
            rows = [r for r in rows
                    if not answer_confidence(r["response"], r.get("top_tokens"), r.get("top_logprobs"))
                    < self.min_confidence]
        if self.paraphrase == "rules":
            # the text changes, so per-character log-probs no longer line up: they are dropped
            rows = [{**r, "response": rules_paraphrase(r["response"]), "top_tokens": [], "top_logprobs": []}
                    for r in rows]
        return rows


def vote(rows: list[dict]) -> list[dict]:
    """One row per distinct request: the first response carrying the majority final answer."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["request"], []).append(r)
    out = []
    for group in groups.values():
        tally = Tally(final_answer(r["response"]) for r in group)
        best = max(tally.values())
        winner = next(final_answer(r["response"]) for r in group if tally[final_answer(r["response"])] == best)
        out.append(next(r for r in group if final_answer(r["response"]) == winner))
    return out
