"""The simulated world: clock, accounts, users, campaigns, policies, gateway actions, metrics.

Most tests drive the real configs' actors against an oracle stub teacher (it answers what
the sender's problem says, or wrongly above a difficulty), so they need no neural teacher.
"""

import dataclasses

import pytest

from defenses.base import Action, Defense, Stack
from sim.accounts import Account
from sim.clock import Clock
from sim.gateway import PUBLIC_COLUMNS, Context, Gateway, Request
from sim.runner import World
from sim.world import simulate

LABELS = ("owner", "actor", "kind", "attack", "label", "truth", "legit", "campaign")


def Oracle(max_difficulty=5):
    """The answer key, right up to `max_difficulty` and wrong above it."""
    from teachers.oracle import Oracle as AnswerKey

    return AnswerKey({s: {d: float(d <= max_difficulty) for d in range(1, 6)}
                      for s in ("arith", "trace", "tool", "table", "kb")})


def traffic(make_cfg, *overrides, stack=None, oracle=None):
    world = World(make_cfg(*overrides))
    oracle = oracle or Oracle()
    oracle.watch(world.users, world.attacker)
    gw = Gateway(oracle, stack or world.stack, **world.gateway_cfg)
    return world, simulate([world.users, world.attacker], gw, world.suite, world.clock), oracle


class Spy(Defense):
    """Records every object a defense is handed."""

    def __init__(self):
        self.seen = []

    def admit(self, account, ctx):
        self.seen += [account, ctx]
        return True

    def check(self, request, ctx):
        self.seen += [request, ctx]

    def shape(self, request, completion, ctx):
        self.seen += [request, ctx]
        return completion

    def observe(self, window, ctx):
        self.seen += [*window, ctx]
        return []


def test_the_defense_view_carries_no_labels(make_cfg):
    for cls in (Account, Request, Context):
        names = [f.name for f in dataclasses.fields(cls)]
        assert not [n for n in names if n in LABELS or n.startswith("truth")], cls
    spy = Spy()
    world, t, _ = traffic(make_cfg, "attacker=hydra", stack=Stack([spy]))
    kinds = {type(x) for x in spy.seen}
    assert kinds == {Account, Request, Context, dict}
    rows = [x for x in spy.seen if isinstance(x, dict)]
    assert rows and all(tuple(r) == PUBLIC_COLUMNS for r in rows)
    # ids are opaque: neither the owner nor the order of creation shows
    ids = [x.id for x in spy.seen if isinstance(x, Account)]
    assert all(i.startswith("acct-") for i in ids) and ids != sorted(ids)
    # the saved log keeps ground truth in separate columns
    assert set(t.log.columns) - set(PUBLIC_COLUMNS) == {c for c in t.log.columns if c.startswith("truth/")}
    assert set(t.log["truth/kind"]) == {"user", "attack", "cover"}


def test_the_same_seed_reproduces_the_exchange_log(make_cfg):
    logs = [traffic(make_cfg, "attacker=hydra", "policy=evasive", "seed=4")[1].log for _ in range(2)]
    assert logs[0].equals(logs[1])
    other = traffic(make_cfg, "attacker=hydra", "policy=evasive", "seed=5")[1].log
    assert not logs[0]["prompt"].equals(other["prompt"])


def test_every_tick_is_one_teacher_call(make_cfg):
    world, t, oracle = traffic(make_cfg, "attacker=hydra")
    assert oracle.calls == t.log["tick"].nunique()


def test_clock_daily_cycle():
    c = Clock(tick_minutes=15, days=2)
    assert c.ticks_per_day == 96 and c.n_ticks == 192
    day = [c.activity(t) for t in range(96)]
    assert abs(sum(day) / 96 - 1) < 1e-9
    assert c.activity(c.ticks(15)) > 3 * c.activity(c.ticks(3))  # 3pm vs 3am
    assert c.activity(c.ticks(15), utc_offset=12) < c.activity(c.ticks(15))
    with pytest.raises(ValueError, match="clock.tick_minutes=0"):
        Clock(tick_minutes=0)


