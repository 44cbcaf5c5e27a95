"""The simulated API: admit -> check -> generate -> shape, one teacher batch per tick.

Accounts are public objects a defense may read; which actor owns an account is ground truth
kept by the world, never on the account, so no defense can read a label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from defenses.base import Stack
from teachers.lm import Completion


@dataclass(frozen=True)
class Account:
    id: str
    tier: str = "free"
    created_tick: int = 0


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
    reason: str = ""  # why it was blocked
    completion: Completion | None = None  # what the caller sees, with log-probs if exposed


@dataclass
class Context:
    """What defenses may read: the clock and the public account table. No labels."""

    tick: int = 0
    accounts: dict[str, Account] = field(default_factory=dict)


class Gateway:
    def __init__(self, teacher, stack: Stack, *, max_new_tokens: int, top_k_logprobs: int = 0):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        if top_k_logprobs < 0:
            raise ValueError(f"top_k_logprobs={top_k_logprobs} must be >= 0")
        self.teacher, self.stack = teacher, stack
        self.max_new_tokens, self.top_k_logprobs = max_new_tokens, top_k_logprobs
        self.ctx = Context()
        self.log: list[dict] = []
        self._next_id = 0

    def open_account(self, account: Account) -> bool:
        if not self.stack.admit(account):
            return False
        self.ctx.accounts[account.id] = account
        return True

    def serve(self, tick: int, batch: list[tuple[Account, str]]) -> list[Exchange]:
        """Serve one tick's requests: every admitted request goes into ONE teacher call."""
        self.ctx.tick = tick
        exchanges = []
        for account, prompt in batch:
            req = Request(self._next_id, tick, account, prompt)
            self._next_id += 1
            if account.id not in self.ctx.accounts:
                exchanges.append(Exchange(req, "blocked", reason="no such account"))
                continue
            reason = self.stack.check(req, self.ctx)
            exchanges.append(Exchange(req, "blocked", reason=reason) if reason else Exchange(req, "served"))
        todo = [e for e in exchanges if e.status == "served"]
        if todo:
            outs = self.teacher.generate(
                [e.request.prompt for e in todo],
                max_new_tokens=self.max_new_tokens,
                logits_processors=self.stack.logits_processors(),
                top_k_logprobs=self.top_k_logprobs,
            )
            for e, c in zip(todo, outs):
                e.completion = self.stack.shape(e.request, c, self.ctx)
                e.response = e.completion.text
        for e in exchanges:
            self.log.append({"id": e.request.id, "tick": tick, "account": e.request.account.id,
                             "prompt": e.request.prompt, "status": e.status, "reason": e.reason,
                             "response": e.response})
        return exchanges
