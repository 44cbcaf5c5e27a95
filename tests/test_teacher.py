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


def test_shipped_teacher_card_meets_the_bar(shipped_card):
    acc = shipped_card["explain"]
    for skill, by_d in acc.items():
        assert min(by_d["1"], by_d["2"]) >= 0.9, (skill, by_d)


@pytest.mark.xfail(strict=True, reason=(
    "measured on the shipped teacher 5fad835e (10,000 steps, 77 min): explained accuracy at d4-5 averages 0.955 "
    "against 0.979 at d1-2; only trace falls (1.00 -> 0.72 at d5), while arith (0.97), tool (0.97-1.00), table "
    "(0.95-0.97) and kb (1.00) stay high because every explained step is as easy at d5 as at d1. Asked plainly the "
    "boundary is sharp (mean 0.77 at d1-2 -> 0.39 at d4-5), but plain answers miss the d1-2 bar. A retrain with "
    "two-digit arith steps at d4-5 (teacher af5ee53f, branch teacher-next) showed the explained boundary (0.95 -> 0.76; "
    "arith d4-5 0.07, 0.03) but missed the bar at tool d1 (0.84) and kb d1 (0.85), so it was not shipped; strict, so "
    "this fails once a shipped teacher shows the boundary explained"))
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
    assert card1 == card2 and sum(line.startswith("training") for line in logs) <= 1  # trained at most once
    assert set(card1["explain"]) == set(world.suite.skills)
    assert all(len(by_d) == 5 for by_d in card1["explain"].values())
