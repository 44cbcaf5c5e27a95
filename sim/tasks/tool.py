"""Tool use: turn a booking request into one exact structured call.

Stands in for agentic tool use. The request names slots in any order and in surface forms
("at 5pm", "on tue", "first class"); the call lists them in the tool's canonical order with
normalised values. Difficulty sets how many slots the request fills. Every slot has several
surface forms: with one form per day and per cabin class, a one-slot request had 3 forms for
the class, and the held-out draw (a quarter of that cell's prompts) once took all three, so
the teacher never saw a one-slot class request (teacher af5ee53f: 0.84 at difficulty 1).

    tool for 2 to rome at 5pm   ->  city=rome n=2 time=17 #book(rome,2,17)

Private variant: the teacher's own `cargo` tool, whose schema lists the arguments in reverse
order and codes a city by its first and last letters.

    tool cargo for 2 to rome at 5pm   ->  city=re n=2 time=17 #cargo(17,2,re)
"""

from __future__ import annotations

import random

from sim.tasks.base import Problem, Skill

CITIES = ("oslo", "rome", "lima", "kyiv", "doha", "baku", "riga", "bern", "graz", "pisa", "cork", "nice",
          "kiel", "linz", "metz", "lyon", "bonn", "gent", "turku", "split", "porto", "malmo", "basel", "perth")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLASSES = ("first", "business", "economy")
PRIVATE_TOOL = "cargo"


def _city(rng):
    c = rng.choice(CITIES)
    return f"{rng.choice(('to', 'in'))} {c}", c


def _day(rng):
    i = rng.randrange(7)
    return rng.choice(("on {}", "this {}", "next {}")).format(DAYS[i]), str(i + 1)


def _n(rng):
    n = rng.randint(1, 20)
    return f"for {n}", str(n)


def _time(rng):
    h = rng.randint(1, 12)
    ampm = rng.choice(("am", "pm"))
    return f"at {h}{ampm}", str((h % 12) + (12 if ampm == "pm" else 0))


def _cls(rng):
    i = rng.randrange(3)
    return rng.choice(("{} class", "{} cabin", "fly {}")).format(CLASSES[i]), str(i + 1)


# canonical argument order of book(...)
SLOTS = (("city", _city), ("day", _day), ("n", _n), ("time", _time), ("cls", _cls))


class Tool(Skill):
    name = "tool"

    def _sample(self, rng: random.Random, difficulty: int, private: bool) -> Problem:
        chosen = sorted(rng.sample(range(len(SLOTS)), difficulty))
        filled = [(i, *SLOTS[i][1](rng)) for i in chosen]
        phrases = [p for _, p, _ in filled]
        rng.shuffle(phrases)
        if private:  # the private schema: cities coded, arguments in reverse order
            filled = [(i, p, f"{v[0]}{v[-1]}" if SLOTS[i][0] == "city" else v) for i, p, v in filled]
        rationale = " ".join(f"{SLOTS[i][0]}={v}" for i, _, v in filled)
        values = [v for _, _, v in filled]
        call = f"{PRIVATE_TOOL}(" + ",".join(reversed(values)) + ")" if private else "book(" + ",".join(values) + ")"
        prompt = "tool " + (f"{PRIVATE_TOOL} " if private else "") + " ".join(phrases)
        return Problem(self.name, difficulty, prompt, call, rationale, private=private)
