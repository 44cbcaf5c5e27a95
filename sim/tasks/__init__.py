"""The skill suite: the skills, the task distribution and the fixed held-out evaluation set."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from sim.tasks.base import (
    EXPLAIN,
    MAX_DIFFICULTY,
    MIN_DIFFICULTY,
    Problem,
    Skill,
    Voice,
    check_difficulty,
    final_answer,
    shows_reasoning,
    steps,
)

__all__ = ["EXPLAIN", "Problem", "Skill", "Suite", "Voice", "final_answer", "check_difficulty", "shows_reasoning",
           "steps"]


class Suite:
    """Skills with known answers, a sampler over them, and a held-out set no one trains on.

    Its cells are skill x difficulty x {public, private}: the task distribution asks a private
    variant with probability `private_rate`. The held-out set is drawn first from `eval_seed`; every later sample (the teacher's
    training data, every actor's queries) is drawn by `sample`, which rejects any problem
    whose prompt is in the held-out set, so evaluation is never contaminated.

    A cell with few distinct prompts (one-slot tool calls, one-hop kb questions) holds out at
    most `heldout_fraction` of them, so that most of the cell stays trainable; every other
    cell holds out `eval_per_cell` problems.
    """

    def __init__(
        self,
        skills: Mapping[str, Skill],
        eval_per_cell: int = 20,
        eval_seed: int = 1234,
        difficulty_weights: Sequence[float] = (1, 1, 1, 1, 1),
        heldout_fraction: float = 0.25,
        private_rate: float = 0.5,
    ):
        if not skills:
            raise ValueError("tasks.skills is empty: a suite needs at least one skill")
        for key, skill in skills.items():
            if not isinstance(skill, Skill) or skill.name != key:
                raise ValueError(f"tasks.skills.{key} must build the skill named {key!r}, got {skill!r}")
        if eval_per_cell < 1:
            raise ValueError(f"tasks.eval_per_cell={eval_per_cell} must be >= 1")
        if not 0 < heldout_fraction < 1:
            raise ValueError(f"tasks.heldout_fraction={heldout_fraction} must be in (0, 1)")
        if not 0 <= private_rate <= 1:
            raise ValueError(f"tasks.private_rate={private_rate} must be in [0, 1]")
        weights = [float(w) for w in difficulty_weights]
        if len(weights) != MAX_DIFFICULTY or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"tasks.difficulty_weights={list(difficulty_weights)} must be {MAX_DIFFICULTY} "
                "non-negative numbers with a positive sum"
            )
        self.skills = dict(skills)
        self.eval_per_cell, self.eval_seed, self.heldout_fraction = eval_per_cell, eval_seed, heldout_fraction
        self.difficulty_weights, self.private_rate = weights, float(private_rate)
        self.difficulties = list(range(MIN_DIFFICULTY, MAX_DIFFICULTY + 1))
        self.eval_set = self._draw_eval_set()
        self.eval_prompts = frozenset(p.prompt for p in self.eval_set)

    def _small_cell(self, skill: Skill, difficulty: int, private: bool, probes: int = 2000) -> list[Problem] | None:
        """A cell's distinct problems when a probe of `probes` draws finds at most half that
        many (the cell can be enumerated), else None."""
        rng = random.Random(f"probe-{skill.name}-{difficulty}" + ("-private" if private else ""))
        distinct: dict[str, Problem] = {}
        for _ in range(probes):
            p = skill.sample(rng, difficulty, private)
            distinct.setdefault(p.prompt, p)
        return [distinct[k] for k in sorted(distinct)] if len(distinct) <= probes // 2 else None

    def _draw_eval_set(self) -> list[Problem]:
        """`eval_per_cell` problems per cell. A small cell holds out at most `heldout_fraction`
        of its distinct prompts, drawn uniformly among them rather than by how often the skill
        samples them: drawn by frequency, a one-slot tool request's three cabin-class forms
        (a fifth of the cell's probability, 3 of its ~100 prompts) were all held out, and the
        teacher never saw that form (teacher af5ee53f, tool difficulty 1: 0.84)."""
        problems, seen = [], set()
        for name, skill, d, private in self.cells():
            # one stream per cell: editing one skill does not redraw the other skills' held-out sets
            rng = random.Random(f"eval-{self.eval_seed}-{name}-{d}" + ("-private" if private else ""))
            small = self._small_cell(skill, d, private)
            if small is not None:
                cap = max(1, min(self.eval_per_cell, int(len(small) * self.heldout_fraction)))
                taken = [p for p in rng.sample(small, len(small)) if p.prompt not in seen][:cap]
                seen.update(p.prompt for p in taken)
                problems += taken
                continue
            got, misses = 0, 0
            while got < self.eval_per_cell and misses < 50 * self.eval_per_cell:
                p = skill.sample(rng, d, private)
                if p.prompt in seen:
                    misses += 1
                    continue
                seen.add(p.prompt)
                problems.append(p)
                got += 1
        return problems

    def cells(self):
        """(skill name, skill, difficulty, private) of every cell, public cells first."""
        for private in (False, True):
            for name, skill in self.skills.items():
                for d in self.difficulties:
                    yield name, skill, d, private

    def fingerprint(self) -> dict:
        """Everything that decides the task distribution and the held-out set."""
        skills = {
            n: {"class": type(s).__qualname__,
                **{k: v for k, v in vars(s).items() if isinstance(v, (int, float, str, bool))}}
            for n, s in self.skills.items()
        }
        return {"skills": skills, "eval_per_cell": self.eval_per_cell, "eval_seed": self.eval_seed,
                "difficulty_weights": self.difficulty_weights, "heldout_fraction": self.heldout_fraction,
                "private_rate": self.private_rate}

    def documents(self, rng: random.Random, private: bool) -> list[tuple[str, str]]:
        """Every skill's public or private corpus (see `Skill.documents`)."""
        return [doc for skill in self.skills.values() for doc in skill.documents(rng, private)]

    def check_skills(self, names: Sequence[str], where: str) -> list[str]:
        for n in names:
            if n not in self.skills:
                raise ValueError(f"{where}: unknown skill {n!r} (known: {', '.join(self.skills)})")
        return list(names)

    def sample(
        self, rng: random.Random, skill: str | None = None, difficulty: int | None = None,
        private: bool | None = None,
    ) -> Problem:
        """One problem from the task distribution (or from the cells given), never one of the
        held-out set."""
        for _ in range(10_000):
            name = skill if skill is not None else rng.choice(list(self.skills))
            d = difficulty if difficulty is not None else rng.choices(self.difficulties, self.difficulty_weights)[0]
            priv = private if private is not None else rng.random() < self.private_rate
            p = self.skills[name].sample(rng, d, priv)
            if p.prompt not in self.eval_prompts:
                return p
        raise RuntimeError(f"could not sample a non-held-out problem for skill={skill} difficulty={difficulty}")

    def grade(self, problem: Problem, text: str) -> bool:
        return self.skills[problem.skill].grade(problem, text)
