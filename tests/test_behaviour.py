"""Behaviour at scale=small with the shipped teacher (slow): directions with loose margins."""

import json

import pytest

import sim
from sim.runner import World
from teachers import SHIPPED, teacher_hash


@pytest.mark.slow
def test_distillation_moves_private_capability_to_the_student(make_cfg, tmp_path):
    # one learnable skill, a short harvest and a short fit keep this to about a minute
    cfg = make_cfg("attacker.queries=600", "attacker.policy.skills=[table]", "attacker.policy.difficulties=[1,2]",
                   "student.steps=300", "users=none", scale="small")
    world = World(cfg)
    card = json.loads((SHIPPED / "card.json").read_text())
    assert card["hash"] == teacher_hash(world.teacher_spec, world.suite), "stale shipped teacher: `make teacher`"
    res = sim.run(cfg, tmp_path)
    assert res["teacher/private_acc_table"] > 0.5
    # the harvest held the private `odd` query: the student learned it; it asked nothing else
    assert res["transfer/table"] > 0.3
    assert res["transfer/table"] > max(res["transfer/arith"], res["transfer/kb"]) + 0.2
