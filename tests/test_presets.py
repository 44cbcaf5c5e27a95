"""Every preset (configs/experiment/*.yaml with a `preset` node) runs at scale=tiny with its
grid shrunk to its first point, and its docs page is generated from the run."""

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

import sim
from experiments import report

EXPERIMENTS = Path(__file__).resolve().parent.parent / "configs" / "experiment"
PRESETS = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if OmegaConf.load(p).get("preset"))


def first_point(name: str) -> list[str]:
    params = OmegaConf.load(EXPERIMENTS / f"{name}.yaml").get("hydra", {}).get("sweeper", {}).get("params", {})
    return [f"{k}={str(v).split(',')[0]}" for k, v in params.items()]


def test_the_issue_presets_exist():
    for name in ("model_stealing", "poisoning", "hide_reasoning", "antidistill", "watermark", "counter_paraphrase",
                 "detection", "hydra_vs_naive", "rationales", "incident_2026"):
        assert name in PRESETS, name


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_at_tiny_scale_and_its_page_is_generated(name, make_cfg, tmp_path):
    cfg = make_cfg(f"experiment={name}", *first_point(name))
    res = sim.run(cfg, tmp_path / "run")
    trains = OmegaConf.select(cfg, "student._target_") is not None  # student=none: a detection study
    assert ("transfer/net" in res) == trains and "detection/recall" in res and res["choice/experiment"] == name
    pages = report.write_docs([tmp_path / "run"], tmp_path / "docs")
    page = (tmp_path / "docs" / f"{name}.md").read_text()
    spec = OmegaConf.to_container(OmegaConf.load(EXPERIMENTS / f"{name}.yaml"))["preset"]
    assert spec["claim"].split()[0] in page and "Does the claim hold here?" in page and pages[0].name == f"{name}.md"
    assert page.count("\n- **") == len(spec["check"])  # one verdict line per check
    # the page's runs are archived beside it, and the archive alone gives the same page back
    archive = tmp_path / "docs" / "data" / f"{name}.jsonl"
    assert archive in pages and len(archive.read_text().splitlines()) == 1
    report.write_docs([archive], tmp_path / "again")
    assert (tmp_path / "again" / f"{name}.md").read_text() == page


def test_paired_verdicts_hold_do_not_hold_or_are_inconclusive():
    # five paired seeds: none beats poison by 0.2 +- 0.01 on every seed; passive is none minus 0.01
    seeds = [0, 1, 2, 3, 4]
    none = [0.30, 0.35, 0.25, 0.40, 0.31]
    df = pd.DataFrame({"choice/defense": ["none"] * 5 + ["poison"] * 5 + ["passive"] * 5 + ["noisy"] * 5,
                       "seeds/world": seeds * 4, "seeds/student": seeds * 4,
                       "transfer/net": none + [v - 0.2 + 0.01 * (i % 2) for i, v in enumerate(none)]
                       + [v - 0.01 for v in none] + [v + d for v, d in zip(none, [0.1, -0.1, 0.05, -0.08, 0.0])]})
    held, text = report.verdict(df, {"metric": "transfer/net", "higher": {"defense": "none"}, "than": {"defense": "poison"}})
    assert held is True and "95% CI" in text and "n = 5" in text
    assert report.verdict(df, {"metric": "transfer/net", "higher": {"defense": "poison"}, "than": {"defense": "none"}})[0] is False
    # the seeds' spread (0.25-0.40) is far larger than the effect: only pairing makes it visible
    assert report.verdict(df, {"metric": "transfer/net", "higher": {"defense": "none"}, "than": {"defense": "passive"}})[0] is True
    assert report.verdict(df, {"metric": "transfer/net", "close": {"defense": "passive"}, "to": {"defense": "none"},
                               "within": 0.05})[0] is True
    assert report.verdict(df, {"metric": "transfer/net", "close": {"defense": "poison"}, "to": {"defense": "none"},
                               "within": 0.05})[0] is False
    assert report.verdict(df, {"metric": "transfer/net", "higher": {"defense": "noisy"}, "than": {"defense": "none"}})[0] is None
    assert report.verdict(df, {"metric": "transfer/net", "where": {"defense": "poison"}, "below": 0.3})[0] is True
    assert report.verdict(df, {"metric": "transfer/net", "where": {"defense": "poison"}, "below": 0.2})[0] is None
    assert report.verdict(df, {"metric": "transfer/net", "where": {"defense": "none"}, "below": 0.2})[0] is False


