"""Coding: trace what a small string program prints.

Stands in for the code-understanding capability (tracing programs across languages). The
program is a pipeline of string operations; difficulty d sets its length (d operations) and
the input's (2 + d letters).

    run abcd rev rot    ->  rev=dcba rot=edcb #edcb

Private variant: programs that use the teacher's own operation `zap` (swap adjacent letters
pairwise) at least once.

    run abcde zap rev   ->  zap=badce rev=ecdab #ecdab
"""

from __future__ import annotations

import random

from sim.tasks.base import Problem, Skill

ALPHABET = "abcdefgh"
_ROT = str.maketrans(ALPHABET, ALPHABET[1:] + ALPHABET[0])
OPS = {
    "rev": lambda s: s[::-1],
    "rot": lambda s: s.translate(_ROT),  # shift every letter by one, cyclically
    "swp": lambda s: s[-1] + s[1:-1] + s[0],  # swap the first and last letters
    "cut": lambda s: s[1:],  # drop the first letter
}
# the private operation: swap adjacent letters pairwise (a trailing odd letter stays)
PRIVATE_OPS = {"zap": lambda s: "".join(s[i : i + 2][::-1] for i in range(0, len(s), 2))}


class Trace(Skill):
    name = "trace"

    def _sample(self, rng: random.Random, difficulty: int, private: bool) -> Problem:
        s = "".join(rng.choice(ALPHABET) for _ in range(2 + difficulty))
        ops = {**OPS, **PRIVATE_OPS} if private else OPS
        forced = rng.randrange(difficulty) if private else -1
        question, steps = f"run {s}", []
        for i in range(difficulty):
            op = rng.choice(list(PRIVATE_OPS)) if i == forced else rng.choice(list(ops))
            s = ops[op](s)
            question += f" {op}"
            steps.append(f"{op}={s}")
        return Problem(self.name, difficulty, question, s, " ".join(steps), private=private)
