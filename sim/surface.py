"""How a request is written, and what a follow-up turn asks: the organic texture of traffic.

Organic users make typos, wrap questions in chatty templates and ask follow-ups; automated
campaigns send clean, uniformly formatted prompts and rarely pivot (the 2026 reports). The
same functions serve legitimate personas and the `evasive` query policy, which imitates them.

Typos touch only the command word and the spacing, never an operand: the question keeps its
ground-truth answer, so grading stays exact while the surface looks human.
"""

from __future__ import annotations

import random

from sim.tasks import EXPLAIN, Problem, Suite

PREFIXES = ("pls ", "hey ", "q: ", "ok ", "hi, ")
SUFFIXES = (" ?", " pls", " thx", "!", " ??")


def typo(text: str, rng: random.Random) -> str:
    """One human slip: two letters of the command word swapped, or a doubled space."""
    body = text[len(EXPLAIN):] if text.startswith(EXPLAIN) else text
    head = text[: len(text) - len(body)]
    word, sep, rest = body.partition(" ")
    if len(word) >= 2 and rng.random() < 0.6:
        i = rng.randrange(len(word) - 1)
        word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        return head + word + sep + rest
    spaces = [i for i, c in enumerate(text) if c == " "]
    if not spaces:
        return text
    i = rng.choice(spaces)
    return text[:i] + " " + text[i:]


def template(text: str, rng: random.Random) -> str:
    """A chatty wrapper: a greeting before, or a tag after, the question."""
    if rng.random() < 0.5:
        return rng.choice(PREFIXES) + text
    return text + rng.choice(SUFFIXES)


def render(problem: Problem, explain: bool, rng: random.Random, typo_rate: float = 0.0,
           template_rate: float = 0.0) -> str:
    text = problem.request(explain)
    if template_rate and rng.random() < template_rate:
        text = template(text, rng)
    if typo_rate and rng.random() < typo_rate:
        text = typo(text, rng)
    return text


def followup(suite: Suite, problem: Problem, explain: bool, answer: str,
             rng: random.Random) -> tuple[Problem, bool] | None:
    """The natural next turn after `problem` was answered with `answer`, or None.

    A plain answer invites "why?" (the same question, now asking for the reasoning). A
    knowledge question whose answer names a person invites the next hop about that person:
    the multi-turn way to walk the knowledge graph one fact at a time, built from what the
    teacher actually said (a wrong hop leads the conversation astray, as it would).
    """
    if not explain:
        return problem, True
    if problem.skill == "kb":
        nxt = kb_question(suite, answer, rng.choice(("city", "job", "pet", "boss")))
        if nxt is not None:
            return nxt, explain
    return None


def kb_question(suite: Suite, person: str, attr: str) -> Problem | None:
    """The one-hop question `kb <person> <attr>` with its ground truth from the world the person
    lives in (private or public); None when `person` is in neither (a wrong hop) or the
    question is a held-out prompt."""
    kb = suite.skills.get("kb")
    if kb is None:
        return None
    private = person in kb.world
    record = kb.world.get(person) if private else kb.public_world.get(person)
    if record is None:
        return None
    fact = f"{person}.{attr}={record[attr]}"
    problem = Problem("kb", 1, f"kb {person} {attr}", record[attr], fact, (fact,), private=private)
    return None if problem.prompt in suite.eval_prompts else problem
