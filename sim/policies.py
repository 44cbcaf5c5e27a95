"""Query policies: what an attacker asks, composable with any campaign (config group `policy/`).

A policy picks the next question (`next`), writes it (`render`) and may learn from the
answer (`feedback`). The campaign decides through which account and when.

- `Random`: sample the task distribution.
- `Sweep`: methodical coverage of every skill x difficulty cell, in order.
- `Boundary`: capability mapping (the 2026 reports' "systematic sequences of increasingly
  hard queries"): per skill, raise the difficulty until the teacher starts failing, then
  spend the budget at that boundary. The attacker judges failure with its own verifier
  (checking an answer is easier than producing it, as unit tests are for code), and its
  probes count against the budget.
- `CotElicit`: chain-of-thought harvesting: every request asks for the reasoning.
- `Evasive`: another policy's questions, written to look organic: typos, chatty templates
  and follow-up turns like a person's.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence

from sim.records import rate
from sim.surface import followup, render
from sim.tasks import MAX_DIFFICULTY, MIN_DIFFICULTY, Problem, Suite, check_difficulty, final_answer


class Policy(ABC):
    grades = False  # its harvest is the teacher's grades of candidates (policy=judge), not answers

    def bind(self, suite: Suite, budget: int) -> None:
        self.suite, self.budget = suite, budget

    @abstractmethod
    def next(self, rng: random.Random) -> tuple[Problem, bool]:
        """The next question to ask, and whether to ask for its reasoning."""

    def render(self, problem: Problem, explain: bool, rng: random.Random) -> str:
        return problem.request(explain)

    def feedback(self, problem: Problem, explain: bool, exchange, rng: random.Random) -> None:
        """Called with every answer (or refusal) the policy's question got."""

    def ready(self) -> bool:
        """Whether it can say what to ask next (a policy may wait for its last answers)."""
        return True

    def columns(self, problem: Problem, exchange) -> dict:
        """Columns of its own that a served exchange adds to the harvest (a judge's grades)."""
        return {}

    def surface(self) -> dict[str, float] | None:
        """Its requests as a columnar replay draws them (`sim.incident`): every skill x
        difficulty cell alike, asking for the reasoning, misspelt, wrapped in chat and followed
        up at these rates (`explain_rate`, `typo_rate`, `template_rate`, `followup_rate`). None
        when its requests are not such draws (it aims at some cells, or chooses with a model)."""
        return None


def plain_surface(explain_rate: float) -> dict[str, float]:
    """The surface of a policy that writes its questions as the task does (no typos, no chat)."""
    return {"explain_rate": explain_rate, "typo_rate": 0.0, "template_rate": 0.0, "followup_rate": 0.0}


class Random(Policy):
    def __init__(self, explain_rate: float = 1.0, skills: Sequence[str] | None = None,
                 difficulties: Sequence[int] | None = None):
        self.explain_rate = rate(explain_rate, "attacker.policy.explain_rate")
        self.skills = list(skills) if skills else None
        try:
            self.difficulties = [check_difficulty(d) for d in difficulties] if difficulties else None
        except ValueError as e:
            raise ValueError(f"attacker.policy.difficulties: {e}") from None

    def bind(self, suite: Suite, budget: int) -> None:
        super().bind(suite, budget)
        if self.skills:
            suite.check_skills(self.skills, "attacker.policy.skills")

    def next(self, rng):
        skill = rng.choice(self.skills) if self.skills else None
        d = rng.choice(self.difficulties) if self.difficulties else None
        return self.suite.sample(rng, skill, d), rng.random() < self.explain_rate

    def surface(self):
        return None if self.skills or self.difficulties else plain_surface(self.explain_rate)


class CotElicit(Random):
    """Random questions, every one asking the teacher to articulate its reasoning."""

    def __init__(self, skills: Sequence[str] | None = None, difficulties: Sequence[int] | None = None):
        super().__init__(1.0, skills, difficulties)


