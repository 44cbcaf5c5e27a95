"""End to end at scale=tiny: results.json, reproducibility, bad input, the CLI and the report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sim
from experiments import report
from sim.runner import World

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("transfer/net", "fidelity", "teacher/private_acc", "student/private_acc", "base/private_acc",
           "student/public_acc", "boundary/cells", "attacker/queries", "coverage/kb", "seeds/world", "seeds/attacker",
           "seeds/student", "student/steps")


def test_run_writes_every_metric_and_its_files(make_cfg, tmp_path):
    res = sim.run(make_cfg(), tmp_path)
    for key in METRICS:
        assert key in res, key
    assert res["attacker/queries"] == 48 and res["attacker/harvested"] == 48
    assert res["seed"] == 0 and res["git/commit"] and res["choice/attacker"] == "naive"
    assert res["config/attacker.queries"] == 48
    for name in ("results.json", "eval.csv", "teacher_card.json", "timings.json", "harvest", "exchanges"):
        assert (tmp_path / name).exists(), name
    import datasets

    harvest = datasets.load_from_disk(str(tmp_path / "harvest"))
    assert len(harvest) == 48 and set(harvest.column_names) >= {"request", "response", "skill"}
    assert all(r.startswith("why ") for r in harvest["request"])  # the naive attacker asks for reasoning


def test_student_none_stops_after_the_traffic(make_cfg, tmp_path):
    res = sim.run(make_cfg("student=none", "attacker=hydra", "defense=cluster"), tmp_path)
    assert not any(k.startswith(("transfer/", "student/", "fidelity")) for k in res)
    assert res["attacker/harvested"] > 0 and "detection/recall" in res and "attacker/cost_per_example" in res
    assert res["attacker/cost_per_example"] == res["attacker/cost_usd"] / res["attacker/harvested"]
    assert not (tmp_path / "eval.csv").exists() and (tmp_path / "results.json").exists()


def test_same_config_and_seed_give_byte_identical_results(make_cfg, tmp_path):
    cfg = make_cfg("seed=3")
    sim.run(cfg, tmp_path / "a")
    sim.run(cfg, tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()


@pytest.mark.parametrize(
    "override, message",
    [
        ("attacker.queries=-5", "attacker.queries=-5"),
        ("attacker.policy.skills=[arith,poetry]", "unknown skill 'poetry'"),
        ("attacker.policy.difficulties=[0]", "attacker.policy.difficulties: difficulty=0"),
        ("tasks.eval_per_cell=0", "tasks.eval_per_cell=0"),
        ("teacher.n_embd=31", "teacher.n_embd=31"),
        ("student.steps=0", "student.steps=0"),
        ("seed=-1", "seed=-1"),
        ("users.tenure_days=-1", "users.tenure_days=-1"),
    ],
)
def test_bad_values_stop_before_any_compute(make_cfg, override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        World(make_cfg(override))


def cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "experiments/run.py", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_bad_value_is_one_clear_line(tmp_path):
    p = cli("scale=tiny", "attacker.queries=-5", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: attacker.queries=-5 must be a non-negative integer"]
    assert not (tmp_path / "results.json").exists()


def test_cli_unknown_group_option_names_it(tmp_path):
    p = cli("scale=tiny", "attacker=naive,sneaky", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == ["error: attacker=sneaky is not a config option (available: hydra, naive, router)"]


def test_cli_stacks_several_defenses_with_hydras_list_syntax(tmp_path, teacher_cache):
    p = cli("scale=tiny", "defense=[rate_limit,clustr]", f"hydra.run.dir={tmp_path / 'bad'}")
    assert p.returncode == 2 and p.stderr.strip().splitlines()[0].startswith("error: defense=clustr is not a config")
    p = cli("scale=tiny", "defense=[rate_limit,cluster]", "attacker.queries=16", f"cache_dir={teacher_cache}",
            "threads=1", f"hydra.run.dir={tmp_path / 'ok'}")
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert res["choice/defense"] == "rate_limit+cluster"  # the report groups stacks by this
    assert res["config/defense.rate_limit.burst_minutes"] == 10 and res["config/defense.cluster.min_size"] == 3


@pytest.mark.slow
def test_multirun_sweep_in_parallel_processes_and_report(tmp_path, teacher_cache):
    # the local parallel launcher: two processes of one torch thread each
    sweep = tmp_path / "sweep"
    p = cli("-m", "scale=tiny", "attacker.queries=16,32", "seed=0,1", f"cache_dir={teacher_cache}",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(list(sweep.rglob("results.json"))) == 4
    # the callback wrote the sweep's report when it ended
    assert {p.name for p in sweep.glob("report.*")} >= {"report.md", "report.tex", "report.csv"}
    assert "transfer ↓" in (sweep / "report.md").read_text() and r"\toprule" in (sweep / "report.tex").read_text()
    df = report.load([sweep])
    table = report.summarise(df)
    assert list(table["attacker.queries"]) == [16, 32] and list(table["n"]) == [2, 2]
    md = report.table([sweep])
    header, _, *rows = md.splitlines()
    assert "transfer ↓" in header and "fidelity ↓" in header and len(rows) == 2
    assert "attacker/queries" not in header  # a metric that only echoes the grouping key is dropped
    out = subprocess.run([sys.executable, "-m", "experiments.report", str(sweep), "--out", str(tmp_path / "t.md")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and (tmp_path / "t.md").read_text().strip() in out.stdout


def plugin_missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    "submitit_local",
    pytest.param("submitit_slurm", marks=pytest.mark.skipif(
        plugin_missing("hydra_plugins.hydra_submitit_launcher") or not __import__("shutil").which("sbatch"),
        reason="needs SLURM (sbatch) and the slurm extra")),
    pytest.param("ray", marks=pytest.mark.skipif(
        plugin_missing("hydra_plugins.hydra_ray_launcher"), reason="the ray extra is not installed")),
])
def test_a_two_job_sweep_on_each_cluster_launcher(tmp_path, teacher_cache, launcher):
    """The joblib launcher is tested above; each cluster launcher runs the same two jobs, leaves
    each its results and its own log, and the sweep's report is written."""
    sweep = tmp_path / "sweep"
    p = cli("-m", "scale=tiny", "attacker.queries=16,32", "users=none", f"cache_dir={teacher_cache}", "threads=1",
            f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-2000:]
    for job in ("0", "1"):
        assert (sweep / job / "results.json").is_file()
        assert "student:" in (sweep / job / "job.log").read_text()  # the job's own log
    assert (sweep / "report.md").is_file()


