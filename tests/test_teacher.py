"""The shipped default teacher and public base: current (hashes match the config and training
code), and their cards show the capability to steal (teacher high, base near chance on the
private cells) and the public procedures the base starts from."""

import json

import pytest

from sim.runner import World
from students.base import SHIPPED_BASE
from teachers import SHIPPED, load, teacher_hash
from teachers.judge import JudgeGPT


def card_of(directory, make: str) -> dict:
    card = directory / "card.json"
    assert card.exists(), f"nothing shipped in {directory}: run `make {make}`"
    return json.loads(card.read_text())


@pytest.fixture(scope="module")
def shipped_card():
    return card_of(SHIPPED, "teacher")


def test_shipped_teacher_matches_the_current_config_and_code(make_cfg, shipped_card):
    world = World(make_cfg(scale="small"))
    current = teacher_hash(world.teacher_spec, world.suite)
    assert shipped_card["hash"] == current, (
        f"teachers/shipped is stale (hash {shipped_card['hash']}, config+code now {current}): run `make teacher`")


@pytest.fixture(scope="module")
def base_card():
    return card_of(SHIPPED_BASE, "base")


def test_shipped_base_matches_the_current_config_and_code(make_cfg, base_card):
    world = World(make_cfg("student=finetune", scale="small"))
    current = teacher_hash(world.student_spec.base, world.suite)
    assert base_card["hash"] == current, (
        f"students/shipped is stale (hash {base_card['hash']}, config+code now {current}): run `make base`")


def test_the_shipped_judge_matches_its_config_and_code_and_still_answers(make_cfg):
    # the teacher fine-tuned to grade (teacher=judge); its card measures it as a judge
    card = card_of(JudgeGPT.shipped, "judge")
    world = World(make_cfg("teacher=judge", scale="small"))
    assert card["hash"] == teacher_hash(world.teacher_spec, world.suite), "teachers/shipped_judge is stale: make judge"
    for split in ("public", "private"):
        assert 0.5 < card["judge"][split]["verdict"] <= 1 and card["judge"][split]["valid"] > 0.9
    for skill, by_d in card["private"]["explain"].items():
        assert min(by_d["1"], by_d["2"], by_d["3"]) >= 0.9, (skill, by_d)


def mean_of(grid, difficulties=("1", "2", "3", "4", "5")):
    cells = [by_d[d] for by_d in grid.values() for d in difficulties]
    return sum(cells) / len(cells)


def test_the_private_cells_are_the_teachers_and_not_the_bases(shipped_card, base_card):
    # the capability to steal: the teacher well above the base on every private skill at d1-2,
    # the base near chance on every private cell
    teacher, base = shipped_card["private"]["explain"], base_card["private"]["explain"]
    for skill in teacher:
        assert mean_of({skill: teacher[skill]}, ("1", "2")) > mean_of({skill: base[skill]}, ("1", "2")) + 0.5, skill
    assert mean_of(base) < 0.15


def test_shipped_teacher_has_its_private_capability_and_keeps_the_public_skills(shipped_card):
    # the capability to steal: >= 0.9 on every private cell at difficulty 1-3
    for skill, by_d in shipped_card["private"]["explain"].items():
        assert min(by_d["1"], by_d["2"], by_d["3"]) >= 0.9, (skill, by_d)
    # public replay kept the public skills (teacher f672b4f3: table, the weakest, 0.80 and 0.72
    # at difficulty 1-2, below the 0.9 the public-only teacher cb89e42c reached)
    for skill, by_d in shipped_card["explain"].items():
        assert (by_d["1"] + by_d["2"]) / 2 >= 0.75, (skill, by_d)


def test_shipped_teacher_has_a_capability_boundary(shipped_card):
    # explained accuracy at difficulty 4-5 is below difficulty 1-2 by 0.1 a cell, averaged over skills
    # (teacher cb89e42c: 0.988 -> 0.774; the earlier 5fad835e, whose every explained step was as
    # easy at d5 as at d1, only 0.979 -> 0.955)
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
    assert set(card1["explain"]) == set(card1["private"]["explain"]) == set(world.suite.skills)
    assert all(len(by_d) == 5 for by_d in card1["explain"].values())
    assert set(card1["entropy"]) <= {"voice", "step", "answer"} and card1["entropy"]["answer"] >= 0


def test_a_corrupt_cache_entry_is_moved_aside_and_rebuilt_and_a_bad_checkpoint_is_named(make_cfg, teacher_cache,
                                                                                          tmp_path):
    import shutil

    import pytest

    import teachers
    from teachers.lm import CharLM

    world = World(make_cfg())
    lm, card = teachers.load(world.teacher_spec, world.suite, teacher_cache, log=lambda *a: None)
    cache = tmp_path / "cache"
    shutil.copytree(teacher_cache / card["hash"], cache / card["hash"])
    weights = cache / card["hash"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a checkpoint cut short
    lines = []
    again, card2 = teachers.load(world.teacher_spec, world.suite, cache, log=lines.append)
    assert card2["hash"] == card["hash"] and any("not a readable teacher checkpoint" in line and "moved aside" in line
                                                 for line in lines)
    assert list(cache.glob(f"{card['hash']}.corrupt-*")) and (cache / card["hash"] / "model.safetensors").exists()
    for broken in (tmp_path / "missing", tmp_path / "random"):
        if broken.name == "random":
            broken.mkdir()
            (broken / "config.json").write_bytes(bytes(range(256)) * 4)
        with pytest.raises(ValueError, match=f"{broken}: not a readable checkpoint"):
            CharLM.load(broken)