class Sweep(Policy):
    """Every skill x difficulty cell in order, one question each, pass after pass: the whole
    capability map is covered as early as possible, and evenly."""

    def __init__(self, explain_rate: float = 1.0):
        self.explain_rate = rate(explain_rate, "attacker.policy.explain_rate")

    def bind(self, suite, budget):
        super().bind(suite, budget)
        self.cells = [(s, d) for s in suite.skills for d in suite.difficulties]
        self.i = 0

    def next(self, rng):
        skill, d = self.cells[self.i % len(self.cells)]
        self.i += 1
        return self.suite.sample(rng, skill, d), rng.random() < self.explain_rate

    def surface(self):  # every cell in turn: uniform over the cells, as the replay draws them
        return plain_surface(self.explain_rate)


class Boundary(Policy):
    """Per skill: `probes` questions per level from difficulty 1 up; the first level where the
    verified accuracy drops below `fail_below` is the boundary; the rest of the budget goes to
    the boundary level and the one below it, half each."""

    def __init__(self, probes: int = 8, fail_below: float = 0.5, explain_rate: float = 1.0):
        if not isinstance(probes, int) or probes < 1:
            raise ValueError(f"attacker.policy.probes={probes!r} must be a positive integer")
        self.probes = probes
        self.fail_below = rate(fail_below, "attacker.policy.fail_below")
        self.explain_rate = rate(explain_rate, "attacker.policy.explain_rate")

    def bind(self, suite, budget):
        super().bind(suite, budget)
        self.level = {s: MIN_DIFFICULTY for s in suite.skills}
        self.issued = {s: 0 for s in suite.skills}  # probes sent at the current level
        self.results: dict[str, list[bool]] = {s: [] for s in suite.skills}
        self.boundary: dict[str, int] = {}
        self.turn = 0

    def next(self, rng):
        skills = list(self.suite.skills)
        for k in range(len(skills)):  # round robin over skills still probing, with probes left
            s = skills[(self.turn + k) % len(skills)]
            if s not in self.boundary and self.issued[s] < self.probes:
                self.turn += k + 1
                self.issued[s] += 1
                return self.suite.sample(rng, s, self.level[s]), rng.random() < self.explain_rate
        # every probing skill waits for answers: exploit what is mapped (or the current level)
        s = rng.choice(skills)
        top = self.boundary.get(s, self.level[s])
        d = rng.choice([max(MIN_DIFFICULTY, top - 1), top])
        return self.suite.sample(rng, s, d), rng.random() < self.explain_rate

    def feedback(self, problem, explain, exchange, rng):
        s = problem.skill
        if s in self.boundary or problem.difficulty != self.level[s] or exchange.status != "served":
            return
        self.results[s].append(self.suite.grade(problem, exchange.response))  # the attacker's verifier
        if len(self.results[s]) < self.probes:
            return
        acc = sum(self.results[s]) / len(self.results[s])
        if acc < self.fail_below or self.level[s] == MAX_DIFFICULTY:
            self.boundary[s] = self.level[s]
        else:
            self.level[s] += 1
            self.issued[s], self.results[s] = 0, []


class Evasive(Policy):
    """Wraps `base` (Random by default): organic-looking text and follow-up turns."""

    def __init__(self, base: Policy | None = None, typo_rate: float = 0.1, template_rate: float = 0.4,
                 followup_rate: float = 0.2):
        if base is not None and not isinstance(base, Policy):
            raise ValueError(f"attacker.policy.base={base!r} is not a query policy")
        self.base = base or Random()
        self.typo_rate = rate(typo_rate, "attacker.policy.typo_rate")
        self.template_rate = rate(template_rate, "attacker.policy.template_rate")
        self.followup_rate = rate(followup_rate, "attacker.policy.followup_rate")
        self.pending: deque = deque()

    def bind(self, suite, budget):
        super().bind(suite, budget)
        self.base.bind(suite, budget)

    def next(self, rng):
        if self.pending:
            return self.pending.popleft()
        return self.base.next(rng)

    def render(self, problem, explain, rng):
        return render(problem, explain, rng, self.typo_rate, self.template_rate)

    def surface(self):
        base = self.base.surface()
        return None if base is None else {**base, "typo_rate": self.typo_rate, "template_rate": self.template_rate,
                                          "followup_rate": self.followup_rate}

    def feedback(self, problem, explain, exchange, rng):
        self.base.feedback(problem, explain, exchange, rng)
        if exchange.status == "served" and rng.random() < self.followup_rate:
            nxt = followup(self.suite, problem, explain, final_answer(exchange.response), rng)
            if nxt is not None:
                self.pending.append(nxt)
