"""Invariants of the gateway and the defense stack, property-tested over random traffic."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from defenses.base import Defense
from sim.gateway import Verifier

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@SETTINGS
@given(checks=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=8), seed=st.integers(0, 2**16))
def test_no_combination_of_identity_checks_beats_the_vendors_best(checks, seed):
    # a defense that asks the vendor any checks, any number of times, and guesses "fraudulent"
    # when any fails: it is wrong on an identity exactly when the vendor's best check is
    v = Verifier(seed)
    rng = random.Random(seed)
    truth = {f"a{i}": rng.random() < 0.5 for i in range(300)}
    for a, fraud in truth.items():
        v.register(a, fraud)
    checks = [*checks, (1.0, 0.0)]
    verdicts = {a: [v.passes(a, c, q) for c, q in checks] for a in truth}
    assert all(verdicts[a] == [v.passes(a, c, q) for c, q in checks] for a in truth)  # asking again: the same
    best = {a: v.passes(a, 1.0, 0.0) for a in truth}
    for a, fraud in truth.items():
        if fraud and best[a]:  # the best check missed this fraud: every check with p <= MAX_CATCH misses it
            assert all(verdicts[a])
        if not fraud and not best[a]:  # and a genuine identity it refused, every check refuses
            assert not any(verdicts[a])


def test_the_vendors_best_check_is_still_noisy():
    v, rng = Verifier(0), random.Random(0)
    truth = {f"a{i}": i % 2 == 0 for i in range(20000)}
    for a, fraud in truth.items():
        v.register(a, fraud)
    missed = sum(v.passes(a, 1.0, 0.0) for a, fraud in truth.items() if fraud)
    refused = sum(not v.passes(a, 1.0, 0.0) for a, fraud in truth.items() if not fraud)
    assert 50 < missed < 150 and 1 < refused < 30  # ~1% of frauds pass, ~0.1% of people are refused


class Teacher:
    """Answers instantly: the invariants are the gateway's, not the model's."""

    def generate(self, prompts, **kw):
        from teachers.lm import Completion

        return [Completion(text=f"ok {p[-3:]}=1 #1") for p in prompts]


class Chaos(Defense):
    """A defense that delays, bans and throttles at random (seeded), to exercise the gateway."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def admit(self, account, ctx=None):
        return True

    def check(self, request, ctx):
        from defenses.base import DELAY

        return DELAY + "chaos" if self.rng.random() < 0.2 else None

    def logits_processors(self):
        return []

    def shape(self, request, completion, ctx):
        return completion

    def observe(self, window, ctx):
        from defenses.base import Action

        out = []
        for a in sorted(ctx.accounts):
            r = self.rng.random()
            if r < 0.05:
                out.append(Action("ban", a, by="chaos"))
            elif r < 0.25:
                out.append(Action("throttle", a, ticks=self.rng.randint(1, 4), by="chaos"))
        return out

    def audit(self, *a):
        return {}


@SETTINGS
@given(seed=st.integers(0, 2**16), ticks=st.integers(5, 30), per_tick=st.integers(0, 12))
def test_banned_accounts_are_never_served_and_throttled_ones_not_before_their_tick(seed, ticks, per_tick):
    from defenses.base import Stack
    from sim.accounts import Account
    from sim.gateway import Gateway

    gw = Gateway(Teacher(), Stack([Chaos(seed)]), max_new_tokens=8, observe_every=2, max_delay=3, seed=seed)
    accounts = [Account(f"acct-{i}") for i in range(6)]
    for a in accounts:
        gw.open_account(a)
    rng = random.Random(seed)
    for t in range(ticks):
        banned, throttled = dict(gw.ctx.banned), dict(gw.ctx.throttled)
        for e in gw.serve(t, [(rng.choice(accounts), f"calc {rng.randint(1, 9)}+1") for _ in range(per_tick)]):
            if e.status == "served":
                aid = e.request.account.id
                assert aid not in banned  # banned before this tick: never served, delayed requests included
                assert throttled.get(aid, -1) <= t  # throttled until a later tick: not served now
                assert e.request.tick <= t and t - e.request.tick <= gw.max_delay
            elif e.reason == "throttled":  # refused as throttled only while the throttle still runs
                assert throttled.get(e.request.account.id, -1) > t
        if t % gw.observe_every == 0:
            gw.observe(t)