def test_verdicts_of_means_and_too_few_runs():
    df = pd.DataFrame({"choice/defense": ["none", "none", "poison", "passive"], "config/seed": [0, 1, 0, 0],
                       "seed": [0, 1, 0, 0],
                       "transfer/mean": [0.30, 0.32, 0.10, 0.29], "transfer/arith": [0.4, 0.4, 0.1, 0.35],
                       "transfer/tool": [0.2, 0.2, 0.18, 0.2]})
    held, text = report.verdict(df, {"metric": "transfer/mean", "higher": {"defense": "none"}, "than": {"defense": "poison"}})
    assert held is None and "n = 1" in text  # one paired seed: no interval, no verdict
    assert report.verdict(df, {"drop": "transfer/arith", "vs": "transfer/tool", "from": {"defense": "none"},
                               "to": {"defense": "poison"}})[0] is None  # one paired seed
    held, text = report.verdict(df, {"metric": "transfer/mean", "recovers": {"defense": "passive"},
                                     "lost": {"defense": "poison"}, "from": {"defense": "none"}})
    assert held is None and "n = 1" in text  # one matched seed
    assert report.verdict(df, {"metric": "transfer/mean", "recovers": {"defense": "passive"},
                               "lost": {"defense": "none"}, "from": {"defense": "poison"}})[0] is None  # nothing lost
    assert report.verdict(df, {"metric": "transfer/mean", "higher": {"defense": "full"}, "than": {"defense": "none"}})[0] is None


def test_recovery_and_curve_checks_are_decided_per_matched_seed():
    # the seeds' spread (0.2) dwarfs the effects (0.03-0.05): only matching runs seed by seed shows them
    base = [0.30, 0.50, 0.40, 0.20, 0.60]
    rows = [{"choice/counter": counter, "config/defense.poison.fraction": frac, "seed": s,
             "transfer/net": base[s] - (0.1 if frac else 0.0) + gain + 0.005 * (-1) ** s}
            for counter, frac, gain in (("none", 0.0, 0.0), ("none", 0.3, 0.0), ("vote", 0.3, 0.07),
                                        ("weak", 0.3, 0.03)) for s in range(5)]
    df = pd.DataFrame(rows)

    def recovers(who):
        return report.verdict(df, {"metric": "transfer/net", "recovers": {"counter": who},
                                   "lost": {"counter": "none", "defense.poison.fraction": 0.3},
                                   "from": {"defense.poison.fraction": 0.0}})

    held, text = recovers("vote")
    assert held is True and "70% of the loss recovered" in text and "n = 5" in text
    assert recovers("weak")[0] is False  # 30%, every seed
    # at equal served accuracy (x), the λ points lie 0.04 under each seed's own temperature curve
    rows = [{"config/defense.antidistill.lam": lam, "config/gateway.temperature": t, "seed": s,
             "attacker/served_accuracy": x, "student/private_acc": base[s] + x / 2 - (0.04 if lam else 0.0)
             + 0.002 * s * (lam > 0)}
            for s in range(5) for lam, t, x in ((0.0, 0.0, 0.9), (0.0, 1.0, 0.7), (0.0, 2.0, 0.4),
                                                (1.0, 0.0, 0.8), (2.0, 0.0, 0.5))]
    df = pd.DataFrame(rows)
    check = {"metric": "student/private_acc", "against": "attacker/served_accuracy",
             "below": {"gateway.temperature": 0.0}, "curve": {"defense.antidistill.lam": 0.0}}
    held, text = report.verdict(df, check)
    assert held is True and "n = 5" in text, text
    # two recipes, a curve each, the kd curve 0.1 higher: each recipe's points go with their own curve
    two = pd.concat([df.assign(**{"config/student.recipe": "answer"}),
                     df.assign(**{"config/student.recipe": "kd", "student/private_acc": df["student/private_acc"] + 0.1})])
    held, text = report.verdict(two, check)
    assert held is True and "n = 10" in text and "(20 points" in text, text  # λ = 0 greedy is on the curve, not a point
    df["student/private_acc"] += 0.06 * (df["config/defense.antidistill.lam"] > 0)  # now above the curve
    assert report.verdict(df, check)[0] is False


def test_a_drop_is_a_paired_difference_in_differences():
    # arith falls 0.20 (+- 0.01) on every seed; tool falls 0.05 in `shaping`, 0.20 +- 0.03 in `even`
    # and rises 0.05 in `rise`, where arith rises too; the seeds' own spread is 0.1
    base = [0.30, 0.40, 0.35, 0.25, 0.45]
    jitter = [0.01, -0.01, 0.0, 0.01, -0.01]
    arms = {"none": (0.0, 0.0), "shaping": (-0.2, -0.05), "even": (-0.2, -0.2), "rise": (0.03, 0.05)}
    rows = [{"choice/defense": arm, "seeds/world": s,
             "transfer/arith": base[s] + da + (jitter[s] if arm != "none" else 0.0),
             "transfer/tool": base[s] / 2 + dt + (3 * jitter[(s + 1) % 5] if arm == "even" else 0.0)}
            for arm, (da, dt) in arms.items() for s in range(5)]
    df = pd.DataFrame(rows)

    def check(to):
        return report.verdict(df, {"drop": "transfer/arith", "vs": "transfer/tool", "from": {"defense": "none"},
                                   "to": {"defense": to}})

    held, text = check("shaping")
    assert held is True and "paired fall" in text and "n = 5" in text
    assert check("even")[0] is None  # arith falls, but no more than tool: the interval straddles zero
    assert check("rise")[0] is False  # arith does not fall at all


