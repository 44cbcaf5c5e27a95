"""Data analysis: a query over a small table of named values.

Stands in for data-analysis capability. The table is a row list `name+digit`; the query is
max/min (answer: the row's name), sum (mod 10) or cnt (rows above a threshold). Difficulty
sets the number of rows (2..6); the rationale is the running aggregate after each row.

    tbl max ka3 lo7 mi2   ->  ka3 lo7 lo7 #lo
"""

from __future__ import annotations

import random

from sim.tasks.base import Problem, Skill

NAMES = ("ka", "lo", "mi", "nu", "po", "ra", "si", "tu", "ve", "zo")
QUERIES = ("max", "min", "sum", "cnt")


class Table(Skill):
    name = "table"

    def _sample(self, rng: random.Random, difficulty: int) -> Problem:
        n = difficulty + 1
        names = rng.sample(NAMES, n)
        values = rng.sample(range(10), n)  # distinct, so max/min are unique
        query = rng.choice(QUERIES)
        rows = " ".join(f"{a}{v}" for a, v in zip(names, values))
        if query in ("max", "min"):
            better = (lambda v, b: v > b) if query == "max" else (lambda v, b: v < b)
            best, steps = 0, []
            for i, v in enumerate(values):
                if better(v, values[best]):
                    best = i
                steps.append(f"{names[best]}{values[best]}")
            return Problem(self.name, difficulty, f"tbl {query} {rows}", names[best], " ".join(steps))
        if query == "sum":
            acc, steps = 0, []
            for v in values:
                acc = (acc + v) % 10
                steps.append(str(acc))
            return Problem(self.name, difficulty, f"tbl sum {rows}", str(acc), " ".join(steps))
        k = rng.randint(2, 7)
        acc, steps = 0, []
        for v in values:
            acc += v > k
            steps.append(str(acc))
        return Problem(self.name, difficulty, f"tbl cnt>{k} {rows}", str(acc), " ".join(steps))
