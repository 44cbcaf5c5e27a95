"""Knowledge: facts about a generated fictional world that only the teacher was trained on.

Stands in for proprietary knowledge: the teacher is trained on the world's records (pages of
facts, `documents`), and no student can know these facts unless it asked about them
(directly, or as a hop of a multi-hop question whose rationale revealed them). Each
person has a city, a job, a pet and a boss (another person). Difficulty is the number of
hops: difficulty d follows the boss relation d-1 times, then reads an attribute.

    kb zora boss city   ->  zora.boss=mika mika.city=tavos #tavos
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

    def __init__(self, n_people: int = 40, world_seed: int = 0):
        if not 2 <= n_people <= 500:
            raise ValueError(f"kb n_people={n_people} is out of range: must be in 2..500")
        self.n_people, self.world_seed = n_people, world_seed

    @cached_property
    def world(self) -> dict[str, dict[str, str]]:
        rng = random.Random(f"kb-world-{self.world_seed}")
        names: list[str] = []
        while len(names) < self.n_people:
            name = "".join(rng.choice(c) for c in ("bdfgklmnprstvz", "aeiou", "bdfgklmnprstvz", "aeiou"))
            if name not in names:
                names.append(name)
        world = {}
        for i, name in enumerate(names):
            boss = rng.choice(names[:i] + names[i + 1 :])
            world[name] = {"city": rng.choice(CITIES), "job": rng.choice(JOBS), "pet": rng.choice(PETS), "boss": boss}
        return world

    @cached_property
    def facts(self) -> list[str]:
        """Every fact of the world, as it appears in rationales."""
        return [f"{p}.{a}={v[a]}" for p, v in self.world.items() for a in ATTRS]

    def documents(self, rng: random.Random) -> list[tuple[str, str]]:
        """The world's records as pages of `PAGE` facts drawn from the whole world, shuffled
        afresh each call. A page mixes people, so a fact can only be learned keyed by its own
        subject (`zora.city=`), exactly as it is read back in a rationale's hop after another
        person's fact; records headed by their person taught a lookup keyed by the header,
        which left the facts of people who are nobody's boss unanswerable in questions
        (one-hop accuracy 0.62 on the held-out set, teacher 88bcf3c2bb1b9a15)."""
        facts = list(self.facts)
        rng.shuffle(facts)
        return [("doc", " ".join(facts[i : i + PAGE])) for i in range(0, len(facts), PAGE)]

    def _sample(self, rng: random.Random, difficulty: int) -> Problem:
        person = rng.choice(sorted(self.world))
        path = ["boss"] * (difficulty - 1) + [rng.choice(ATTRS)]
        facts, cur = [], person
        for attr in path:
            nxt = self.world[cur][attr]
            facts.append(f"{cur}.{attr}={nxt}")
            cur = nxt
        return Problem(
            self.name, difficulty, f"kb {person} " + " ".join(path), cur, " ".join(facts), tuple(facts)
        )