@SETTINGS
@given(words=st.lists(st.sampled_from(["ok", "then", "x=3", "ab=ba", "4*7=8", "#", "#4", "done", "y=", "=z"]),
                      max_size=12),
       cut=st.integers(0, 60), mode=st.sampled_from(["always", "elicited", "flagged"]))
def test_hidden_reasoning_never_reaches_the_caller(words, cut, mode):
    # whatever the teacher wrote, cut off anywhere by the token limit, with or without the mark
    from defenses.shaping import Shaping
    from sim.accounts import Account
    from sim.gateway import Context, Request
    from sim.tasks.base import ANSWER_MARK
    from teachers.lm import Completion

    text = " ".join(words)[:cut]
    ctx = Context(flagged={"a": 0})
    shaped = Shaping(hide_reasoning=mode).shape(Request(0, 0, Account("a"), "why calc 1+1"), Completion(text), ctx).text
    assert shaped == "" or shaped.startswith(ANSWER_MARK)  # a final answer or nothing
    if ANSWER_MARK in text:
        assert shaped == ANSWER_MARK + text.rsplit(ANSWER_MARK, 1)[1]


@SETTINGS
@given(seed=st.integers(0, 2**16), per_day=st.integers(1, 20), per_minute=st.floats(0.05, 2.0),
       mode=st.sampled_from(["reject", "delay"]), per_tick=st.integers(1, 10))
def test_no_account_is_served_beyond_its_rate_limit(seed, per_day, per_minute, mode, per_tick):
    from collections import Counter

    from defenses.base import Stack
    from defenses.rate_limit import RateLimit
    from sim.accounts import Account
    from sim.gateway import Gateway

    rl = RateLimit(per_minute={"account": per_minute}, per_day={"account": per_day}, burst_minutes=10, mode=mode)
    gw = Gateway(Teacher(), Stack([rl]), max_new_tokens=8, max_delay=3, seed=seed)
    gw.ctx.tick_minutes = 60  # 24 ticks a day
    accounts = [Account(f"acct-{i}") for i in range(3)]
    for a in accounts:
        gw.open_account(a)
    rng, served = random.Random(seed), Counter()
    for t in range(60):
        for e in gw.serve(t, [(rng.choice(accounts), "calc 1+1") for _ in range(per_tick)]):
            if e.status == "served":
                served[e.request.account.id, t * 60 // 1440] += 1
                minute = served[e.request.account.id, "minute", t] = served[e.request.account.id, "minute", t] + 1
                assert minute <= per_minute * 10 + per_minute * 60 + 1  # the bucket: burst plus a tick's refill
    assert all(n <= per_day for (a, *rest), n in served.items() if len(rest) == 1)


@SETTINGS
@given(seed=st.integers(0, 2**16), bits=st.floats(1.0, 60.0), per_tick=st.integers(1, 12),
       cells=st.integers(1, 12))
def test_no_account_is_served_beyond_its_information_budget(seed, bits, per_tick, cells):
    """Over the requests each account was served, the coverage information n H(cells) (in
    bits, recomputed here from the served prompts) never exceeds the configured budget."""
    import math
    from collections import Counter, defaultdict

    from defenses.base import Stack
    from defenses.info_budget import InfoBudget
    from defenses.lexicon import Lexicon
    from sim.accounts import Account
    from sim.gateway import Gateway

    lexicon = Lexicon(("calc", "run", "tool", "tbl", "kb"), frozenset(), frozenset())
    gw = Gateway(Teacher(), Stack([InfoBudget(bits=bits, keys=("account",), lexicon=lexicon)]), max_new_tokens=8, seed=seed)
    accounts = [Account(f"acct-{i}") for i in range(3)]
    for a in accounts:
        gw.open_account(a)
    rng = random.Random(seed)
    prompts = [f"{rng.choice(['calc', 'run', 'tool', 'tbl', 'kb'])} {'x' * rng.randrange(1, 40)}" for _ in range(cells)]
    served: dict[str, Counter] = defaultdict(Counter)
    for t in range(30):
        for e in gw.serve(t, [(rng.choice(accounts), rng.choice(prompts)) for _ in range(per_tick)]):
            if e.status == "served":
                served[e.request.account.id][lexicon.cell(e.request.prompt)] += 1
    for counts in served.values():
        n = sum(counts.values())
        info = n * math.log2(n) - sum(c * math.log2(c) for c in counts.values())  # n H(p)
        assert info <= bits + 1e-9
