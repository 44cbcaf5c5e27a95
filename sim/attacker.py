"""Attacker campaigns (config group `attacker/`): through which accounts, when, at what cost.

What a campaign asks is its query policy (`sim.policies`, config group `policy/`); the
campaign owns the accounts, paces them, pays for them, reacts to bans and keeps the harvest.

- `Naive`: one account, as fast as `per_tick` allows; a ban ends it.
- `Hydra`: the "hydra cluster" of the February 2026 reports: `accounts` accounts spread
  over a few shared proxy subnets, payment fingerprints reused with probability
  `payment_reuse`, each account paced under `pace_per_day` requests, a `mix` fraction of
  legitimate-looking cover requests (drawn from the real users' personas), banned accounts
  and accounts whose quota is spent replaced by buying new ones, everything paid from
  `budget_usd`. `pacing` sets when each account asks: `even` spreads its `pace_per_day`
  requests evenly over the day and night; `human` sends them in the sessions of one imitated
  persona (session lengths, think times, the hours of its region), with that persona's cover.
- `Router`: an obfuscated reseller: a few accounts carry the traffic of many real clients
  (a population of the same personas as the legitimate users) and the attacker's queries.

The counter-defenses (`sim.counter`, config group `counter/`) decide how prompts are repeated
for voting and how the harvest becomes the student's training set.

A distillation query counts against `queries` whether or not it was served; cover traffic
and routed clients' requests do not, but every request pays its tier's per-query price.
"""

from __future__ import annotations

import heapq
import math

from sim.accounts import TIERS, Account, check_tier
from sim.actors import Actor, Ask
from sim.counter import Counter
from sim.policies import Policy, Random
from sim.surface import render
from sim.users import Persona, poisson


class Campaign(Actor):
    name = "attacker"

    def __init__(self, queries: int = 2000, per_tick: int = 256, policy: Policy | None = None,
                 tier: str = "paid", budget_usd: float | None = None, counter: Counter | None = None):
        if not isinstance(queries, int) or queries < 0:
            raise ValueError(f"attacker.queries={queries!r} must be a non-negative integer")
        if not isinstance(per_tick, int) or per_tick < 1:
            raise ValueError(f"attacker.per_tick={per_tick!r} must be a positive integer")
        if policy is not None and not isinstance(policy, Policy):
            raise ValueError(f"attacker.policy={policy!r} is not a query policy")
        if budget_usd is not None and not budget_usd >= 0:
            raise ValueError(f"attacker.budget_usd={budget_usd!r} must be >= 0 (or null: unlimited)")
        if counter is not None and not isinstance(counter, Counter):
            raise ValueError(f"attacker.counter={counter!r} is not a sim.counter.Counter")
        self.queries, self.per_tick = queries, per_tick
        self.policy = policy or Random()
        self.counter = counter or Counter()
        self._voting: list = []  # the current prompt's remaining copies (consistency voting)
        self.tier = check_tier(tier, "attacker.tier")
        self.budget_usd = math.inf if budget_usd is None else float(budget_usd)
        self.accounts: list[Account] = []  # every account it opened
        self.live: list[Account] = []
        self.retired: set[str] = set()  # accounts it stopped using: banned, or their quota spent
        self.sent = 0  # distillation queries sent
        self.cost_usd = 0.0
        self.broke = False
        self.harvest: list[dict] = []
        self.asked = []  # every problem it asked (served or not): what it tried to cover

    def bind(self, suite, clock, network, seed, users=None) -> None:
        super().bind(suite, clock, network, seed)
        self.policy.bind(suite, self.queries)

    def pay(self, usd: float) -> bool:
        if self.cost_usd + usd > self.budget_usd + 1e-9:
            self.broke = True
            return False
        self.cost_usd += usd
        return True

    def buy(self, gateway, tick: int, **infra) -> Account | None:
        """Open one account if the budget allows and the gateway admits it."""
        if not self.pay(TIERS[self.tier][0]):
            return None
        acc = self.network.account(self.tier, tick, **infra)
        self.accounts.append(acc)
        admitted = gateway.open_account(acc, fraudulent=True)  # a campaign's identities are fake
        self.cost_usd += gateway.ctx.fees.get(acc.id, 0.0)  # verification friction, paid either way
        if not admitted:
            return None
        self.live.append(acc)
        return acc

    def query(self, account: Account) -> Ask | None:
        if not self._voting and not self.policy.ready():  # it waits for answers before asking more
            return None
        if not self.pay(TIERS[account.tier][1]):
            return None
        if not self._voting:
            self._voting = [self.policy.next(self.rng)] * self.counter.vote_k
        problem, explain = self._voting.pop()
        self.sent += 1
        return Ask(account, self.policy.render(problem, explain, self.rng), problem, explain, self.name, "attack")

    def training_set(self) -> list[dict]:
        """The harvest after the counter-defenses: what the student is trained on."""
        return self.counter.process(self.harvest)

    @property
    def done(self) -> bool:
        return self.sent >= self.queries or self.broke or (not self.live and not self.can_respawn)

    can_respawn = False

    def lost(self, account: Account, tick: int) -> None:
        """An account was banned: drop it (subclasses may buy a replacement)."""
        self.retired.add(account.id)
        self.live = [a for a in self.live if a.id != account.id]

    def spent(self, account: Account, tick: int) -> None:
        """An account's quota for the run is spent (a `QUOTA` refusal): a campaign with no other
        account keeps asking through it (subclasses drop it and may buy a replacement)."""

    def backoff(self, account: Account, tick: int) -> None:
        """A request was refused for its rate (throttled, rate-limited): subclasses slow down."""

    def receive(self, tick: int, pairs: list) -> None:
        for ask, ex in pairs:
            if ex.reason == "banned" and ask.account.id not in self.retired:
                self.lost(ask.account, tick)
            elif ex.exhausted and ask.account.id not in self.retired:
                self.spent(ask.account, tick)
            elif ex.retry:  # told to slow down (HTTP 429), not refused for what it asked
                self.backoff(ask.account, tick)
            if not ask.attack:
                continue
            self.policy.feedback(ask.problem, ask.explain, ex, self.rng)
            self.asked.append(ask.problem)
            if ex.status == "served":
                # the attacker knows its own clean question: it trains on that, not on the
                # typos or templates it added to look organic
                tops = (ex.completion.top_logprobs if ex.completion is not None else None) or []
                self.harvest.append({"request": ask.problem.request(ask.explain), "response": ex.response,
                                     "sent": ask.text, "skill": ask.problem.skill,
                                     "difficulty": ask.problem.difficulty, "tick": tick, "account": ask.account.id,
                                     # the API's top-k log-probs per response character, when exposed
                                     "top_tokens": [[t for t, _ in pos] for pos in tops],
                                     "top_logprobs": [[v for _, v in pos] for pos in tops],
                                     **self.policy.columns(ask.problem, ex)})