def test_report_mean_and_95_ci_over_seeds(tmp_path):
    for i, (q, seed, t) in enumerate([(10, 0, 0.2), (10, 1, 0.4), (20, 0, 0.6)]):
        d = tmp_path / str(i)
        d.mkdir()
        (d / "results.json").write_text(json.dumps({"transfer/net": t, "seed": seed, "config/seed": seed,
                                                    "config/seeds.student": seed, "config/attacker.queries": q}))
    s = report.summarise(report.load([tmp_path]))
    assert list(s["attacker.queries"]) == [10, 20] and list(s["n"]) == [2, 1]
    # n = 2: the t quantile 12.706 x std 0.1414 / sqrt(2) = 1.271
    assert s["transfer ↓"].tolist() == ["0.300 ± 1.271", "0.600"]
    m, half, n = report.ci([0.1, 0.2, 0.3, 0.4, 0.5])
    assert n == 5 and m == pytest.approx(0.3) and half == pytest.approx(2.776 * 0.1581 / 5 ** 0.5, rel=1e-3)


def test_the_report_groups_by_choices_and_hides_the_values_they_set_together():
    """`defense.fingerprint.campaigns` comes from `calibration`, read through `defense`: the two
    choices together set it, so it is no column of its own; `attacker.mix`, which varies within
    the choices, is."""
    import pandas as pd

    rows = [{"choice/defense": d, "choice/calibration": c, "config/attacker.mix": m,
             "config/defense.fingerprint.campaigns": f"[{c}]" if d == "fingerprint" else None}
            for d in ("fingerprint", "cluster") for c in ("default", "heldout") for m in (0.2, 0.5)]
    assert report.varying_keys(pd.DataFrame(rows)) == ["choice/defense", "choice/calibration", "config/attacker.mix"]
    rows[0]["config/defense.fingerprint.campaigns"] = "[other]"  # no longer set by the choices
    assert "config/defense.fingerprint.campaigns" in report.varying_keys(pd.DataFrame(rows))
    # a copy of a group's config inside another component (the judge policy's working student's
    # recipe) is the choice's too
    rows = [{"choice/recipe": r, "config/student.recipe.beta": b, "config/attacker.policy.student.recipe.beta": b,
             "config/attacker.queries": q} for r, b in (("best_of_k", None), ("reward", 0.05)) for q in (1000, 4000)]
    assert report.varying_keys(pd.DataFrame(rows)) == ["choice/recipe", "config/attacker.queries"]
    # a component's copy of a varying value (absent where the component is) is that value's column
    rows = [{"choice/defense": d, "config/users.tenure_days": t,
             "config/defense.fingerprint.users.tenure_days": t if d == "full" else None}
            for d, t in (("none", 0), ("full", 0), ("full", 30))]
    assert report.varying_keys(pd.DataFrame(rows)) == ["choice/defense", "config/users.tenure_days"]
    rows[2]["config/defense.fingerprint.users.tenure_days"] = 5  # not a copy: it differs
    assert "config/defense.fingerprint.users.tenure_days" in report.varying_keys(pd.DataFrame(rows))


