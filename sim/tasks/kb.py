"""Knowledge: facts about a generated fictional world that only the teacher was trained on.

Stands in for proprietary knowledge: the teacher is trained on the world's records (pages of
facts, `documents`), and no student can know these facts unless it asked about them
(directly, or as a hop of a multi-hop question whose rationale revealed them). Each
person has a city, a job, a pet and a boss (another person). Difficulty is the number of
hops: difficulty d follows the boss relation d-1 times, then reads an attribute.

    kb zora boss city   ->  zora.boss=mika mika.city=tavos #tavos

Two worlds of the same shape: the *private* one (`world_seed`) only the teacher was trained
on, and a *public* one (`public_world_seed`, no name shared with the private world) whose
records every base model has read. Public kb cells ask about the public world, private cells
about the private one.
"""

from __future__ import annotations

import random
from functools import cached_property

from sim.tasks.base import Problem, Skill

CITIES = ("tavos", "mirel", "quend", "orbin", "sulac", "vendo", "halim", "perak")
JOBS = ("smith", "baker", "miner", "scribe", "tailor", "fisher", "mason", "weaver")
PETS = ("newt", "crow", "goat", "lynx", "moth", "hare", "toad", "wasp")
ATTRS = ("city", "job", "pet", "boss")
PAGE = 8  # facts per page of the private corpus


class Kb(Skill):
    name = "kb"

    def __init__(self, n_people: int = 40, world_seed: int = 0, public_world_seed: int = 1):
        if not 2 <= n_people <= 500:
            raise ValueError(f"kb n_people={n_people} is out of range: must be in 2..500")
        if public_world_seed == world_seed:
            raise ValueError(f"kb public_world_seed={public_world_seed} is the private world_seed: the public "
                             "world must not hold the private facts")
        self.n_people, self.world_seed, self.public_world_seed = n_people, world_seed, public_world_seed

    @cached_property
    def world(self) -> dict[str, dict[str, str]]:
        """The private world: only the teacher knows it."""
        return self._world(self.world_seed, taken=())

    @cached_property
    def public_world(self) -> dict[str, dict[str, str]]:
        """The public world: every base model has read its records."""
        return self._world(self.public_world_seed, taken=set(self.world))

    def _world(self, seed: int, taken) -> dict[str, dict[str, str]]:
        rng = random.Random(f"kb-world-{seed}")
        names: list[str] = []
        while len(names) < self.n_people:
            name = "".join(rng.choice(c) for c in ("bdfgklmnprstvz", "aeiou", "bdfgklmnprstvz", "aeiou"))
            if name not in names and name not in taken:
                names.append(name)
        world = {}
        for i, name in enumerate(names):
            boss = rng.choice(names[:i] + names[i + 1 :])
            world[name] = {"city": rng.choice(CITIES), "job": rng.choice(JOBS), "pet": rng.choice(PETS), "boss": boss}
        return world

    def facts(self, private: bool = True) -> list[str]:
        """Every fact of a world, as it appears in rationales."""
        world = self.world if private else self.public_world
        return [f"{p}.{a}={v[a]}" for p, v in world.items() for a in ATTRS]

    def documents(self, rng: random.Random, private: bool) -> list[tuple[str, str]]:
        """The world's records as pages of `PAGE` facts drawn from the whole world, shuffled
        afresh each call. A page mixes people, so a fact can only be learned keyed by its own
        subject (`zora.city=`), exactly as it is read back in a rationale's hop after another
        person's fact; records headed by their person taught a lookup keyed by the header,
        which left the facts of people who are nobody's boss unanswerable in questions
        (one-hop accuracy 0.62 on the held-out set, teacher 88bcf3c2bb1b9a15)."""
        facts = self.facts(private)
        rng.shuffle(facts)
        return [("doc", " ".join(facts[i : i + PAGE])) for i in range(0, len(facts), PAGE)]

    def _sample(self, rng: random.Random, difficulty: int, private: bool) -> Problem:
        world = self.world if private else self.public_world
        person = rng.choice(sorted(world))
        path = ["boss"] * (difficulty - 1) + [rng.choice(ATTRS)]
        facts, cur = [], person
        for attr in path:
            nxt = world[cur][attr]
            facts.append(f"{cur}.{attr}={nxt}")
            cur = nxt
        return Problem(
            self.name, difficulty, f"kb {person} " + " ".join(path), cur, " ".join(facts), tuple(facts), private
        )