class Naive(Campaign):
    """One account, `per_tick` queries a tick until the budget is spent (with consistency
    voting, one account per vote, each prompt's copies sent from different ones)."""

    def open_accounts(self, gateway, tick):
        for _ in range(self.counter.vote_k):
            self.buy(gateway, tick, asn_kind="datacenter")

    def requests(self, tick):
        if not self.live:
            return []
        asks = []
        for _ in range(min(self.per_tick, self.queries - self.sent)):
            ask = self.query(self.live[self.sent % len(self.live)])
            if ask is None:
                break
            asks.append(ask)
        return asks


class Hydra(Campaign):
    def __init__(self, queries: int = 2000, per_tick: int = 256, policy: Policy | None = None,
                 tier: str = "free", budget_usd: float | None = None, accounts: int = 200,
                 pace_per_day: float = 50, proxies: int = 8, ips_per_proxy: int = 4,
                 payment_reuse: float = 0.3, device_reuse: float = 0.5, mix: float = 0.2,
                 respawn: bool = True, pacing: str = "even", counter: Counter | None = None):
        super().__init__(queries, per_tick, policy, tier, budget_usd, counter)
        for k, v in (("accounts", accounts), ("proxies", proxies), ("ips_per_proxy", ips_per_proxy)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"attacker.{k}={v!r} must be a positive integer")
        if not pace_per_day > 0:
            raise ValueError(f"attacker.pace_per_day={pace_per_day!r} must be > 0")
        for k, v in (("payment_reuse", payment_reuse), ("device_reuse", device_reuse)):
            if not 0 <= v <= 1:
                raise ValueError(f"attacker.{k}={v!r} must be in [0, 1]")
        if not 0 <= mix < 1:
            raise ValueError(f"attacker.mix={mix!r} must be in [0, 1)")
        if pacing not in ("even", "human"):
            raise ValueError(f"attacker.pacing={pacing!r} must be 'even' or 'human'")
        self.n_accounts, self.pace_per_day = accounts, float(pace_per_day)
        self.proxies, self.ips_per_proxy = proxies, ips_per_proxy
        self.payment_reuse, self.device_reuse, self.mix = payment_reuse, device_reuse, mix
        self.respawn, self.pacing = bool(respawn), pacing
        self.habit: dict[str, Persona] = {}  # pacing=human: account id -> the persona it imitates
        self.skill: dict[str, str] = {}  # pacing=human: account id -> the skill of its last cover request
        self.schedule: list[tuple[int, int, str]] = []  # (next tick, serial, account id) heap
        self.by_id: dict[str, Account] = {}
        self.slow: dict[str, float] = {}  # account id -> pacing interval multiplier after refusals
        self.serial: dict[str, int] = {}  # account id -> its order of purchase (ties in the schedule)
        self.slowed_on: dict[str, int] = {}  # pacing=human: account id -> the day it last slowed down

    @property
    def can_respawn(self) -> bool:
        return self.respawn and not self.broke

    def columnar(self) -> tuple[str, dict]:
        """This campaign as the incident replay draws it (`sim.incident.Campaign`): its own
        parameters and its policy's request surface."""
        if self.counter.vote_k > 1 or self.budget_usd != math.inf or self.pacing != "even":
            raise ValueError(f"attacker.counter.vote_k={self.counter.vote_k}, attacker.budget_usd={self.budget_usd}, "
                             f"attacker.pacing={self.pacing}: scale=incident replays neither voting across accounts, "
                             f"a spending cap nor human pacing")
        surface = self.policy.surface()
        if surface is None:
            raise ValueError(f"attacker.policy ({type(self.policy).__module__}.{type(self.policy).__name__}) has no "
                             f"columnar form: scale=incident draws every cell alike (policy=cot_elicit, random, "
                             f"sweep or evasive)")
        return "hydra", {"accounts": self.n_accounts, "queries": self.queries, "pace_per_day": self.pace_per_day,
                         "proxies": self.proxies, "ips_per_proxy": self.ips_per_proxy,
                         "payment_reuse": self.payment_reuse, "device_reuse": self.device_reuse, "mix": self.mix,
                         "respawn": self.respawn, "tier": self.tier, **surface}

    def bind(self, suite, clock, network, seed, users=None):
        super().bind(suite, clock, network, seed)
        self.cover = users  # the personas its cover traffic imitates (None: plain random questions)
        # the campaign's infrastructure: a few proxy subnets, a few addresses in each
        self.pool = [network.ip(s) for s in (network.subnet("proxy") for _ in range(self.proxies))
                     for _ in range(self.ips_per_proxy)]
        self.payments: list[str] = []
        self.devices = [network.fingerprint("dev") for _ in range(3)]  # its automation clients
        self.interval = clock.ticks_per_day / self.pace_per_day
        self.planned = -1  # pacing=human: the last day whose sessions are planned

    def _open(self, gateway, tick: int) -> None:
        ip = self.pool[len(self.accounts) % len(self.pool)]
        payment = (self.rng.choice(self.payments) if self.payments and self.rng.random() < self.payment_reuse
                   else self.network.fingerprint("pay"))
        self.payments.append(payment)
        device = self.rng.choice(self.devices) if self.rng.random() < self.device_reuse else None
        acc = self.buy(gateway, tick, ip=ip, asn_kind="proxy", payment=payment, device=device)
        if acc is None:
            return
        self.by_id[acc.id] = acc
        self.serial[acc.id] = len(self.accounts)
        if self.pacing == "even":
            heapq.heappush(self.schedule, (tick + int(self.rng.random() * self.interval), self.serial[acc.id], acc.id))
            return
        personas = self.cover.personas if self.cover is not None else {}
        names = list(personas)
        self.habit[acc.id] = (personas[self.rng.choices(names, [personas[n].share for n in names])[0]]
                              if names else Persona())
        if self.planned == self.clock.day(tick):  # opened during a planned day: its sessions from now on
            self._plan(acc.id, tick)

    def _plan(self, aid: str, start: int) -> None:
        """pacing=human: this account's requests from `start` to the end of its day, in sessions
        of its persona (as `sim.users` draws a person's), `pace_per_day` a day on average."""
        c, p = self.clock, self.habit[aid]
        day, serial = c.day(start), self.serial[aid]
        for _ in range(poisson(self.rng, self.pace_per_day / self.slow.get(aid, 1.0) / p.session_len)):
            t = c.draw_tick(self.rng, day, self.by_id[aid].utc_offset)
            for _ in range(1 + poisson(self.rng, p.session_len - 1)):
                if t >= start:
                    heapq.heappush(self.schedule, (t, serial, aid))
                # think time, at least a tick apart, as a person's next request (`sim.users`)
                t += c.ticks((self.rng.expovariate(1 / p.gap_minutes) if p.gap_minutes else 0.0) / 60)

    def open_accounts(self, gateway, tick):
        self.gateway = gateway  # respawns happen later, when a ban is noticed
        for _ in range(self.n_accounts):
            self._open(gateway, tick)

    def lost(self, account, tick):
        super().lost(account, tick)
        if self.can_respawn and not self.done:
            self._open(self.gateway, tick)

    def spent(self, account, tick):
        self.lost(account, tick)  # as good as banned: retired, and replaced when `respawn`

    def backoff(self, account, tick):
        # pace this account at half its rate from now on: stay under the limit it just hit (with
        # pacing=human, once a day: a session's refusals arrive together, and the rate applies
        # from the next day's plan)
        if self.pacing == "human":
            if self.slowed_on.get(account.id) == self.clock.day(tick):
                return
            self.slowed_on[account.id] = self.clock.day(tick)
        self.slow[account.id] = self.slow.get(account.id, 1.0) * 2

    def requests(self, tick):
        if self.pacing == "human" and self.clock.day(tick) > self.planned and not self.done:
            self.planned = self.clock.day(tick)
            for acc in self.live:
                self._plan(acc.id, tick)
        asks = []
        while self.schedule and self.schedule[0][0] <= tick and len(asks) < self.per_tick and not self.done:
            _, serial, aid = heapq.heappop(self.schedule)
            if aid in self.retired:
                continue
            acc = self.by_id[aid]
            if self.rng.random() < self.mix:
                ask = self._cover(acc)
            else:
                ask = self.query(acc)
            if ask is None:  # out of money, or a policy waiting for answers: this account asks later
                heapq.heappush(self.schedule, (tick + 1, serial, aid))
                break
            asks.append(ask)
            if self.pacing == "even":  # the next request of this account, jittered around its pace
                nxt = tick + max(1, round(self.interval * self.slow.get(aid, 1.0) * self.rng.uniform(0.5, 1.5)))
                heapq.heappush(self.schedule, (nxt, serial, aid))
        return asks

    def _cover(self, acc: Account) -> Ask | None:
        if not self.pay(TIERS[acc.tier][1]):
            return None
        if acc.id in self.habit:  # pacing=human: its own persona, keeping to a skill as a person does
            p = self.habit[acc.id]
            keep = self.skill.get(acc.id) if self.rng.random() >= p.switch_rate else None
            problem, explain = p.draw(self.suite, self.rng, keep)
            self.skill[acc.id] = problem.skill
            text = render(problem, explain, self.rng, p.typo_rate, p.template_rate)
        elif self.cover is not None and self.cover.personas:
            persona = self.rng.choice(list(self.cover.personas.values()))
            problem, explain = persona.draw(self.suite, self.rng)
            text = render(problem, explain, self.rng, persona.typo_rate, persona.template_rate)
        else:
            problem, explain = self.suite.sample(self.rng), False
            text = problem.request(explain)
        return Ask(acc, text, problem, explain, self.name, "cover")