def test_users_follow_the_day_and_show_the_hard_cases(make_cfg):
    world, t, _ = traffic(make_cfg, "sizes.users=400", "attacker.queries=0", "clock.tick_minutes=15",
                          "clock.days=3")
    users = world.users
    log = t.log[t.log["truth/kind"] == "user"]
    assert len(log) > 500
    # activity follows the region's daily cycle: far more requests by day than by night
    offsets = {a.id: a.utc_offset for a in users.owned_accounts()}
    hours = [(tick / 4 + offsets[a]) % 24 for tick, a in zip(log["tick"], log["account"])]
    day = sum(9 <= h < 21 for h in hours)
    assert day > 2 * (len(hours) - day)
    # a university NAT: many accounts, one address
    ips = [a.ip for a in users.owned_accounts()]
    assert max(ips.count(ip) for ip in set(ips)) >= 0.1 * len(ips)
    # typos and templates, explanation requests, and kb walks one hop per turn
    assert log["prompt"].str.contains(r"^(?:pls|hey|q:|ok|hi,) |\?$|thx$|  ").mean() > 0.05
    assert 0.1 < log["truth/explain"].mean() < 0.9
    assert log["prompt"].str.contains(r"^(?:why )?kb \w+ boss$").sum() >= 5
    # power users: the heaviest accounts send several times the median
    per = log.groupby("account").size()
    assert per.max() > 5 * per.median()


def test_hydra_transfer_budget_matches_naive_without_defenses(make_cfg):
    # equal budgets and the same policy: the same amount and mix of harvest
    _, hy, _ = traffic(make_cfg, "attacker=hydra", "attacker.mix=0.3", "users=none")
    _, na, _ = traffic(make_cfg, "attacker=naive", "users=none")
    for t in (hy, na):
        assert (t.log["truth/kind"] == "attack").sum() == 48
        assert (t.log[t.log["truth/kind"] == "attack"]["status"] == "served").all()


def test_a_per_account_cap_multiplies_hydra_harvest_by_its_accounts(make_cfg):
    cap = ("defense=request_cap", "defense.request_cap.per_account=3", "users=none", "attacker.queries=200",
           "clock.days=4")
    hy_world, hy, _ = traffic(make_cfg, "attacker=hydra", "attacker.accounts=8", "attacker.mix=0",
                              "attacker.pace_per_day=24", "attacker.respawn=false", *cap)
    na_world, na, _ = traffic(make_cfg, "attacker=naive", *cap)
    harvested = [len(w.attacker.harvest) for w in (hy_world, na_world)]
    assert harvested[1] == 3
    assert 6 <= harvested[0] / harvested[1] <= 8
    assert all(e.startswith("quota: ") for e in set(hy.log[hy.log["status"] == "blocked"]["reason"]))
    # a hydra that replaces an account whose quota is spent, as it replaces a banned one,
    # harvests on with new accounts, at their price
    re_world, _, _ = traffic(make_cfg, "attacker=hydra", "attacker.accounts=8", "attacker.mix=0",
                             "attacker.pace_per_day=24", "attacker.tier=paid", *cap)
    a = re_world.attacker
    assert len(a.harvest) > 2 * harvested[0] and len(a.accounts) > 2 * 8
    assert len(a.harvest) <= 3 * len(a.accounts)


class BanFirst(Defense):
    """Bans every account that sent a `why` request, at each observation."""

    def observe(self, window, ctx):
        return [Action("ban", r["account"]) for r in window if r["prompt"].startswith("why ")]


