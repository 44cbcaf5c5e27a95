"""The simulated API: admit -> check -> generate -> shape, one teacher batch per tick, and
every `observe_every` ticks the defenses observe the log window and act.

Defenses see only views without labels: `Account` (observable indicators), `Request`
(the account view and the text) and the window's public log rows. Which actor owns an
account, and whether a request was distillation traffic, is ground truth kept by the run.

Actions a defense may return from `observe`: `Action("ban", account)`,
`Action("throttle", account, ticks)` (refused until then) and `Action("flag", account)`
(served, but `ctx.flagged` lets shaping and poisoning treat it differently).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from defenses.base import DELAY, QUOTA, RATE, Action, Stack
from sim.accounts import Account
from teachers.lm import Completion

PUBLIC_COLUMNS = ("id", "tick", "asked_tick", "account", "prompt", "status", "reason", "response", "flagged")


@dataclass(frozen=True)
class Request:
    id: int
    tick: int
    account: Account
    prompt: str


@dataclass
class Exchange:
    request: Request
    status: str  # "served" or "blocked"
    response: str = ""  # what the caller sees
    reason: str = ""  # why it was blocked ("banned", "throttled", or the refusing defense's reason)
    retry: bool = False  # blocked for asking too fast (throttled, or a `RATE` reason): slowing down helps
    exhausted: bool = False  # blocked for good: the account's allowance is spent (a `QUOTA` reason)
    completion: Completion | None = None  # what the caller sees, with log-probs if exposed
    raw: Completion | None = None  # what the teacher generated, before shaping (never shown)


@dataclass
class Context:
    """What defenses may read: the clock, the public account table and the gateway's own
    decisions so far. No labels."""

    tick: int = 0
    tick_minutes: int = 1  # simulated minutes per tick (set from the clock)
    accounts: dict[str, Account] = field(default_factory=dict)
    banned: dict[str, int] = field(default_factory=dict)  # account id -> tick of the ban
    throttled: dict[str, int] = field(default_factory=dict)  # account id -> refused until this tick
    flagged: dict[str, int] = field(default_factory=dict)  # account id -> tick of the flag
    clusters: dict[str, str] = field(default_factory=dict)  # account id -> cluster id (written by detectors)
    fees: dict[str, float] = field(default_factory=dict)  # account id -> USD charged at admission (friction)
    verifier: "Verifier | None" = None  # the identity-verification service (a vendor)


class Verifier:
    """An identity-verification vendor: the one place where the truth about an identity is
    used, and only through a noisy verdict. A fraudulent identity passes a check of catch
    rate p with probability 1 - p; a genuine one is wrongly refused with probability q.
    Defenses get the verdict, never the truth.

    No check is perfect (p is at most `MAX_CATCH`, q at least `MIN_FALSE_REJECT`), and each
    identity carries one draw u, fixed when it registers: a check fails when u < p (fraudulent)
    or u < q (genuine). Asking again, or with other rates, cannot average the noise away: no
    combination of checks is wrong less often than the best single one."""

    MAX_CATCH, MIN_FALSE_REJECT = 0.99, 0.001

    def __init__(self, seed: int):
        import random

        self._fraudulent: dict[str, bool] = {}
        self._u: dict[str, float] = {}
        self._rng = random.Random(f"verifier-{seed}")

    def register(self, account_id: str, fraudulent: bool) -> None:
        self._fraudulent[account_id] = fraudulent
        self._u.setdefault(account_id, self._rng.random())

    def passes(self, account_id: str, catch: float, false_reject: float) -> bool:
        if account_id not in self._u:  # never registered: nothing to verify against
            return False
        if self._fraudulent[account_id]:
            return self._u[account_id] >= min(catch, self.MAX_CATCH)
        return self._u[account_id] >= max(false_reject, self.MIN_FALSE_REJECT)


class Gateway:
    def __init__(self, teacher, stack: Stack, *, max_new_tokens: int, top_k_logprobs: int = 0,
                 observe_every: int = 6, temperature: float = 0.0, max_delay: int = 6, seed: int = 0):
        if max_new_tokens < 1:
            raise ValueError(f"gateway.max_new_tokens={max_new_tokens} must be >= 1")
        if top_k_logprobs < 0:
            raise ValueError(f"gateway.top_k_logprobs={top_k_logprobs} must be >= 0")
        if not temperature >= 0:
            raise ValueError(f"gateway.temperature={temperature!r} must be >= 0 (0: greedy)")
        if not isinstance(max_delay, int) or max_delay < 0:
            raise ValueError(f"gateway.max_delay={max_delay!r} must be a non-negative integer (ticks)")
        if not isinstance(observe_every, int) or observe_every < 1:
            raise ValueError(f"gateway.observe_every={observe_every!r} must be a positive integer")
        self.teacher, self.stack = teacher, stack
        self.max_new_tokens, self.top_k_logprobs, self.observe_every = max_new_tokens, top_k_logprobs, observe_every
        self.temperature, self.seed, self.max_delay = float(temperature), seed, max_delay
        self.queue: list[Request] = []  # requests a defense asked to delay
        self.ctx = Context(verifier=Verifier(seed))
        self.log: list[dict] = []
        self.actions: list[tuple[int, Action]] = []  # (tick, action) as applied
        self._next_id = 0
        self._window_start = 0

    def open_account(self, account: Account, fraudulent: bool = False) -> bool:
        """Admit a new account; `fraudulent` (whether its identity is fake) is ground truth the
        opening actor declares, kept by the verification vendor and never shown to defenses."""
        self.ctx.verifier.register(account.id, fraudulent)
        if not self.stack.admit(account, self.ctx):
            return False
        self.ctx.accounts[account.id] = account
        return True

    @property
    def next_id(self) -> int:
        """The id the next request `serve` receives will get (requests are numbered in order)."""
        return self._next_id

    def _refusal(self, req: Request) -> str | None:
        aid = req.account.id
        if aid not in self.ctx.accounts:
            return "no such account"
        if aid in self.ctx.banned:
            return "banned"
        if self.ctx.throttled.get(aid, -1) > self.ctx.tick:  # now, not when it was first asked (delays)
            return "throttled"
        return self.stack.check(req, self.ctx)

    def serve(self, tick: int, batch: list[tuple[Account, str]]) -> list[Exchange]:
        """Serve one tick's requests, and delayed ones now due: every admitted request goes into
        ONE teacher call. Returns the exchanges completed this tick (a delayed request comes
        back in the tick it is finally served or given up, `max_delay` ticks at most)."""
        self.ctx.tick = tick
        requests = self.queue
        for account, prompt in batch:
            requests.append(Request(self._next_id, tick, account, prompt))
            self._next_id += 1
        self.queue, exchanges = [], []
        for req in requests:
            reason = self._refusal(req)
            if reason and reason.startswith(DELAY):
                if tick - req.tick < self.max_delay:
                    self.queue.append(req)
                    continue
                reason = reason.removeprefix(DELAY) + " (delayed too long)"
            exchanges.append(Exchange(req, "blocked", reason=reason, retry=reason == "throttled" or reason.startswith(RATE),
                                      exhausted=reason.startswith(QUOTA))
                             if reason else Exchange(req, "served"))
        todo = [e for e in exchanges if e.status == "served"]
        if todo:
            outs = self.teacher.generate(
                [e.request.prompt for e in todo],
                max_new_tokens=self.max_new_tokens,
                logits_processors=self.stack.logits_processors(),
                top_k_logprobs=self.top_k_logprobs,
                # sampled APIs draw from a generator seeded per tick: same seed, same log
                **({"temperature": self.temperature, "seed": self.seed * 1_000_003 + tick} if self.temperature else {}),
            )
            for e, c in zip(todo, outs):
                e.raw = c
                e.completion = self.stack.shape(e.request, c, self.ctx)
                e.response = e.completion.text
        for e in exchanges:
            aid = e.request.account.id
            self.log.append({"id": e.request.id, "tick": tick, "asked_tick": e.request.tick, "account": aid,
                             "prompt": e.request.prompt,
                             "status": e.status, "reason": e.reason, "response": e.response,
                             "flagged": aid in self.ctx.flagged})
        return exchanges

    def observe(self, tick: int) -> list[Action]:
        """The defenses read the log since the last observation and act; actions apply now."""
        window = self.log[self._window_start:]
        self._window_start = len(self.log)
        self.ctx.tick = tick
        actions = self.stack.observe(window, self.ctx)
        for a in actions:
            if not isinstance(a, Action):
                raise TypeError(f"a defense returned {a!r} from observe(); expected defenses.base.Action")
            if a.kind == "ban":
                self.ctx.banned.setdefault(a.account, tick)
            elif a.kind == "throttle":
                self.ctx.throttled[a.account] = max(self.ctx.throttled.get(a.account, 0), tick + a.ticks)
            else:
                self.ctx.flagged.setdefault(a.account, tick)
            self.actions.append((tick, a))
        return actions
