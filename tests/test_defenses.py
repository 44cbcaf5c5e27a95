"""Serving-side defenses on hand-made traffic: each limit bites where its docstring says."""

import pytest

from defenses.rate_limit import RateLimit
from sim.accounts import Account
from sim.gateway import Context, Request


def req(tick, account, ctx=None):
    if ctx is not None:
        ctx.tick = tick  # defenses read the time from the context (a delayed request is rechecked)
    return Request(0, tick, account, "calc 1+1")


def test_rate_limit_token_bucket_refills_per_minute():
    rl = RateLimit(per_minute={"account": 1.0}, burst_minutes=3)
    ctx, a = Context(tick_minutes=1), Account("a")
    assert [rl.check(req(0, a, ctx), ctx) for _ in range(4)] == [None, None, None, "rate limit: account/minute"]
    assert rl.check(req(1, a, ctx), ctx) is None  # one minute later: one token back
    assert rl.check(req(1, a, ctx), ctx) == "rate limit: account/minute"
    assert rl.check(req(1, Account("b"), ctx), ctx) is None  # buckets are per account


def test_shared_infrastructure_keys_bind_across_accounts():
    rl = RateLimit(per_day={"subnet": 5})
    ctx = Context(tick_minutes=60)
    accounts = [Account(f"a{i}", subnet="185.1.2", ip=f"185.1.2.{i}") for i in range(10)]
    out = [rl.check(req(0, a, ctx), ctx) for a in accounts]
    assert out.count(None) == 5 and out[-1] == "rate limit: subnet/day"
    assert rl.check(req(24, accounts[0], ctx), ctx) is None  # a new simulated day


def test_cluster_keys_follow_the_detector():
    rl = RateLimit(per_day={"cluster": 2})
    ctx = Context(tick_minutes=1, clusters={"a": "c1", "b": "c1"})
    assert [rl.check(req(0, Account(x)), ctx) for x in "abab"] == [None, None, "rate limit: cluster/day",
                                                                     "rate limit: cluster/day"]
    assert rl.check(req(0, Account("z")), ctx) is None  # unclustered: its own cluster


@pytest.mark.parametrize("kw, message", [({"per_minute": {"acount": 1}}, "per_minute.acount"),
                                         ({"per_day": {"ip": -1}}, "per_day.ip=-1"),
                                         ({"burst_minutes": 0}, "burst_minutes=0")])
def test_rate_limit_rejects_bad_values(kw, message):
    with pytest.raises(ValueError, match=message):
        RateLimit(**kw)


# -- shaping and poisoning ------------------------------------------------------------------
from defenses.poison import Poison  # noqa: E402
from sim.answers import plausible_wrong  # noqa: E402
from defenses.shaping import Shaping  # noqa: E402
from teachers.lm import Completion  # noqa: E402


def shaped(defense, prompt, text, account="a", flagged=(), tops=None):
    ctx = Context(flagged={f: 0 for f in flagged})
    return defense.shape(Request(0, 0, Account(account), prompt), Completion(text, tops), ctx)


def test_hide_reasoning_modes():
    text = "6*6=6 6+6=2 #2"
    assert shaped(Shaping("always"), "calc 6*6+6", text).text == "#2"
    assert shaped(Shaping("elicited"), "why calc 6*6+6", text).text == "#2"
    assert shaped(Shaping("elicited"), "pls why calc 6*6+6", text).text == "#2"
    assert shaped(Shaping("elicited"), "calc 6*6+6", "#2").text == "#2"
    assert shaped(Shaping("flagged"), "why calc 6*6+6", text).text == text
    assert shaped(Shaping("flagged"), "why calc 6*6+6", text, flagged=["a"]).text == "#2"
    assert shaped(Shaping(summarise_steps=1), "why calc 6*6+6", text).text == "6*6=6 #2"


def test_logprobs_are_truncated_and_rounded_and_noise_keeps_the_answer():
    tops = [[("a", -0.123), ("b", -1.987), ("c", -3.2)]]
    out = shaped(Shaping(logprob_top_k=2, logprob_decimals=1), "x", "#a", tops=tops)
    assert out.top_logprobs == [[("a", -0.1), ("b", -2.0)]]
    noisy = shaped(Shaping(noise=1.0), "why calc 6*6+6", "6*6=6 6+6=2 #2")
    assert noisy.text.endswith("#2") and noisy.text != "6*6=6 6+6=2 #2"


