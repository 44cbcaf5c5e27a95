"""The incident-scale replay (scale=incident), shrunk: the same code path in seconds."""

import json

import numpy as np
import pytest

import sim
from defenses.features import FEATURES, aggregate

SMALL = ("sizes.users=1500", "attacker.accounts=200", "attacker.queries=15000", "clock.days=2",
         "backend.calibration.users=600", "backend.calibration.days=1", "backend.calibration.campaigns.0.accounts=40",
         "backend.calibration.campaigns.1.accounts=40", "backend.chunk_ticks=72")


def test_replay_streams_its_log_detects_the_hydra_and_is_reproducible(make_cfg, tmp_path):
    import pyarrow.parquet as pq

    cfg = make_cfg(*SMALL, scale="incident")
    r = sim.run(cfg, tmp_path / "a")
    parts = sorted((tmp_path / "a" / "exchanges").glob("part-*.parquet"))
    assert len(parts) == 4  # 2 days of 144 ticks, 72 ticks a file
    log = pq.read_table(parts).to_pandas()
    assert len(log) == r["traffic/exchanges"] and log["id"].is_monotonic_increasing
    assert r["attacker/queries"] == 15000 and r["traffic/cover"] > 0 and r["utility/legit_requests"] > 1000
    # the campaign's pace gives it away; few people are caught with it
    assert r["detection/recall"] > 0.5 and r["detection/precision"] > 0.9 and r["utility/false_ban_rate"] < 0.05
    assert r["detection/ticks_to_first_ban"] < 144 and r["attacker/accounts"] > 200  # banned accounts replaced
    timings = json.loads((tmp_path / "a" / "timings.json").read_text())
    assert 0 < timings["peak_rss_gb"] < 8
    sim.run(cfg, tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()


def test_without_detection_nothing_is_banned_and_the_whole_budget_is_served(make_cfg, tmp_path):
    r = sim.run(make_cfg(*SMALL, "defense=none", scale="incident"), tmp_path)
    assert r["attacker/banned"] == 0 and r["attacker/accounts"] == 200
    assert r["attacker/harvested"] + r["traffic/cover"] == r["attacker/queries"] == 15000  # all served
    # correct rationales at the shipped teacher's held-out accuracy, public and private cells
    # mixed at the task distribution's private rate (the campaign asks every cell alike)
    from sim.incident import _accuracy
    from teachers import SHIPPED

    card = json.loads((SHIPPED / "card.json").read_text())
    expected = float(_accuracy(card, list(card["explain"]), 0.5)[1].mean())
    assert r["utility/relative"] == 1.0
    assert abs(r["harvest/rationales"] / r["attacker/harvested"] - expected) < 0.05, expected


@pytest.mark.parametrize("override, message", [
    ("defense=full", r"defense.identity \(defenses.identity.\w+\) has no columnar form"),
    ("attacker.mix=1.5", "attacker.mix=1.5 must be in"),
    ("defense.fingerprint.target_fpr=0", "target_fpr=0"),
    ("backend.card=/nonexistent.json", "is not a teacher card"),
    ("policy=boundary", r"attacker.policy \(sim.policies.Boundary\) has no columnar form"),
    ("users=none", r"defense.fingerprint.users has no users \(users=none\)"),  # the stack is built first
    ("defense=cluster users.n_users=0", "users.n_users=0 must be a positive integer at scale=incident"),
    ("counter=vote", "attacker.counter.vote_k=3, attacker.budget_usd=inf, attacker.pacing=even: scale=incident"),
    ("attacker.pacing=human", "attacker.pacing=human: scale=incident replays neither"),
])
def test_bad_incident_values_stop_before_any_compute(make_cfg, override, message):
    from sim import incident

    with pytest.raises(ValueError, match=message):
        incident.prepare(make_cfg(*SMALL, *override.split(), scale="incident"))


def test_the_replay_draws_the_configured_campaign_and_population(make_cfg):
    from sim import incident

    plan = incident.prepare(make_cfg(*SMALL, "policy=evasive", "attacker.mix=0.4", scale="incident"))
    assert plan.campaign.rates == {"explain": 1.0, "typo": 0.1, "templated": 0.4, "followup": 0.2}
    assert plan.campaign.mix == 0.4 and plan.campaign.n == 200 and plan.users.n == 1500
    cfg = make_cfg(*SMALL, scale="incident")
    assert plan.users.names == list(cfg.users.personas) and plan.campaign.tier == 0  # free


def test_aggregate_features_by_hand():
    # account 0: 4 requests at ticks 0, 2, 4, 6 (metronomic), all asking why, cells 0,1,2,3 rising;
    # account 1: 3 requests at ticks 1, 2, 8, one templated follow-up, cells 5, 5, 6
    account = np.array([0, 1, 0, 1, 0, 0, 1])
    tick = np.array([0, 1, 2, 2, 4, 6, 8])
    cols = {"why": np.array([1, 0, 1, 0, 1, 1, 0], bool), "templated": np.array([0, 0, 0, 1, 0, 0, 0], bool),
            "typo": np.zeros(7, bool), "followup": np.array([0, 0, 0, 1, 0, 0, 0], bool),
            "command": np.array([0, 1, 0, 1, 0, 0, 2]), "cell": np.array([0, 5, 1, 5, 2, 3, 6]),
            "length": np.array([1, 3, 2, 3, 3, 4, 3])}
    ids, x = aggregate(account, tick, cols, np.array([0.0, 0.0]), tick_minutes=60, min_requests=1)
    f = dict(zip(FEATURES, x.T))
    assert list(ids) == [0, 1]
    assert np.allclose(f["why_rate"], [1, 0]) and np.allclose(f["template_rate"], [0, 1 / 3])
    assert np.allclose(f["cell_entropy"], [2.0, 0.9182958]) and np.allclose(f["cell_coverage"], [1, 2 / 3])
    assert np.allclose(f["gap_cv"], [0, np.std([1, 6]) / 3.5]) and np.allclose(f["followup_rate"], [0, 0.5])
    assert np.allclose(f["switch_rate"], [0, 0.5]) and f["length_trend"][0] == pytest.approx(1.0)
    assert np.allclose(f["night_rate"], [3 / 4, 2 / 3])  # hours 0, 2, 4 (not 6) / 1, 2 (not 8)
    assert np.allclose(f["log_volume"], np.log1p([4, 3]))  # spans under a day count as one day