def test_a_run_with_no_traffic_still_writes_every_metric(make_cfg, tmp_path):
    res = sim.run(make_cfg("attacker.queries=0", "users=none"), tmp_path)
    assert res["attacker/harvested"] == 0 and res["traffic/exchanges"] == 0
    assert res["utility/relative"] != res["utility/relative"]  # NaN: no legitimate traffic to serve
    assert (tmp_path / "exchanges").exists() and (tmp_path / "results.json").exists()


def test_report_writes_latex_csv_and_a_pareto_plot(tmp_path):
    for i, (defense, seed, transfer, utility) in enumerate([("none", 0, 0.30, 1.0), ("none", 1, 0.32, 1.0),
                                                            ("full", 0, 0.05, 0.90), ("poison", 0, 0.20, 0.80)]):
        d = tmp_path / "runs" / str(i)
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"transfer/net": transfer, "utility/relative": utility,
                                                    "seed": seed, "choice/defense": defense,
                                                    "config/seed": seed}))
    written = report.write([tmp_path / "runs"], tmp_path / "out" / "t.md", by=["choice/defense"])
    assert sorted(p.suffix for p in written) == [".csv", ".md", ".png", ".tex"]
    csv = __import__("pandas").read_csv(tmp_path / "out" / "t.csv")
    assert list(csv["defense"]) == ["full", "none", "poison"] and list(csv["n"]) == [1, 2, 1]
    assert csv.loc[1, "transfer/net/mean"] == pytest.approx(0.31) and csv.loc[1, "transfer/net/ci95"] > 0
    assert (tmp_path / "out" / "t.png").read_bytes()[:4] == b"\x89PNG"
    # poison is beaten by full on both axes: not on the defender's frontier
    assert report.frontier([(1.0, 0.31), (0.9, 0.05), (0.8, 0.2)]) == [(1.0, 0.31), (0.9, 0.05)]
    # the Markdown and the CSV say the same numbers; the LaTeX bolds the defender's best, with a caption
    md = (tmp_path / "out" / "t.md").read_text().splitlines()
    none_row = next(r for r in md if r.startswith("| none"))
    assert f"{csv.loc[1, 'transfer/net/mean']:.3f} ± {csv.loc[1, 'transfer/net/ci95']:.3f}" in none_row
    tex = (tmp_path / "out" / "t.tex").read_text()
    assert r"\textbf{0.050}" in tex and r"\textbf{1.000" in tex and r"\caption{Mean $\pm$" in tex
    assert r"\toprule" in tex and r"transfer $\downarrow$" in tex
    import shutil
    import subprocess

    if shutil.which("pdflatex"):  # compile it where LaTeX is installed
        doc = tmp_path / "out" / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex + "\\end{document}\n")
        p = subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name], cwd=doc.parent, capture_output=True)
        assert p.returncode == 0 and (doc.parent / "doc.pdf").exists()