def test_poison_gives_plausible_wrong_answers_with_agreeing_rationale():
    rng = __import__("random").Random(0)
    for answer, prompt in [("4", "calc 1+3"), ("lo", "tbl max ka3 lo7 mi2"), ("tavos", "kb zora city"),
                           ("book(rome,2,17)", "tool for 2 to rome at 5pm"), ("edcb", "run abcd rev rot")]:
        for _ in range(20):
            wrong = plausible_wrong(answer, prompt, rng)
            assert wrong != answer and len(wrong) == len(answer) or answer.startswith("book")
    out = shaped(Poison("flagged"), "why tbl max ka3 lo7 mi2", "ka3=ka3 lo7=lo7 mi2=lo7 #lo", flagged=["a"])
    steps, answer = out.text.split(" #")
    assert answer in ("ka", "mi") and steps == f"ka3=ka3 lo7=lo7 mi2={answer}7"
    assert shaped(Poison("flagged"), "calc 1+3", "#4").text == "#4"  # not flagged: untouched
    some = Poison("random", 0.3)
    hits = sum(shaped(some, "calc 1+3", "#4").text != "#4" for _ in range(1000))
    assert 240 < hits < 360


@pytest.mark.parametrize("build, message", [(lambda: Shaping("sometimes"), "hide_reasoning='sometimes'"),
                                            (lambda: Shaping(temperature=0), "temperature=0"),
                                            (lambda: Poison("everyone"), "target='everyone'"),
                                            (lambda: Poison(fraction=2), "fraction=2")])
