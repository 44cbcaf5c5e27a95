"""Legitimate users: a population of personas with their own habits, and the defenders' hard cases.

Each persona has a skill mix, a difficulty preference, typo and template rates, how often it
asks for explanations and follow-ups, multi-turn walks over the knowledge base, topic
switching, session lengths and daily habits. The population includes what makes defending
hard (the 2026 reports' false-positive worries): many accounts behind one university or
company NAT, power users with heavy and regular traffic, and researchers who legitimately
sweep a topic from easy to hard, much as a capability-mapping campaign would.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sim.accounts import ASN_KINDS, REGIONS, Account, check_tier
from sim.actors import Actor, Ask, answer_of
from sim.answers import plausible_wrong
from sim.grading import Verdict, verdict
from sim.surface import followup, kb_question, render
from sim.tasks import MAX_DIFFICULTY, Problem, Suite
from sim.tasks.base import ANSWER_MARK


@dataclass
class Persona:
    share: float = 1.0  # share of the population
    skills: dict[str, float] = field(default_factory=dict)  # skill mix ({} = uniform)
    difficulty: list[float] = field(default_factory=lambda: [1.0] * MAX_DIFFICULTY)
    typo_rate: float = 0.1
    template_rate: float = 0.3
    explain_rate: float = 0.3
    followup_rate: float = 0.2
    multi_turn_rate: float = 0.3  # a multi-hop kb question asked one hop per turn
    switch_rate: float = 0.5  # change skill between two requests of a session
    session_len: float = 3.0  # mean requests per session
    sessions_per_day: float = 1.0
    gap_minutes: float = 4.0  # mean think time between two requests
    regular: bool = False  # sessions at the same hours every day (power users)
    sweep: bool = False  # walk one skill's difficulties in order (researchers)
    check_rate: float = 0.0  # share of fresh questions sent as "is this right?" about their own answer
    tier: str = "free"

    def check(self, where: str, suite: Suite | None = None) -> "Persona":
        for k in ("share", "sessions_per_day", "gap_minutes"):
            if not getattr(self, k) >= 0:
                raise ValueError(f"{where}.{k}={getattr(self, k)!r} must be >= 0")
        for k in ("typo_rate", "template_rate", "explain_rate", "followup_rate", "multi_turn_rate", "switch_rate",
                  "check_rate"):
            if not 0 <= getattr(self, k) <= 1:
                raise ValueError(f"{where}.{k}={getattr(self, k)!r} must be in [0, 1]")
        if not self.session_len >= 1:
            raise ValueError(f"{where}.session_len={self.session_len!r} must be >= 1")
        if len(self.difficulty) != MAX_DIFFICULTY or min(self.difficulty) < 0 or sum(self.difficulty) <= 0:
            raise ValueError(f"{where}.difficulty={list(self.difficulty)} must be {MAX_DIFFICULTY} non-negative "
                             "weights with a positive sum")
        if any(w < 0 for w in self.skills.values()) or (self.skills and sum(self.skills.values()) <= 0):
            raise ValueError(f"{where}.skills={dict(self.skills)} must be non-negative weights with a positive sum")
        check_tier(self.tier, f"{where}.tier")
        if suite is not None:
            suite.check_skills(list(self.skills), f"{where}.skills")
        return self

    def draw(self, suite: Suite, rng: random.Random, skill: str | None = None) -> tuple[Problem, bool]:
        """A fresh question of this persona (a kb multi-hop walk starts at its first hop)."""
        if skill is None:
            names = list(self.skills) or list(suite.skills)
            skill = rng.choices(names, [self.skills[n] for n in names] if self.skills else None)[0]
        d = rng.choices(range(1, MAX_DIFFICULTY + 1), self.difficulty)[0]
        return suite.sample(rng, skill, d), rng.random() < self.explain_rate


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    k, p, limit = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


class _User:
    __slots__ = ("persona", "name", "account", "region", "skill", "left", "pending", "hops", "sweep_d",
                 "sweep_n", "hours")

    def __init__(self, persona: Persona, name: str, region: str):
        self.persona, self.name, self.region = persona, name, region
        self.account: Account | None = None
        self.skill: str | None = None
        self.left = 0  # requests left in the current session
        self.pending: tuple[Problem, bool] | None = None  # the next turn, decided by the last answer
        self.hops = 0  # kb hops still to walk after the pending one
        self.sweep_d, self.sweep_n = 1, 0
        self.hours: list[float] = []  # a regular user's session hours


class Population(Actor):
    """`n_users` people, each with a persona and (unless routed) an account of their own.

    `nats`: groups of accounts behind one shared address, e.g. `{name: university, share:
    0.15, tier: education, asn_kind: residential, persona: student}`: that share of the
    population (optionally all of one persona) sits behind one IP.

    `tenure_days`: each account was opened at a uniformly random time in the `tenure_days`
    before the run starts (0: everyone signs up as it starts). It matters to the friction an
    identity check puts on new accounts: with 0, every person of a tier verified for a day
    waits that day inside the run; a real service's people mostly joined long before. Drawn
    from a stream of its own, so arms that differ only here have the same people with the same
    plans (what they ask next still depends on what was refused). The incident replay has no
    identity layer, and no use for it.
    """

    name = "users"
    legit = True

    def __init__(self, n_users: int = 100, personas: Mapping[str, Mapping] | None = None,
                 nats: Sequence[Mapping] = (), tenure_days: float = 0.0):
        if not isinstance(n_users, int) or n_users < 0:
            raise ValueError(f"users.n_users={n_users!r} must be a non-negative integer")
        if isinstance(tenure_days, bool) or not (isinstance(tenure_days, (int, float)) and 0 <= tenure_days < math.inf):
            raise ValueError(f"users.tenure_days={tenure_days!r} must be a finite number >= 0")
        self.tenure_days = float(tenure_days)
        personas = personas or {"user": {}}
        self.persona_specs = {k: dict(v) for k, v in personas.items()}
        self.personas = {}
        for name, spec in personas.items():
            try:
                self.personas[name] = Persona(**dict(spec)).check(f"users.personas.{name}")
            except TypeError as e:
                raise ValueError(f"users.personas.{name}: {e}") from None
        if sum(p.share for p in self.personas.values()) <= 0:
            raise ValueError("users.personas: the shares must have a positive sum")
        self.nats = [dict(n) for n in nats]
        for i, nat in enumerate(self.nats):
            if not 0 < nat.get("share", -1) <= 1:
                raise ValueError(f"users.nats[{i}].share={nat.get('share')!r} must be in (0, 1]")
            check_tier(nat.get("tier", "free"), f"users.nats[{i}].tier")
            if nat.get("asn_kind", "residential") not in ASN_KINDS:
                raise ValueError(f"users.nats[{i}].asn_kind={nat['asn_kind']!r} is not one of {ASN_KINDS}")
            if nat.get("persona") is not None and nat["persona"] not in self.personas:
                raise ValueError(f"users.nats[{i}].persona={nat['persona']!r} is not a persona "
                                 f"(known: {', '.join(self.personas)})")
        if sum(n["share"] for n in self.nats) > 1:
            raise ValueError("users.nats: the shares add up to more than 1")
        self.n_users = n_users
        self.routed_via: list[Account] | None = None  # set by a router: everyone shares its accounts
        self.users: list[_User] = []
        self.nat_of: list[int] = []
        self.agenda: dict[int, list[int]] = defaultdict(list)
        self.sent = 0

    def columnar(self) -> tuple[str, dict]:
        """This population as the incident replay draws it (`sim.incident.Population`)."""
        return "population", {"personas": self.persona_specs, "nats": self.nats, "n_users": self.n_users}

    def spawn(self, n_users: int, name: str) -> "Population":
        """Another population with the same personas (a router's clients), without NATs."""
        other = Population(n_users, self.persona_specs, tenure_days=self.tenure_days)
        other.name = name
        return other

    def without(self, personas) -> "Population":
        """The same population without these personas (the others fill their share), and
        without the NATs that hold only them: a detector's calibration that never saw them."""
        keep = {k: v for k, v in self.persona_specs.items() if k not in set(personas)}
        return Population(self.n_users, keep, [n for n in self.nats if n.get("persona") not in set(personas)],
                          self.tenure_days)

    def bind(self, suite, clock, network, seed, users=None) -> None:
        super().bind(suite, clock, network, seed)
        self.tenure_rng = random.Random(f"{self.name}-tenure-{seed}")
        for name, p in self.personas.items():
            p.check(f"users.personas.{name}", suite)
        names = list(self.personas)
        shares = [self.personas[n].share for n in names]
        # NAT groups come first: [(group, persona or None)] for the first accounts
        forced = [(g, nat.get("persona")) for g, nat in enumerate(self.nats)
                  for _ in range(round(nat["share"] * self.n_users))]
        self.nat_of: list[int] = []
        for i in range(self.n_users):
            g, name = forced[i] if i < len(forced) else (-1, None)
            name = name or self.rng.choices(names, shares)[0]
            self.nat_of.append(g)
            u = _User(self.personas[name], name, self.rng.choice(list(REGIONS)))
            if u.persona.regular:  # the same hours every day, spread over the working day
                k = max(1, round(u.persona.sessions_per_day))
                u.hours = sorted(self.rng.uniform(8, 20) for _ in range(k))
            if u.persona.sweep:
                u.skill = self.rng.choice(list(u.persona.skills) or list(suite.skills))
            self.users.append(u)

    def open_accounts(self, gateway, tick: int) -> None:
        if self.routed_via is not None:
            return
        shared = []  # one address per NAT group
        for nat in self.nats:
            kind = nat.get("asn_kind", "residential")
            subnet = self.network.subnet(kind)
            shared.append(dict(subnet=subnet, ip=self.network.ip(subnet), asn_kind=kind))
        regions = [self.rng.choice(list(REGIONS)) for _ in self.nats]
        span = round(self.tenure_days * self.clock.ticks_per_day)
        for u, g in zip(self.users, self.nat_of):
            opened = tick - self.tenure_rng.randint(0, span) if span else tick
            if g < 0:
                self._open(gateway, u, opened, u.persona.tier)
            else:
                u.region = regions[g]  # one campus, one time zone
                self._open(gateway, u, opened, self.nats[g].get("tier", u.persona.tier), **shared[g])

    def _open(self, gateway, u: _User, tick: int, tier: str, **infra) -> None:
        acc = self.network.account(tier, tick, region=u.region, **infra)
        # an identity check may wrongly refuse a real person: they still try, and every
        # request they make is refused ("no such account"), which utility/relative counts
        gateway.open_account(acc, fraudulent=False)
        u.account = acc

    def owned_accounts(self) -> list[Account]:
        return [u.account for u in self.users if u.account is not None]

    @property
    def done(self) -> bool:
        return not self.users

    def account_of(self, i: int) -> Account | None:
        if self.routed_via is not None:
            return self.routed_via[i % len(self.routed_via)]
        return self.users[i].account

    # -- the daily plan ------------------------------------------------------------------
    def _plan_day(self, day: int) -> None:
        c = self.clock
        first = day * c.ticks_per_day
        for i, u in enumerate(self.users):
            if u.persona.regular:
                starts = [first + int((h - REGIONS[u.region]) % 24 * 60 / c.tick_minutes) + self.rng.randint(-1, 1)
                          for h in u.hours]
            else:
                starts = [c.draw_tick(self.rng, day, REGIONS[u.region])
                          for _ in range(poisson(self.rng, u.persona.sessions_per_day))]
            for t in starts:
                self.agenda[max(first, t)].append(-1 - i)  # negative: a session starts

    def requests(self, tick: int) -> list[Ask]:
        if tick % self.clock.ticks_per_day == 0:
            self._plan_day(self.clock.day(tick))
        asks = []
        for entry in self.agenda.pop(tick, ()):
            i = -1 - entry if entry < 0 else entry
            u = self.users[i]
            if entry < 0:  # a new session (adds to one still going)
                started = u.left > 0
                u.left += 1 + poisson(self.rng, u.persona.session_len - 1)
                if started:
                    continue
            account = self.account_of(i)
            if account is None or u.left <= 0:
                continue
            fresh = u.pending is None  # not a follow-up or the next hop of a walk
            problem, explain = self._next_question(u)
            if u.persona.check_rate and fresh and u.hops == 0 and self.rng.random() < u.persona.check_rate:
                # "is this right?": the person's own answer, right or wrong alike, sent for a grade
                mine = problem.answer if self.rng.random() < 0.5 else plausible_wrong(problem.answer, problem.prompt,
                                                                                     self.rng)
                problem, explain = verdict(problem, f"{ANSWER_MARK}{mine}"), False
                text = problem.prompt
            else:
                text = render(problem, explain, self.rng, u.persona.typo_rate, u.persona.template_rate)
            asks.append(Ask(account, text, problem, explain, self.name, "user", i))
        self.sent += len(asks)
        return asks

    def _next_question(self, u: _User) -> tuple[Problem, bool]:
        p = u.persona
        if u.pending is not None:
            q, u.pending = u.pending, None
            return q
        if p.sweep:  # a researcher: a few questions per difficulty, easy to hard, then again
            u.sweep_n += 1
            if u.sweep_n > 3:
                u.sweep_n, u.sweep_d = 1, u.sweep_d % MAX_DIFFICULTY + 1
            return self.suite.sample(self.rng, u.skill, u.sweep_d), self.rng.random() < p.explain_rate
        skill = u.skill if u.skill is not None and self.rng.random() >= p.switch_rate else None
        problem, explain = p.draw(self.suite, self.rng, skill)
        u.skill = problem.skill
        if problem.skill == "kb" and problem.difficulty > 1 and self.rng.random() < p.multi_turn_rate:
            # walk the chain one hop per turn: "who is X's boss?", then about the answer
            first = kb_question(self.suite, problem.prompt.split()[1], "boss")
            if first is not None:
                u.hops = problem.difficulty - 1
                return first, explain
        return problem, explain

    def receive(self, tick: int, pairs: list) -> None:
        for ask, ex in pairs:
            u = self.users[ask.sender]
            u.left -= 1
            answer = answer_of(ex)
            if u.hops > 0 and answer:
                u.hops -= 1
                attr = "boss" if u.hops > 0 else self.rng.choice(("city", "job", "pet"))
                nxt = kb_question(self.suite, answer, attr)
                u.pending = (nxt, ask.explain) if nxt is not None else None
                if nxt is None:
                    u.hops = 0
            elif ex.status == "served" and not isinstance(ask.problem, Verdict) and \
                    self.rng.random() < u.persona.followup_rate:
                u.hops = 0
                u.pending = followup(self.suite, ask.problem, ask.explain, answer, self.rng)
            else:
                u.hops = 0
            if u.left > 0 or u.pending is not None:
                u.left = max(u.left, 1)
                minutes = self.rng.expovariate(1 / u.persona.gap_minutes) if u.persona.gap_minutes else 0.0
                self.agenda[tick + self.clock.ticks(minutes / 60)].append(ask.sender)
