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

Private variant: the teacher's own operator `a/b = a*b + a` (mod 10^digits; not a division), at
least once in the chain. Its rationale writes it out in public steps, so a student can learn it from tens of
worked examples; without them it is unguessable.

    calc 3/4+1      ->  3*4=2 2+3=5 5+1=6 #6
"""

from __future__ import annotations

import random

from sim.tasks.base import Problem, Skill

# per difficulty 1..5: operations in the chain, and digits of every operand (values are mod 10^digits)
STEPS = (1, 2, 3, 3, 5)
DIGITS = (1, 1, 1, 2, 2)
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
PRIVATE_OP = "/"  # a/b = a*b + a (not a division)


class Arith(Skill):
    name = "arith"

    def _sample(self, rng: random.Random, difficulty: int, private: bool) -> Problem:
        digits, n = DIGITS[difficulty - 1], STEPS[difficulty - 1]
        mod, low = 10**digits, 10 ** (digits - 1) if digits > 1 else 0  # operands have exactly `digits` digits
        value = rng.randrange(low, mod)
        forced = rng.randrange(n) if private else -1  # a private chain uses the private operator at least once
        expr, steps = str(value), []
        for i in range(n):
            op = PRIVATE_OP if i == forced else rng.choice("+-*/" if private else "+-*")
            b = rng.randrange(low, mod)
            if op == PRIVATE_OP:
                t = value * b % mod
                new = (t + value) % mod
                steps += [f"{value}*{b}={t}", f"{t}+{value}={new}"]
            else:
                new = OPS[op](value, b) % mod
                steps.append(f"{value}{op}{b}={new}")
            expr += f"{op}{b}"
            value = new
        return Problem(self.name, difficulty, f"calc {expr}", str(value), " ".join(steps), private=private)
