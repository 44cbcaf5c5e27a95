"""The actor contract: actors own accounts, emit requests each tick, and react.

An actor's request is an `Ask`: the text it sends plus the ground truth behind it (the
problem, whether it is distillation traffic). The gateway and the defenses never see an
`Ask`; they see `sim.gateway.Request`, which carries the account view and the text only.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass

from sim.accounts import Account, Network
from sim.clock import Clock
from sim.tasks import Problem, Suite, final_answer, shows_reasoning


@dataclass
class Ask:
    account: Account
    text: str
    problem: Problem
    explain: bool
    actor: str  # ground truth: who sent it
    kind: str  # ground truth: "user" (a real person's request), "attack" (distillation), "cover" (mixing)
    sender: int = -1  # the actor's own index of the person behind it (a user, a routed client)

    @property
    def attack(self) -> bool:
        return self.kind == "attack"


def served_well(suite: Suite, ask: Ask, text: str) -> bool:
    """The utility rule (docs/metrics.md): the final answer is right and, when the reasoning was asked
    for, the reasoning was shown (a hidden or truncated rationale does not serve the user)."""
    if not suite.grade(ask.problem, text):
        return False
    return not ask.explain or shows_reasoning(ask.problem, text)


def answer_of(exchange) -> str:
    """What a caller reads as the answer (empty when it was refused)."""
    return final_answer(exchange.response) if exchange.status == "served" else ""


class Actor(ABC):
    """Base class: `bind` before the clock starts, then `open_accounts`, then per tick
    `requests` and `receive`. Requests of kind "user" are what `utility/*` measures; the
    accounts of a non-`legit` actor are the ones detection should find."""

    name = "actor"
    legit = False

    def bind(self, suite: Suite, clock: Clock, network: Network, seed: int, users=None) -> None:
        self.suite, self.clock, self.network = suite, clock, network
        self.rng = random.Random(f"{self.name}-{seed}")

    @abstractmethod
    def open_accounts(self, gateway, tick: int) -> None:
        """Open this actor's accounts at the start (through the gateway's admit)."""

    @abstractmethod
    def requests(self, tick: int) -> list[Ask]:
        """This tick's requests."""

    def owned_accounts(self) -> list[Account]:
        """Every account this actor opened (ground truth for detection metrics)."""
        return list(self.accounts)

    def receive(self, tick: int, pairs: list) -> None:
        """`pairs`: (Ask, Exchange) for every request this actor sent this tick."""

    @property
    def done(self) -> bool:
        """True once the actor will never send again (the run may end early)."""
        return False
