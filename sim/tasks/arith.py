"""Multi-step reasoning: a chain of single-digit operations evaluated left to right, mod 10.

Stands in for the math/reasoning capability the 2026 campaigns harvested with chain-of-thought
prompts. Each step is easy; the chain is not: difficulty sets the number of operations, so an
answer-only model must compose them internally while an explaining one writes them down.

    calc 3+4*2      ->  3+4=7 7*2=4 #4
"""

from __future__ import annotations

import random

from sim.tasks.base import Problem, Skill

# operations per difficulty 1..5
STEPS = (1, 2, 3, 5, 7)
OPS = {"+": lambda a, b: (a + b) % 10, "-": lambda a, b: (a - b) % 10, "*": lambda a, b: (a * b) % 10}


class Arith(Skill):
    name = "arith"

    def _sample(self, rng: random.Random, difficulty: int) -> Problem:
        value = rng.randrange(10)
        expr, steps = str(value), []
        for _ in range(STEPS[difficulty - 1]):
            op, b = rng.choice("+-*"), rng.randrange(10)
            new = OPS[op](value, b)
            steps.append(f"{value}{op}{b}={new}")
            expr += f"{op}{b}"
            value = new
        return Problem(self.name, difficulty, f"calc {expr}", str(value), " ".join(steps))
