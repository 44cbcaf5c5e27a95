"""Multi-step reasoning: a chain of operations evaluated left to right, modulo 10^digits.

Stands in for the math/reasoning capability the 2026 campaigns harvested with chain-of-thought
prompts. Difficulty grows the way it does in math benchmarks, in both directions at once: the
number of operations (so an answer-only model must compose them internally while an
explaining one writes them down) and, at difficulty 4-5, the size of the numbers (two-digit
operands modulo 100). A two-digit step (`37*48=76`) needs carries that a one-digit step does
not, so writing the chain down no longer makes every step easy: the explained teacher has a
capability boundary too. With one-digit steps at every difficulty the shipped teacher
(5fad835e) explained d5 chains at 0.975, the same as d1.

    calc 3+4*2      ->  3+4=7 7*2=4 #4
    calc 37+48*12   ->  37+48=85 85*12=20 #20      (difficulty 4-5)
"""

from __future__ import annotations

import random

from sim.tasks.base import Problem, Skill

# per difficulty 1..5: operations in the chain, and digits of every operand (values are mod 10^digits)
STEPS = (1, 2, 3, 3, 5)
DIGITS = (1, 1, 1, 2, 2)
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class Arith(Skill):
    name = "arith"

    def _sample(self, rng: random.Random, difficulty: int) -> Problem:
        digits = DIGITS[difficulty - 1]
        mod, low = 10**digits, 10 ** (digits - 1) if digits > 1 else 0  # operands have exactly `digits` digits
        value = rng.randrange(low, mod)
        expr, steps = str(value), []
        for _ in range(STEPS[difficulty - 1]):
            op, b = rng.choice("+-*"), rng.randrange(low, mod)
            new = OPS[op](value, b) % mod
            steps.append(f"{value}{op}{b}={new}")
            expr += f"{op}{b}"
            value = new
        return Problem(self.name, difficulty, f"calc {expr}", str(value), " ".join(steps))