def test_bans_block_and_hydra_buys_replacements(make_cfg):
    world, t, _ = traffic(make_cfg, "attacker=hydra", "attacker.accounts=5", "attacker.tier=paid",
                          "users=none", stack=Stack([BanFirst()]))
    a = world.attacker
    assert len(a.accounts) > 5 and a.retired  # bans were noticed and replacements bought
    assert a.cost_usd >= 20 * len(a.accounts)
    blocked = t.log[t.log["status"] == "blocked"]
    assert set(blocked["reason"]) == {"banned"}
    from sim.metrics import world_metrics

    m = world_metrics(t.log, {x.id for x in a.owned_accounts()}, set(), t.gateway.ctx.banned)
    assert m["detection/precision"] == 1.0 and 0 < m["detection/recall"] <= 1
    assert m["detection/ticks_to_first_ban"] >= 0
    assert m["detection/leaked_before_ban"] < (t.log["truth/kind"] == "attack").sum()
    # a detector that flags the same accounts found the same: precision and recall count
    # flags, while the ban-timed metrics see no ban
    f = world_metrics(t.log, {x.id for x in a.owned_accounts()}, set(), {}, flags=t.gateway.ctx.banned)
    assert (f["detection/precision"], f["detection/recall"]) == (m["detection/precision"], m["detection/recall"])
    assert f["detection/ticks_to_first_ban"] != f["detection/ticks_to_first_ban"]  # NaN
    assert f["detection/leaked_before_ban"] == (t.log[t.log["truth/kind"] == "attack"]["status"] == "served").sum()


class BlockUsers(Defense):
    def check(self, request, ctx):
        return "no" if request.tick % 2 else None


def test_utility_counts_only_well_served_legitimate_requests(make_cfg):
    from sim.metrics import world_metrics

    _, clean, _ = traffic(make_cfg, "sizes.users=60")
    m = world_metrics(clean.log, set(), set(), {})
    assert m["utility/relative"] == 1.0 and m["utility/legit_requests"] > 20
    assert [k for k in m if k.startswith("utility/lost/")] == ["utility/lost/total"] and m["utility/lost/total"] == 0
    _, half, _ = traffic(make_cfg, "sizes.users=60", stack=Stack([BlockUsers()]))
    m = world_metrics(half.log, set(), set(), {})
    assert 0 < m["utility/relative"] < 1
    # what people lost is named by the layer's refusal, and here it is all they lost
    lost = {k: v for k, v in m.items() if k.startswith("utility/lost/")}
    assert set(lost) == {"utility/lost/total", "utility/lost/no"}
    assert lost["utility/lost/no"] == lost["utility/lost/total"] == pytest.approx(1 - m["utility/relative"])
    # false positives: legitimate accounts acted on, of those that sent anything, per detector too
    people = sorted(set(clean.log[clean.log["truth/kind"] == "user"]["account"]))
    acts = [(3, Action("flag", people[0], by="fp")), (5, Action("ban", people[1], by="cl")),
            (6, Action("flag", people[1], by="fp"))]
    m = world_metrics(clean.log, set(), set(people), {people[1]: 5}, flags={people[0]: 3, people[1]: 6}, actions=acts)
    assert m["detection/false_positive_rate"] == 2 / len(people)
    assert m["detection/fp/false_positive_rate"] == 2 / len(people) and m["detection/cl/false_positive_rate"] == 1 / len(people)


def test_boundary_policy_finds_the_failing_difficulty(make_cfg):
    world, t, _ = traffic(make_cfg, "policy=boundary", "attacker.queries=400", "attacker.per_tick=40",
                          "users=none", oracle=Oracle(max_difficulty=2))
    assert world.attacker.policy.boundary == {s: 3 for s in world.suite.skills}
    late = t.log[t.log["truth/kind"] == "attack"].iloc[-150:]
    assert late["truth/difficulty"].isin([2, 3]).all()


def test_sweep_policy_covers_cells_in_order(make_cfg):
    world, t, _ = traffic(make_cfg, "policy=sweep", "attacker.queries=50", "users=none")
    cells = list(zip(t.log["truth/skill"], t.log["truth/difficulty"]))
    assert cells[:3] == [("arith", 1), ("arith", 2), ("arith", 3)] and cells[5] == ("trace", 1)
    assert len(set(cells[:25])) == 25 and cells[25] == cells[0]


def test_router_carries_real_clients_and_attack_traffic(make_cfg):
    world, t, _ = traffic(make_cfg, "attacker=router", "sizes.users=100")
    router_accounts = {a.id for a in world.attacker.owned_accounts()}
    through = t.log[t.log["account"].isin(router_accounts)]
    assert len(router_accounts) == 3
    assert set(through["truth/kind"]) == {"user", "attack"}


