"""The attacker's counter-defenses: pure transforms on hand-made harvests, and their wiring."""

import math

import pytest

from sim.counter import Counter, answer_confidence, consistent, recalibrate, rules_paraphrase, vote
from sim.runner import World


def row(request, response, **kw):
    return {"request": request, "response": response, "top_tokens": [], "top_logprobs": [], **kw}


def test_voting_keeps_the_majority_answer_per_prompt():
    rows = [row("calc 1+3", "1+3=7 #7"), row("calc 1+3", "1+3=4 #4"), row("calc 1+3", "1+3=4 #4"),
            row("calc 2+2", "#4"), row("calc 2+2", "#5"), row("calc 2+2", "#6")]
    out = vote(rows)
    assert [r["response"] for r in out] == ["1+3=4 #4", "#4"]  # a majority wins; a tie keeps the first


def test_consistency_and_the_rules_paraphrase():
    assert consistent("3+4=7 7*2=4 #4") and not consistent("3+4=7 7*2=4 #5")
    assert consistent("ka3=3ka lo7=7lo #lo") and consistent("#4")
    assert rules_paraphrase("3+4=7 7*2=4 #4") == "3+4:7;7*2:4;#4"
    assert rules_paraphrase("#4") == "#4"


def test_confidence_and_temperature_recalibration():
    response = "1+3=4 #4"
    tokens = [[c, "x"] for c in response]
    lps = [[math.log(0.9), math.log(0.1)]] * len(response)
    assert answer_confidence(response, tokens, lps) == pytest.approx(0.9)
    assert math.isnan(answer_confidence(response, [], []))
    flat = [math.log(0.6), math.log(0.4)]  # sampled at T = 2: a flattened distribution
    sharp = recalibrate(flat, 2.0)
    assert sum(math.exp(v) for v in sharp) == pytest.approx(1.0)
    assert math.exp(sharp[0]) == pytest.approx(0.36 / (0.36 + 0.16))


def test_process_filters_and_rewrites():
    rows = [row("calc 1+3", "1+3=4 #4"), row("calc 1+2", "1+2=3 #5")]
    assert len(Counter(drop="inconsistent").process(rows)) == 1
    out = Counter(paraphrase="rules").process(rows)
    assert out[0]["response"] == "1+3:4;#4" and rows[0]["response"] == "1+3=4 #4"  # the harvest is untouched
    unsure = row("calc 1", "#4", top_tokens=[["#", "x"], ["4", "5"]], top_logprobs=[[0.0, -9.0], [-1.2, -0.4]])
    assert Counter(drop="low_confidence", min_confidence=0.5).process([unsure, rows[0]]) == [rows[0]]
    with pytest.raises(ValueError, match="vote_k=0"):
        Counter(vote_k=0)
    with pytest.raises(ValueError, match="paraphrase='llm'"):
        Counter(paraphrase="llm")


def test_voting_asks_each_prompt_from_k_accounts(make_cfg):
    from sim.accounts import Account

    world = World(make_cfg("counter=vote"))
    attacker = world.attacker
    accounts = [Account(f"a{i}", "paid") for i in range(3)]
    asks = [attacker.query(accounts[i % 3]) for i in range(9)]
    prompts = [a.problem.prompt for a in asks]
    assert prompts[0] == prompts[1] == prompts[2] and prompts[3] == prompts[4] == prompts[5]
    assert len(set(prompts)) == 3 and attacker.sent == 9