def test_loggers_get_config_and_results_and_are_closed_when_a_job_crashes(make_cfg, tmp_path):
    from omegaconf import OmegaConf, open_dict

    from sim.runner import opened

    cfg = make_cfg("attacker.queries=16", "users=none")
    with open_dict(cfg):
        cfg.logger = OmegaConf.load(ROOT / "configs" / "logger" / "csv.yaml")
    sim.run(cfg, tmp_path, log=lambda *a: None)
    logs = tmp_path / "student_logs"
    assert "attacker.queries: 16" in (logs / "hparams.yaml").read_text()
    assert "results/transfer/net" in (logs / "metrics.csv").read_text().splitlines()[0]

    class Run:
        finished = False

        def finish(self):
            Run.finished = True

    class Logger:
        experiment = Run()

    with pytest.raises(RuntimeError):
        with opened(Logger()):
            raise RuntimeError("the student ran out of memory")
    assert Run.finished


def wandb_records(path):
    """The protobuf records of a wandb transaction log (`run-*.wandb`): LevelDB's log format,
    32 KiB blocks after a 7-byte `:W&B` header, chunks FULL=1, FIRST=2, MIDDLE=3, LAST=4."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the padding at the end of a block
            pos += left
            continue
        buf = (b"" if kind in (1, 2) else buf) + data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


@pytest.mark.slow
def test_wandb_groups_a_sweep_tags_its_runs_and_keeps_results_in_the_summary(tmp_path, teacher_cache):
    pytest.importorskip("wandb")
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    p = subprocess.run([sys.executable, "experiments/run.py", "-m", "scale=tiny", "logger=wandb", "attacker.queries=16",
                        "users=none", "seed=0,1", f"cache_dir={teacher_cache}", "threads=1", f"hydra.sweep.dir={sweep}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    for job in ("0", "1"):
        (log,) = (sweep / job / "wandb").glob("offline-run-*/run-*.wandb")
        recs = list(wandb_records(log))
        (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        assert run.run_group == "sweep" and run.job_type == "distill" and run.display_name.endswith(f"seed={job}")
        assert {"defense=none", "attacker=naive", "student=finetune"} <= set(run.tags)
        summary = {i.key: json.loads(i.value_json) for r in recs if r.WhichOneof("record_type") == "summary"
                   for i in r.summary.update if i.key}
        results = json.loads((sweep / job / "results.json").read_text())
        assert summary["seed"] == int(job) and summary["attacker/harvested"] == results["attacker/harvested"] == 16
        assert summary["teacher/hash"] == results["teacher/hash"] and "transfer/net" in summary
        (table,) = (log.parent / "files" / "media" / "table").glob("results_table_*.table.json")
        t = json.loads(table.read_text())
        assert "attacker/harvested/mean" in t["columns"] and "attacker/harvested/ci95" in t["columns"]
        assert all(v is None or isinstance(v, (int, float)) for v in t["data"][0])  # numbers, not strings


def test_a_crashed_job_does_not_stop_the_sweep_and_a_rerun_runs_only_it(tmp_path, teacher_cache):
    sweep = tmp_path / "sweep"
    args = ("-m", "scale=tiny", "attacker.queries=16,-1", f"cache_dir={teacher_cache}", "threads=1",
            f"hydra.sweep.dir={sweep}")  # the basic launcher: the jobs one after the other
    p = cli(*args)
    assert p.returncode == 1 and f"{sweep / '1'}: ConfigError" in p.stderr, p.stderr[-2000:]  # the sweep failed
    done, failed = sweep / "0" / "results.json", sweep / "1" / "error.json"
    assert done.exists() and failed.exists() and not (sweep / "1" / "results.json").exists()
    assert "attacker.queries=-1" in json.loads(failed.read_text())["error"]
    assert "Failed jobs" in (sweep / "report.md").read_text() and str(sweep / "1") in (sweep / "report.md").read_text()
    first = (done.stat().st_mtime_ns, failed.stat().st_mtime_ns)
    p = cli(*args)  # the rerun: the finished job is skipped, the crashed one runs again (and fails again)
    assert p.returncode == 1, p.stderr[-2000:]
    assert done.stat().st_mtime_ns == first[0] and failed.stat().st_mtime_ns > first[1]


KILLER = """
import os, signal
from pathlib import Path