def test_shaping_and_poison_reject_bad_values(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# -- identity ----------------------------------------------------------------------------------
from defenses.base import Stack  # noqa: E402
from defenses.identity import Identity  # noqa: E402
from sim.gateway import Gateway  # noqa: E402


def test_identity_catches_fraud_at_its_rate_and_charges_everyone_friction():
    ident = Identity({"free": {"catch": 0.7, "false_reject": 0.05, "usd": 2.0, "minutes": 30}})
    gw = Gateway(None, Stack([ident]), max_new_tokens=4, seed=1)
    gw.ctx.tick_minutes = 10
    fraud = [gw.open_account(Account(f"f{i}"), fraudulent=True) for i in range(2000)]
    real = [gw.open_account(Account(f"r{i}"), fraudulent=False) for i in range(2000)]
    assert 0.25 < fraud.count(True) / 2000 < 0.35  # 70% caught
    assert 0.93 < real.count(True) / 2000 < 0.97  # 5% wrongly refused
    assert gw.ctx.fees["r7"] == gw.ctx.fees["f7"] == 2.0
    # usable only after the verification time
    assert ident.check(req(2, Account("r0"), gw.ctx), gw.ctx) == "identity verification pending"
    assert ident.check(req(3, Account("r0"), gw.ctx), gw.ctx) is None
    # a tier without a level is not checked
    assert gw.open_account(Account("p", tier="paid"), fraudulent=True)


@pytest.mark.parametrize("levels, message", [({"gold": {}}, "levels.gold"),
                                             ({"free": {"catch": 2}}, "free.catch=2.0"),
                                             ({"free": {"cost": 1}}, "free.cost")])
def test_identity_rejects_bad_levels(levels, message):
    with pytest.raises(ValueError, match=message):
        Identity(levels)


# -- information budget --------------------------------------------------------------------------
from defenses.info_budget import InfoBudget  # noqa: E402
from defenses.lexicon import Lexicon  # noqa: E402

LEXICON = Lexicon(("calc", "run", "tool", "tbl", "kb"), frozenset({"pls", "hey"}), frozenset({"?", "thx"}))


def test_command_reader_survives_templates_and_typos():
    lex = LEXICON
    assert lex.command("pls why calc 1+2") == "calc" and lex.command("why clac 1+2 thx") == "calc"
    assert lex.command("hey tlb max ka3 lo7") == "tbl" and lex.command("hello") == "other"
    assert lex.cell("why kb zora boss city", 4) == lex.cell("pls kb zora boss city ?", 4) == ("kb", 4)
    assert lex.wrapped("hey calc 1") and lex.wrapped("calc 1 ?") and lex.wrapped("calc 1?")
    assert not lex.wrapped("why calc 1") and not lex.wrapped("calc thx 1")


def test_the_lexicon_is_learned_from_traffic_not_from_the_generator(make_cfg):
    """From the calibration traffic of the fingerprint (people and campaigns, text only), the
    lexicon finds every command word and every chat word the simulator writes with, and
    nothing else; a plug-in skill's command word is learned the same way."""
    from sim.surface import PREFIXES, SUFFIXES
    from tests.test_world import traffic

    _, t, _ = traffic(make_cfg, "attacker=hydra", "policy=evasive", "attacker.queries=1500", "sizes.users=300",
                      "clock.days=2", "clock.tick_minutes=60")
    lex = Lexicon.fit(t.log["prompt"])
    assert set(lex.commands) == {"calc", "run", "tool", "tbl", "kb"}, lex
    assert lex.prefixes == {p.strip() for p in PREFIXES} and lex.suffixes == {s.strip() for s in SUFFIXES}, lex
    zz = [f"zz {i} {j}" for i in range(40) for j in range(5)]
    lex = Lexicon.fit([*t.log["prompt"], *zz, *(f"pls {p}" for p in zz[:30])])
    assert "zz" in lex.commands and "pls" in lex.prefixes and lex.command("ok why zz 3 4") == "zz"


def test_info_budget_is_calibrated_on_legitimate_traffic_before_it_counts(make_cfg):
    from sim.runner import World
    from sim.world import calibrate

    world = World(make_cfg("defense=info_budget"))
    ib = world.stack.defenses[0]
    with pytest.raises(RuntimeError, match="not calibrated"):
        ib.check(Request(0, 0, Account("a"), "calc 1+2"), Context())
    calibrate(world.stack, world.suite, world.clock)
    assert set(ib.lexicon.commands) <= {"calc", "run", "tool", "tbl", "kb"} and "calc" in ib.lexicon.commands
    with pytest.raises(ValueError, match="info_budget.users"):
        InfoBudget(bits=10.0)


def _spent(prompts, bits=1e9):
    ib, acc = InfoBudget(bits=bits, keys=["account"], lexicon=LEXICON), Account("a")
    served = sum(ib.check(Request(0, 0, acc, p), Context()) is None for p in prompts)
    return ib.spent["account", "a"], served


def test_a_methodical_sweep_spends_the_budget_much_faster_than_organic_use(make_cfg):
    """Hand-made sequences of 100 calls each: a sweep over every skill x difficulty cell in
    order, and a student who asks about arithmetic and tables at the easy end, sometimes
    asking "why" about the last answer, with typos and chat templates."""
    import random

    from sim.runner import World
    from sim.surface import render

    world = World(make_cfg("policy=sweep", "attacker.queries=100"))
    suite, rng, policy = world.suite, random.Random(0), world.attacker.policy
    sweep = [policy.render(*policy.next(rng), rng) for _ in range(100)]
    organic, last = [], None
    while len(organic) < 100:
        if last is not None and rng.random() < 0.3:
            problem, explain = last, True  # "why?" about the last answer
        else:
            problem, explain = suite.sample(rng, rng.choice(["arith", "table"]), rng.choice([1, 1, 2])), False
        organic.append(render(problem, explain, rng, typo_rate=0.15, template_rate=0.4))
        last = problem
    s_bits, _ = _spent(sweep)
    o_bits, _ = _spent(organic)
    assert s_bits > 2 * o_bits, (s_bits, o_bits)
    # with a budget between the two, the sweep is cut off and the organic user is not
    budget = (s_bits + o_bits) / 2
    assert _spent(sweep, budget)[1] < 100 and _spent(organic, budget)[1] == 100


def test_info_budget_is_n_times_the_empirical_entropy():
    import math

    prompts = ["calc 1+2"] * 3 + ["run ab rev"]
    bits, served = _spent(prompts)
    p = [3 / 4, 1 / 4]
    assert served == 4 and math.isclose(bits, -4 * sum(x * math.log2(x) for x in p))
    assert _spent(["calc 1+2"] * 50)[0] == 0  # one cell forever: nothing new about the map


# -- antidistillation sampling ---------------------------------------------------------------------
def test_antidistill_processor_moves_greedy_choices_with_lambda(make_cfg):
    import torch

    from defenses.antidistill import Antidistill
    from sim.runner import World
    from teachers.vocab import CharTokenizer

    world = World(make_cfg())
    assert Antidistill(world.suite, lam=0.0).logits_processors() == []
    proc = Antidistill(world.suite, lam=1.0, proxy_steps=5, downstream=8).logits_processors()[0]
    tok = CharTokenizer()
    ids = torch.tensor([tok.request_ids("why calc 1+2") + tok.encode("1+2=")])
    scores = torch.zeros(1, tok.vocab_size)
    delta = proc(ids, scores.clone())
    assert torch.isfinite(delta).all() and delta.abs().sum() > 0
    # Δ points where a gradient step on the token raises the proxy's downstream loss
    model, batch = proc.proxy, proc.batch
    hi, lo = int(delta[0, 4:].argmax()) + 4, int(delta[0, 4:].argmin()) + 4

    def loss_after_step_on(token):
        import copy

        m = copy.deepcopy(model)
        logp = m(input_ids=ids).logits[0, -1].log_softmax(-1)[token]
        grads = torch.autograd.grad(logp, list(m.parameters()), allow_unused=True)
        with torch.no_grad():
            for p, g in zip(m.parameters(), grads):
                if g is not None:
                    p.add_(1e-2 * g)
            return float(m(**batch).loss)

    assert loss_after_step_on(hi) > loss_after_step_on(lo)


def test_antidistill_proxy_reads_as_far_as_the_teacher_writes(make_cfg):
    # at large λ the teacher's answers run to the end of its context, past the 160 characters
    # a proxy sized for the tasks alone would read (IndexError in the proxy's position table)
    import torch

    from sim.runner import World
    from teachers.vocab import CharTokenizer

    world = World(make_cfg("defense=antidistill", "defense.antidistill.proxy_steps=5",
                           "defense.antidistill.downstream=8"))
    n = world.teacher_spec.n_positions
    assert n > 160
    proc = world.stack.defenses[0].logits_processors()[0]
    tok = CharTokenizer()
    prompt = tok.request_ids("why calc 1+2")
    ids = torch.tensor([prompt + tok.encode("1+2=3 " * n)[: n - len(prompt)]])
    assert torch.isfinite(proc(ids, torch.zeros(1, tok.vocab_size))).all()


@pytest.mark.parametrize("kw, message", [({"lam": -1}, "lam=-1"), ({"eps": 0}, "eps=0"),
                                         ({"proxy_steps": 0}, "proxy_steps=0"), ({"n_positions": 0}, "n_positions=0")])
def test_antidistill_rejects_bad_values(kw, message):
    from defenses.antidistill import Antidistill

    with pytest.raises(ValueError, match=message):
        Antidistill(None, **kw)


def test_delay_mode_holds_requests_at_the_gateway_until_a_token_is_back():
    from tests.test_gateway import CountingTeacher

    gw = Gateway(CountingTeacher(), Stack([RateLimit(per_minute={"account": 1.0}, burst_minutes=1, mode="delay")]),
                 max_new_tokens=4, max_delay=2)
    a = Account("a")
    gw.open_account(a)
    first = gw.serve(0, [(a, "x"), (a, "y"), (a, "z")])
    assert [e.request.prompt for e in first] == ["x"] and len(gw.queue) == 2
    second = gw.serve(1, [])
    assert [(e.request.prompt, e.request.tick) for e in second] == [("y", 0)]
    third = gw.serve(2, [])  # z has waited max_delay ticks: it is served now or refused
    assert [e.request.prompt for e in third] == ["z"] and third[0].status == "served" and not gw.queue
    gw.serve(2, [(a, "w")])
    gone = gw.serve(5, [])
    assert gone == [] or gone[0].status in ("served", "blocked")


# -- watermark -----------------------------------------------------------------------------------------
from defenses.watermark import Watermark, p_value  # noqa: E402


def test_the_exact_test_keeps_its_false_positive_rate_on_short_clean_texts():
    """Clean texts scored alone: the exact binomial p-value is at most α no more often than α
    (the normal approximation, on a few tokens a text, overstates significance)."""
    import random

    wm, rng = Watermark(gamma=0.25, delta=2.0), random.Random(0)
    words = ["ok", "sure", "well", "right", "then", "so", "next", "and", "done", "thus", "x=1", "y=22"]
    rows = [wm.detect([" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) + " #3"], ["calc 1+2"])
            for _ in range(4000)]
    assert 2 <= sum(r["tokens"] for r in rows) / len(rows) <= 8
    for alpha in (0.01, 0.05):
        assert sum(r["p_exact"] <= alpha for r in rows) / len(rows) <= alpha
    assert sum(r["p"] <= 0.01 for r in rows) > sum(r["p_exact"] <= 0.01 for r in rows)


def test_the_key_test_is_exact_on_repetitive_text_and_finds_a_learnt_bias():
    """Texts of a five-word voice repeated thousands of times: across 40 secret keys the key
    test's p-value falls below 0.1 about as often as 10% (the pooled binomial test, which
    takes the repetitions as independent, far more often); a source that prefers the green
    voice words of the secret key gets the smallest p the test can give."""
    import random

    import torch

    words = ["ok", "sure", "well", "so", "then"]

    def texts(rng, pick):
        return [" ".join(pick(rng) for _ in range(4)) + " #3" for _ in range(400)]

    clean = texts(random.Random(0), lambda rng: rng.choice(words))
    key_p, binom_p = [], []
    for key in range(40):
        wm = Watermark(key=key, h=1, null_keys=99)
        key_p.append(wm.key_test(clean, ["calc 1+2"] * len(clean))["p"])
        binom_p.append(wm.detect(clean, ["calc 1+2"] * len(clean), dedupe=False)["p_exact"])
    assert sum(p <= 0.1 for p in key_p) <= 10 and sum(p <= 0.1 for p in binom_p) >= 12, (key_p, binom_p)
    # a learnt bias lives in many contexts: after each step `v=NN`, half the time a voice word
    # whose first letter the key makes green after that step's last characters
    wm, rng, biased = Watermark(key=7, null_keys=99), random.Random(1), []
    for _ in range(400):
        text = ""
        for _ in range(4):
            text += f"v={rng.randrange(100):02d} "
            ids = wm.tok.request_ids("calc 1+2") + wm.tok.encode(text)
            ctx = torch.tensor([ids[-wm.h:]] * len(words))
            green = wm.green.is_green(ctx, torch.tensor([wm.tok.encode(w)[0] for w in words]))
            pool = [w for w, g in zip(words, green) if g] if rng.random() < 0.5 else words
            text += rng.choice(pool or words) + " "
        biased.append(text + "#3")
    assert wm.key_test(biased, ["calc 1+2"] * len(biased))["p"] == 1 / 100


def test_the_mark_stays_out_of_answers_and_forced_tokens():
    import torch

    from teachers.vocab import CharTokenizer

    tok = CharTokenizer()
    proc = Watermark(entropy=1.0).logits_processors()[0]
    before = torch.tensor([tok.request_ids("calc 1+2") + tok.encode("ok x=3 so")])
    after = torch.tensor([tok.request_ids("calc 1+2") + tok.encode("ok x=3 so #")])
    flat, peaked = torch.zeros(1, tok.vocab_size), torch.full((1, tok.vocab_size), -30.0)
    peaked[0, 5] = 0.0  # one token certain: nothing to choose, nothing to mark
    assert (proc(before, flat) - flat).abs().sum() > 0
    assert torch.equal(proc(after, flat), flat) and torch.equal(proc(before, peaked), peaked)
    wm = Watermark()
    assert wm.positions("ok x=3 so y=4 done #7") == [0, 7, 14]  # the voice words' first letters


def test_watermarked_generation_is_detected_and_clean_is_not(make_cfg):
    import sim  # noqa: F401
    from sim.runner import World
    from teachers.lm import CharLM
    from teachers.vocab import build_gpt
    import torch

    torch.manual_seed(0)
    lm = CharLM(build_gpt(1, 32, 2, 160))  # untrained: near-uniform, so δ decides many tokens
    world = World(make_cfg())
    prompts = [p.request(True) for p in world.suite.eval_set[:24]]
    wm = Watermark(gamma=0.25, delta=4.0)
    marked = lm.generate(prompts, max_new_tokens=40, logits_processors=wm.logits_processors(), temperature=1.0)
    clean = lm.generate(prompts, max_new_tokens=40, temperature=1.0)
    zm = wm.detect([o.text for o in marked], prompts)["z"]
    zc = wm.detect([o.text for o in clean], prompts)["z"]
    assert zm > 4 and abs(zc) < 3, (zm, zc)


def test_watermark_fraction_marks_a_keyed_share_of_requests():
    import torch

    from teachers.vocab import CharTokenizer

    tok = CharTokenizer()
    proc = Watermark(fraction=0.25).logits_processors()[0]
    rows = [tok.request_ids(f"calc {i}+{j}") for i in range(10) for j in range(10)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    marked = proc._marked(ids)
    assert 0.12 < marked.float().mean() < 0.4
    assert torch.equal(marked, proc._marked(ids))  # the same request is always (un)marked
    out = proc(ids, torch.zeros(len(rows), tok.vocab_size))
    assert (out[~marked] == 0).all() and (out[marked].sum(1) > 0).all()