def test_pairs_match_every_setting_the_check_does_not_fix():
    # a budget check across two recipes pairs kd with kd and answer with answer: n = 2 x 5, not 4 x 5
    rows = [{"choice/recipe": r, "config/attacker.queries": q, "seeds/world": s, "seeds/student": s,
             "transfer/net": (0.8 if q == 4000 else 0.3) + (0.05 if r == "kd" else 0.0) + 0.01 * s}
            for r in ("kd", "answer") for q in (250, 4000) for s in range(5)]
    df = pd.DataFrame(rows)
    d = report.paired(df, {"attacker.queries": 4000}, {"attacker.queries": 250}, "transfer/net")
    assert len(d) == 10 and d.round(6).eq(0.5).all()
    held, text = report.verdict(df, {"metric": "transfer/net", "higher": {"attacker.queries": 4000},
                                     "than": {"attacker.queries": 250}})
    assert held is True and "n = 10" in text


def test_a_setting_that_comes_with_an_arm_does_not_break_its_pairs():
    # policy=judge brings recipe=best_of_k, cot_elicit brings rationale: the recipe tells the arms apart
    rows = [{"choice/policy": p, "choice/recipe": r, "seeds/world": s, "transfer/net": t + 0.01 * s}
            for p, r, t in (("cot_elicit", "rationale", 0.3), ("judge", "best_of_k", 0.0)) for s in range(5)]
    d = report.paired(pd.DataFrame(rows), {"policy": "cot_elicit"}, {"policy": "judge"}, "transfer/net")
    assert len(d) == 5 and d.round(6).eq(0.3).all()


def test_a_curve_plots_metrics_along_a_swept_value(tmp_path):
    mix = [0.5, 0.9] * 10
    df = pd.DataFrame({"config/attacker.mix": mix, "config/attacker.pacing": ["even"] * 10 + ["human"] * 10,
                       "choice/defense": ["fingerprint"] * 18 + ["cluster"] * 2, "seed": list(range(10)) * 2,
                       "detection/recall": [1.0 - m / 2 for m in mix]})
    df.loc[18:, "config/attacker.accounts"] = 40  # a column with missing values holds 40.0
    assert len(report._select(df, {"attacker.accounts": 40})) == 2
    path = tmp_path / "c.png"
    assert report.curves(df, path, "attacker.mix", ["detection/recall"], "attacker.pacing", {"defense": "fingerprint"})
    assert path.stat().st_size > 0
    with pytest.warns(UserWarning, match="attacker/cost_per_example"):
        assert not report.curves(df, tmp_path / "d.png", "attacker.mix", ["attacker/cost_per_example"])
    assert not (tmp_path / "d.png").exists()


def test_presets_carry_no_launcher_settings():
    # a preset is a sweep grid: where and how its jobs run (joblib, submitit, slurm, ray) is the user's call
    for name in PRESETS:
        text = (EXPERIMENTS / f"{name}.yaml").read_text()
        spec = OmegaConf.load(EXPERIMENTS / f"{name}.yaml")
        assert "/hydra/launcher" not in text and OmegaConf.select(spec, "hydra.launcher") is None, name
        assert "threads" not in spec, name


def test_a_run_archive_reloads_as_its_runs_and_a_rerun_replaces_an_archived_run(tmp_path):
    import json

    runs = {"a": {"config_hash": "h1", "config/x": "on", "seeds/world": 0, "transfer/net": 0.5, "choice/experiment": "p"},
            "b": {"config_hash": "h2", "seeds/world": 1, "transfer/net": None, "choice/experiment": "p"}}  # lacks x
    for name, r in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))
    df = report.load([tmp_path / "a", tmp_path / "b"])
    archive = tmp_path / "p.jsonl"
    archive.write_text(report.archive_lines(df))
    again = report.load([archive])
    cols = [c for c in df.columns if c not in ("run_dir", "run_record")]
    pd.testing.assert_frame_equal(again[cols], df[cols])
    assert again["config/x"].isna().tolist() == [False, True] and again["transfer/net"].isna().tolist() == [False, True]
    # the same config rerun after a fix: the directory's run is kept, whichever is named first
    (tmp_path / "rerun").mkdir()
    (tmp_path / "rerun" / "results.json").write_text(json.dumps({**runs["a"], "transfer/net": 0.25}))
    with pytest.warns(UserWarning, match="replaces the archived run"):
        merged = report.load([archive, tmp_path / "rerun"])
    assert sorted(merged["transfer/net"].dropna()) == [0.25] and len(merged) == 2
    # an archive is the only copy of its runs: a line it cannot read stops the report, naming it
    archive.write_text(archive.read_text() + "{not json\n")
    with pytest.raises(SystemExit, match="p.jsonl:3"):
        report.load([archive])
    with pytest.raises(SystemExit, match="missing.jsonl"):
        report.load([tmp_path / "missing.jsonl"])
