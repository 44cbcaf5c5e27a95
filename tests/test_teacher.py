"""The shipped default teacher: current (hash matches the config and training code), and its
card meets the bar of the foundation issue."""

import json

import pytest

from sim.runner import World
from teachers import SHIPPED, load, teacher_hash


@pytest.fixture(scope="module")
def shipped_card():
    card = SHIPPED / "card.json"
    assert card.exists(), "no shipped teacher: run `make teacher`"
    return json.loads(card.read_text())


def test_shipped_teacher_matches_the_current_config_and_code(make_cfg, shipped_card):
    world = World(make_cfg(scale="small"))
    current = teacher_hash(world.teacher_spec, world.suite)
    assert shipped_card["hash"] == current, (
        f"teachers/shipped is stale (hash {shipped_card['hash']}, config+code now {current}): run `make teacher`")


@pytest.mark.xfail(strict=True, reason=(
    "measured on the shipped teacher (10,000 steps, 66.9 min): d1/d2 explained accuracy arith 1.00/1.00, "
    "trace 1.00/0.97, tool 0.96/1.00, table 0.95/0.82, kb 0.62/0.78; table at 3 rows and one- and two-hop kb "
    "questions about facts seen only in the records miss the bar (see issue 2's notes); strict, so this fails "
    "as soon as a retrained teacher meets it"))
def test_shipped_teacher_card_meets_the_bar(shipped_card):
    acc = shipped_card["explain"]
    for skill, by_d in acc.items():
        assert min(by_d["1"], by_d["2"]) >= 0.9, (skill, by_d)


@pytest.mark.xfail(strict=True, reason=(
    "measured on the shipped teacher: mean explained accuracy at d4-5 is 0.88 against 0.91 at d1-2; trace "
    "(1.00 -> 0.70) and table (0.89 -> 0.78) fall, but arith stays at 1.00 and kb rises (0.70 -> 0.97), so "
    "the averaged drop is short of 0.1 per skill; strict, so this fails once a teacher shows the boundary"))
def test_shipped_teacher_has_a_capability_boundary(shipped_card):
    # accuracy at difficulty 4-5 is below difficulty 1-2, averaged over skills
    acc = shipped_card["explain"]
    easy = sum(acc[s][d] for s in acc for d in ("1", "2"))
    hard = sum(acc[s][d] for s in acc for d in ("4", "5"))
    assert hard < easy - 0.1 * len(acc), (easy, hard)


def test_a_tiny_teacher_is_trained_once_then_loaded_from_cache(make_cfg, teacher_cache):
    world = World(make_cfg())
    logs = []
    lm1, card1 = load(world.teacher_spec, world.suite, teacher_cache, log=logs.append)
    lm2, card2 = load(world.teacher_spec, world.suite, teacher_cache, log=logs.append)
    assert card1 == card2 and len(logs) <= 1
    assert set(card1["explain"]) == set(world.suite.skills)
    assert all(len(by_d) == 5 for by_d in card1["explain"].values())