class Router(Campaign):
    """A reseller: `accounts` accounts in one datacenter carry `routed_fraction` x (the
    legitimate population's size) real clients and `per_tick` attacker queries a tick."""

    def __init__(self, queries: int = 2000, per_tick: int = 16, policy: Policy | None = None,
                 tier: str = "paid", budget_usd: float | None = None, accounts: int = 3,
                 routed_fraction: float = 0.1, counter: Counter | None = None):
        super().__init__(queries, per_tick, policy, tier, budget_usd, counter)
        if not isinstance(accounts, int) or accounts < 1:
            raise ValueError(f"attacker.accounts={accounts!r} must be a positive integer")
        if not 0 <= routed_fraction <= 10:
            raise ValueError(f"attacker.routed_fraction={routed_fraction!r} must be in [0, 10]")
        self.n_accounts, self.routed_fraction = accounts, routed_fraction
        self.clients = None

    def bind(self, suite, clock, network, seed, users=None):
        super().bind(suite, clock, network, seed)
        n = round(self.routed_fraction * (users.n_users if users is not None else 0))
        if users is not None and n:
            self.clients = users.spawn(n, f"{self.name}-clients")
            self.clients.bind(suite, clock, network, seed)

    def open_accounts(self, gateway, tick):
        subnet = self.network.subnet("datacenter")
        payment = self.network.fingerprint("pay")
        for _ in range(self.n_accounts):
            self.buy(gateway, tick, subnet=subnet, asn_kind="datacenter", payment=payment)
        if self.clients is not None:
            self.clients.routed_via = list(self.live)

    def requests(self, tick):
        asks = []
        if self.clients is not None and self.live:
            self.clients.routed_via = list(self.live)
            asks += self.clients.requests(tick)
        for i in range(min(self.per_tick, self.queries - self.sent)):
            if not self.live:
                break
            ask = self.query(self.live[i % len(self.live)])
            if ask is None:
                break
            asks.append(ask)
        return asks

    def receive(self, tick, pairs):
        super().receive(tick, pairs)
        if self.clients is not None:
            self.clients.receive(tick, [(a, e) for a, e in pairs if a.kind == "user"])

    @property
    def done(self) -> bool:
        # the reseller keeps serving its clients after its own distillation budget is spent
        clients = self.clients is not None and bool(self.live)
        return super().done and not clients
