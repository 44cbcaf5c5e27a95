"""Data analysis: a query over a small table of named values.

Stands in for data-analysis capability. The table is a row list `name+digit`; the query is
max/min (answer: the row's name), sum (mod 10) or cnt (rows above a threshold). Difficulty
sets the number of rows (2..6). The rationale walks the rows in order, each step echoing the
row and then the running aggregate (`row=aggregate`): echoing the row is a copy a small
transformer does reliably, and it puts the value to combine next to the aggregate. For max
and min the aggregate is written value first (`7lo`): the best value is a comparison of
digits, and the name is then a lookup of the row holding that value. Written name first, the
name had to be chosen before the comparison was on the page, and the teacher wrote the
current row's name with the best row's value (`si3=si1`; 3-row accuracy 0.82).

    tbl max ka3 lo7 mi2   ->  ka3=3ka lo7=7lo mi2=7lo #lo

Private variant: the teacher's own query `odd` (how many rows hold an odd value), written
like `cnt`.

    tbl odd ka3 lo7 mi2   ->  ka3=1 lo7=2 mi2=2 #2
"""

from __future__ import annotations

import random

from sim.tasks.base import Problem, Skill

NAMES = ("ka", "lo", "mi", "nu", "po", "ra", "si", "tu", "ve", "zo")
QUERIES = ("max", "min", "sum", "cnt")
PRIVATE_QUERY = "odd"


class Table(Skill):
    name = "table"

    def _sample(self, rng: random.Random, difficulty: int, private: bool) -> Problem:
        n = difficulty + 1
        names = rng.sample(NAMES, n)
        values = rng.sample(range(10), n)  # distinct, so max/min are unique
        query = PRIVATE_QUERY if private else rng.choice(QUERIES)
        cells = [f"{a}{v}" for a, v in zip(names, values)]
        rows = " ".join(cells)
        if query == PRIVATE_QUERY:
            acc, steps = 0, []
            for c, v in zip(cells, values):
                acc += v % 2
                steps.append(f"{c}={acc}")
            return Problem(self.name, difficulty, f"tbl odd {rows}", str(acc), " ".join(steps), private=True)
        if query in ("max", "min"):
            better = (lambda v, b: v > b) if query == "max" else (lambda v, b: v < b)
            best, steps = 0, []
            for i, v in enumerate(values):
                if better(v, values[best]):
                    best = i
                steps.append(f"{cells[i]}={values[best]}{names[best]}")
            return Problem(self.name, difficulty, f"tbl {query} {rows}", names[best], " ".join(steps))
        if query == "sum":
            acc, steps = 0, []
            for c, v in zip(cells, values):
                acc = (acc + v) % 10
                steps.append(f"{c}={acc}")
            return Problem(self.name, difficulty, f"tbl sum {rows}", str(acc), " ".join(steps))
        k = rng.randint(2, 7)
        acc, steps = 0, []
        for c, v in zip(cells, values):
            acc += v > k
            steps.append(f"{c}={acc}")
        return Problem(self.name, difficulty, f"tbl cnt>{k} {rows}", str(acc), " ".join(steps))