@pytest.mark.parametrize("bad, message", [
    ("attacker=hydra attacker.mix=1.5", "attacker.mix=1.5"),
    ("users.personas.student.typo_rate=2", "users.personas.student.typo_rate=2"),
    ("clock.days=0", "clock.days=0"),
    ("gateway.observe_every=0", "gateway.observe_every=0"),
    ("policy=boundary attacker.policy.probes=0", "attacker.policy.probes=0"),
    ("attacker=hydra attacker.tier=gold", "attacker.tier='gold'"),
])
def test_bad_world_values_name_the_value(make_cfg, bad, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("[", r"\[")):
        World(make_cfg(*bad.split()))


CONFIGS = __import__("pathlib").Path(__file__).resolve().parent.parent / "configs"
CAMPAIGNS_AND_POLICIES = sorted(f"{p.parent.name}={p.stem}" for g in ("attacker", "policy")
                                for p in (CONFIGS / g).glob("*.yaml"))


@pytest.mark.parametrize("choice", CAMPAIGNS_AND_POLICIES)
def test_every_campaign_and_policy_runs_end_to_end(make_cfg, tmp_path, choice):
    import sim

    # a judge harvests grades: the recipe that learns from them goes with it
    res = sim.run(make_cfg(choice, *(["recipe=best_of_k"] if choice == "policy=judge" else [])), tmp_path)
    for key in ("utility/relative", "utility/false_ban_rate", "attacker/accounts", "attacker/banned",
                "attacker/cost_usd", "attacker/harvested", "attacker/poisoned_fraction", "detection/precision",
                "detection/recall", "detection/ticks_to_first_ban", "detection/leaked_before_ban"):
        assert key in res, key
    assert res["attacker/queries"] == 48 and res["attacker/harvested"] == 48


def test_people_who_joined_before_the_run_are_past_the_identity_wait(make_cfg):
    from sim.metrics import world_metrics

    args = ("sizes.users=60", "defense=identity", "clock.days=1")
    runs = {d: traffic(make_cfg, *args, f"users.tenure_days={d}")[1] for d in (0, 30)}
    people = {d: t.log[t.log["truth/kind"] == "user"] for d, t in runs.items()}
    # the same people open with the same questions (what they ask next depends on what was refused)
    first = {d: p[p["tick"] == p["tick"].min()]["prompt"].tolist() for d, p in people.items()}
    assert first[0] == first[30] and len(first[0]) > 0
    wait = {d: world_metrics(t.log, set(), set(), {}).get("utility/lost/identity_verification_pending", 0.0)
            for d, t in runs.items()}
    assert wait[0] > 0.1 and wait[30] < wait[0] / 3


class WrongAnswers(Defense):
    """Serves every answer changed: what poisoning does to the accounts it picks."""

    def shape(self, request, completion, ctx):
        from defenses.shaping import join, split

        steps, answer = split(completion.text)
        return dataclasses.replace(completion, text=join(steps, answer + "9"))


def test_what_people_lost_to_hidden_reasoning_and_to_changed_answers_is_told_apart(make_cfg):
    from defenses.shaping import Shaping
    from sim.metrics import world_metrics

    lost = {}
    for name, layer in (("hide", Shaping(hide_reasoning="always")), ("change", WrongAnswers())):
        _, t, _ = traffic(make_cfg, "sizes.users=60", stack=Stack([layer]))
        m = world_metrics(t.log, set(), set(), {})
        lost[name] = {k.removeprefix("utility/lost/"): v for k, v in m.items() if k.startswith("utility/lost/")}
    # a hidden rationale leaves the answer right: only those who asked for reasoning lost anything
    assert set(lost["hide"]) == {"total", "shaped"} and 0 < lost["hide"]["shaped"] < 1
    # a changed answer is wrong for everyone the clean teacher served well
    assert set(lost["change"]) == {"total", "altered"} and lost["change"]["altered"] > 0.9
