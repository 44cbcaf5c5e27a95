"""The defense contract: five hooks with no-op defaults.

A defense overrides only the hooks it needs; the gateway calls each hook on the whole stack,
in order. `Stack([])` (`defense=none`) is a real, empty stack, so the simulator never
branches on "no defense".

| hook                              | when               |
|-----------------------------------|--------------------|
| admit(account, ctx) -> bool       | account creation (ctx: fees, the verification vendor) |
| check(request, ctx) -> str | None | before generation: a reason to refuse, or None |
| logits_processors() -> list       | during generation (Hugging Face LogitsProcessor) |
| shape(request, completion, ctx)   | after generation: returns the completion to show |
| observe(window, ctx) -> list      | every K ticks: actions (ban/throttle/flag) |

One more, optional: `audit(student, suite, harvest) -> dict` runs after the student is
trained and returns metrics a defense can measure on a suspect model (the watermark's
radioactivity test); the default measures nothing.

A defense that learns from labelled traffic before it serves (the behavioural fingerprint)
names what to simulate in `calibration(ticks)` -> (actors, seed), legitimate users first (`ticks`:
how long the run lasts, None for a server that runs until stopped); the world
runs that simulation apart from the run (`sim.world.calibrate`: its own network and seed, an
oracle teacher, no defenses) and hands the result to `calibrate(traffic)`. The defense never
builds a world of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# a `check` reason with this prefix asks the gateway to hold the request and check it again
# next tick (a delay, like HTTP 429 with Retry-After served by the gateway), not to refuse it
DELAY = "delay: "
# a `check` reason with this prefix says the account asks too fast (HTTP 429): the caller is told
# to slow down (`Exchange.retry`), as an API's rate-limit response tells a client, and a client
# that does will be served again; any other reason is a refusal of the request itself
RATE = "rate limit: "
# a `check` reason with this prefix says the account's allowance for the whole run is spent (as
# an API's `insufficient_quota` error): neither waiting nor slowing down will get it served again
QUOTA = "quota: "
ACTIONS = ("ban", "throttle", "flag")


@dataclass(frozen=True)
class Action:
    kind: str  # one of ACTIONS
    account: str  # account id
    ticks: int = 0  # throttle duration
    by: str = ""  # which defense decided it

    def __post_init__(self):
        if self.kind not in ACTIONS:
            raise ValueError(f"action kind {self.kind!r} is not one of {ACTIONS}")


class Defense:
    def admit(self, account, ctx=None) -> bool:
        return True

    def check(self, request, ctx) -> str | None:
        return None

    def logits_processors(self) -> list:
        return []

    def shape(self, request, completion, ctx):
        return completion

    def observe(self, window, ctx) -> list:
        return []

    def audit(self, student, suite, harvest) -> dict:
        return {}

    calibration_stats: dict = {}  # what `calibrate` measured (reported as `calibration/*`)

    def calibration(self, ticks: int | None) -> tuple[list, int] | None:
        return None

    def calibrate(self, traffic) -> None:
        pass


class Stack(Defense):
    """Defenses applied in order: the first refusal wins; shapes compose; actions add up."""

    def __init__(self, defenses: Sequence[Defense] = ()):
        for d in defenses:
            if not isinstance(d, Defense):
                raise ValueError(f"defense {d!r} does not implement the Defense contract")
        self.defenses = list(defenses)

    def admit(self, account, ctx=None) -> bool:
        return all(d.admit(account, ctx) for d in self.defenses)

    def check(self, request, ctx) -> str | None:
        for d in self.defenses:
            reason = d.check(request, ctx)
            if reason is not None:
                return reason
        return None

    def logits_processors(self) -> list:
        return [p for d in self.defenses for p in d.logits_processors()]

    def shape(self, request, completion, ctx):
        for d in self.defenses:
            completion = d.shape(request, completion, ctx)
        return completion

    def observe(self, window, ctx) -> list:
        return [a for d in self.defenses for a in d.observe(window, ctx)]

    def audit(self, student, suite, harvest) -> dict:
        return {k: v for d in self.defenses for k, v in d.audit(student, suite, harvest).items()}