from defenses.base import Defense


class Killer(Defense):
    \"\"\"Dies by SIGKILL while the run is being built, once: as the OOM killer would.\"\"\"

    def __init__(self, seed: int, queries: int, victim: list, marker: str):
        if [seed, queries] == list(victim) and not Path(marker).exists():
            Path(marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_a_job_killed_by_sigkill_is_recorded_and_a_rerun_runs_only_it(tmp_path, teacher_cache):
    pkg = tmp_path / "killplug"
    (pkg / "configs" / "defense").mkdir(parents=True)
    (pkg / "__init__.py").write_text(KILLER)
    (pkg / "configs" / "defense" / "killer.yaml").write_text(
        "killer:\n  _target_: killplug.Killer\n  seed: ${seed}\n  queries: ${attacker.queries}\n"
        f"  victim: [1, 32]\n  marker: {tmp_path / 'killed'}\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}

    def run(*args):
        return subprocess.run([sys.executable, "experiments/run.py", *args, "scale=tiny", "users=none",
                               f"hydra.searchpath=[file://{pkg / 'configs'}]", "plugins=[killplug]", "defense=killer",
                               f"cache_dir={teacher_cache}", "threads=1"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    def sweep(where):
        return run("-m", "attacker.queries=16,32", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                   f"hydra.sweep.dir={where}")

    first = sweep(tmp_path / "a")
    assert first.returncode != 0, first.stderr[-2000:]
    results = sorted((tmp_path / "a").glob("*/results.json"))
    errors = sorted((tmp_path / "a").glob("*/error.json"))
    assert len(results) == 3 and len(errors) == 1, first.stderr[-2000:]
    assert "SIGKILL" in json.loads(errors[0].read_text())["error"] and str(errors[0].parent) in first.stderr
    kept = {p: p.stat().st_mtime_ns for p in results}
    again = sweep(tmp_path / "a")  # the marker exists now: the killed job runs to the end
    assert again.returncode == 0, again.stderr[-2000:]
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # only the killed job ran again
    assert not list((tmp_path / "a").glob("*/error.json"))
    victim = errors[0].parent / "results.json"
    whole = run("seed=1", "attacker.queries=32", f"hydra.run.dir={tmp_path / 'b'}")  # the killed job, uninterrupted
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert victim.read_bytes() == (tmp_path / "b" / "results.json").read_bytes()


@pytest.mark.parametrize("flag", [["--help"], ["--cfg", "job"]])
def test_help_and_cfg_answer_before_torch_is_imported(flag):
    # the speed of --help, --cfg and tab completion is the imports done before Hydra parses
    code = ("import runpy, sys\n"
            f"sys.argv = ['experiments/run.py', *{flag!r}]\n"
            "try:\n    runpy.run_path('experiments/run.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "print('heavy:', sorted(m for m in ('torch', 'transformers', 'lightning', 'pandas') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "heavy: []"


def test_results_are_strict_json_and_the_report_reads_nulls_skips_corrupt_files_and_duplicates(tmp_path):
    from sim.records import write_json

    for i, value in enumerate([0.5, float("nan"), float("inf")]):
        write_json(tmp_path / str(i) / "results.json", {"transfer/net": value, "seed": i, "config_hash": f"h{i}"})
    text = (tmp_path / "1" / "results.json").read_text()
    assert "NaN" not in text and json.loads(text)["transfer/net"] is None  # strict JSON: null
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "results.json").write_text('{"transfer/net": 0.')  # a job killed mid-write by hand
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "results.json").write_text((tmp_path / "0" / "results.json").read_text())  # a copy
    with pytest.warns(UserWarning) as caught:
        df = report.load([tmp_path])
    messages = " ".join(str(w.message) for w in caught)
    assert str(tmp_path / "3" / "results.json") in messages and "counted once" in messages
    assert sorted(df["seed"]) == [0, 1, 2] and df["transfer/net"].dtype == float
    assert df["transfer/net"].isna().sum() == 2


def test_a_harvest_made_elsewhere_is_distilled_and_scored(make_cfg, tmp_path):
    sim.run(make_cfg("attacker.queries=16", "users=none"), tmp_path / "run")
    rows = [{"prompt": "why calc 1+2", "response": "ok 1+2=3 thus #3"}] * 12
    (tmp_path / "h.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for source, n in ((tmp_path / "run" / "harvest", 16), (tmp_path / "h.jsonl", 12)):
        res = sim.run(make_cfg(f"harvest={source}"), tmp_path / f"ext-{n}")
        assert res["attacker/harvested"] == n and "transfer/net" in res and res["student/steps"] > 0
        assert "utility/relative" not in res  # no traffic was simulated
    (tmp_path / "bad.jsonl").write_text('{"prompt": "calc 1+1", "response": "ÿ"}\n')
    for bad, message in ((tmp_path / "nothing.jsonl", "no such file"), (tmp_path / "bad.jsonl", "row 0")):
        with pytest.raises(ValueError, match=message):
            sim.run(make_cfg(f"harvest={bad}"), tmp_path / "refused")
        assert not (tmp_path / "refused" / "results.json").exists()


def test_a_run_estimated_past_max_work_is_refused_before_compute(make_cfg, tmp_path):
    from sim.records import ConfigError

    with pytest.raises(ConfigError, match=r"max_work_minutes=5: this run would take about \d+ min .*teacher training"):
        sim.run(make_cfg("teacher.steps=200000", "max_work_minutes=5"), tmp_path)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="max_work_minutes=0"):
        sim.run(make_cfg("max_work_minutes=0"), tmp_path)


def test_the_report_lists_jobs_that_failed_were_interrupted_or_killed(tmp_path):
    from sim.records import write_json

    for job in ("0", "1", "2"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    write_json(tmp_path / "0" / "results.json", {"transfer/net": 0.5, "seed": 0})
    write_json(tmp_path / "1" / "error.json", {"error": "interrupted (SIGTERM)", "interrupted": True})
    failed = dict(report.failures([tmp_path]))  # job 2 left nothing: killed by SIGKILL or the OOM killer
    assert set(failed) == {str(tmp_path / "1"), str(tmp_path / "2")}
    assert "interrupted" in failed[str(tmp_path / "1")] and "killed" in failed[str(tmp_path / "2")]
    assert "Failed jobs" in report.failed_section([tmp_path])


def test_the_pareto_plot_colours_and_marks_two_groupings_and_warns_when_it_cannot_be_drawn(tmp_path):
    import random

    rng = random.Random(0)
    for i, (d, q, seed) in enumerate((d, q, s) for d in ("none", "full", "shaping") for q in (500, 2000) for s in (0, 1)):
        (tmp_path / "runs" / str(i)).mkdir(parents=True)
        write = {"config_hash": f"h{i}", "choice/defense": d, "config/attacker.queries": q, "config/seed": seed,
                 "transfer/net": 0.5 - 0.2 * (d != "none") + rng.random() / 20, "utility/relative": 1 - 0.3 * (d != "none")}
        (tmp_path / "runs" / str(i) / "results.json").write_text(json.dumps(write))
    df = report.load([tmp_path / "runs"])
    assert report.pareto(df, tmp_path / "p.png") and (tmp_path / "p.png").stat().st_size > 10_000
    with pytest.warns(UserWarning, match="no utility/relative"):
        assert not report.pareto(df.drop(columns=["utility/relative"]), tmp_path / "q.png")
    assert not (tmp_path / "q.png").exists()


def test_a_cause_a_run_never_met_reads_as_no_loss_but_a_run_before_the_breakdown_stays_missing(tmp_path):
    runs = [{"utility/lost/total": 0.2, "utility/lost/banned": 0.2},
            {"utility/lost/total": 0.1, "utility/lost/throttled": 0.1},
            {"utility/relative": 0.9}]  # written before `utility/lost/*` existed
    for i, r in enumerate(runs):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps({**r, "seed": i, "config/seed": i}))
    df = report.load([tmp_path]).sort_values("seed")
    assert df["utility/lost/banned"].tolist()[:2] == [0.2, 0.0] and df["utility/lost/throttled"].tolist()[:2] == [0.0, 0.1]
    assert df[["utility/lost/total", "utility/lost/banned"]].iloc[2].isna().all()
    assert report.label("utility/lost/no_such_account") == "people lost: no such account ↓"
