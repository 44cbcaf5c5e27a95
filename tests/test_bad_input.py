"""Every bad input is refused before any compute, with one line naming the key.

In-process (the world's build, where every config value is checked) and through the CLI
(`experiments/run.py`: exit status 2, one `error:` line on stderr, no traceback, nothing in
the run directory but Hydra's own `.hydra/`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.records import ConfigError
from sim.runner import World

ROOT = Path(__file__).resolve().parent.parent

# (overrides, text the one-line error must contain), by category
WRONG_TYPE = [
    ("student.steps=abc", "student.steps"), ("student.steps=1.5", "student.steps"),
    ("student.batch_size=nan", "student.batch_size"), ("student.lr=inf", "student.lr"),
    ("student.lr=-inf", "student.lr"), ("student.lr=nan", "student.lr"), ("student.epochs=many", "student.epochs"),
    ("teacher.steps=1e3", "teacher.steps"), ("attacker.queries=1e3", "attacker.queries"),
    ("attacker.queries=true", "attacker.queries"), ("attacker.per_tick=eight", "attacker.per_tick"),
    ("student=lora|student.r=2.5", "student.r"), ("seed=abc", "seed"), ("seed=1.5", "seed"),
    ("seeds.world=abc", "seeds.world"), ("threads=abc", "threads"), ("threads=2.0", "threads"),
    ("cache_dir=123", "cache_dir"), ("defense=cluster|defense.cluster.weights=3", "defense.cluster.weights"),
    ("defense=rate_limit|defense.rate_limit.burst_minutes=nan", "defense.rate_limit.burst_minutes"),
    ("gateway.temperature=hot", "gateway.temperature"), ("gateway.max_delay=1.5", "gateway.max_delay"),
    ("clock.days=inf", "clock.days"), ("metrics.boundary=nan", "metrics.boundary"),
    ("tasks.private_rate=half", "tasks.private_rate"),
]
OUT_OF_RANGE = [
    ("attacker.queries=-5", "attacker.queries"), ("attacker.per_tick=0", "attacker.per_tick"),
    ("student.steps=0", "student.steps"), ("student.lr=-1", "student.lr"), ("student.val_fraction=1.0", "val_fraction"),
    ("student.patience=0", "student.patience"), ("seed=-1", "seed"), ("seed=99999999999999999999", "seed"),
    ("threads=0", "threads"), ("clock.days=0", "clock.days"), ("clock.tick_minutes=-1", "clock.tick_minutes"),
    ("tasks.private_rate=2", "tasks.private_rate"), ("metrics.boundary=1.5", "metrics.boundary"),
    ("gateway.temperature=-1", "gateway.temperature"), ("gateway.observe_every=0", "gateway.observe_every"),
    ("users.n_users=-3", "users.n_users"), ("attacker.budget_usd=-5", "attacker.budget_usd"),
    ("teacher.n_embd=31", "teacher.n_embd"), ("tasks.eval_per_cell=0", "tasks.eval_per_cell"),
    ("attacker=hydra|attacker.mix=1.5", "attacker.mix"), ("defense=watermark|defense.watermark.gamma=1", "gamma"),
    ("defense=cluster|defense.cluster.ban_share=0", "defense.cluster.ban_share"),
    ("attacker.policy.skills=[arith,poetry]", "poetry"), ("attacker.policy.difficulties=[0]", "difficulties"),
]
DEPENDENT = [
    ("teacher.max_new_tokens=1000", "gateway.max_new_tokens"), ("teacher.n_positions=10", "n_positions"),
    ("gateway.top_k_logprobs=1000", "gateway.top_k_logprobs"), ("recipe=kd", "student.recipe.kd_alpha"),
    ("counter=recalibrate", "recalibrate_temperature"),
    ("defense=rate_limit|defense.rate_limit.mode=delay|gateway.max_delay=0", "gateway.max_delay"),
]
UNKNOWN_OR_MISSING = [
    ("+student.foo=1", "student.foo"), ("+gateway.foo=1", "gateway.foo"), ("+student.base.stepz=5", "student.base.stepz"),
    ("student.base.steps=???", "student.base.steps"), ("student.lr=???", "student.lr"),
]
CODE = [
    ("teacher._target_=shutil.rmtree", "teacher._target_"), ("+defense.x._target_=os.system", "defense.x._target_"),
    ("logger._target_=subprocess.Popen", "logger._target_"), ("plugins=3", "plugins"),
]
IN_PROCESS = WRONG_TYPE + OUT_OF_RANGE + DEPENDENT + UNKNOWN_OR_MISSING + CODE


@pytest.mark.parametrize("overrides, key", IN_PROCESS, ids=[o for o, _ in IN_PROCESS])
def test_the_world_refuses_a_bad_value_naming_it(make_cfg, overrides, key):
    if overrides.startswith(("threads", "cache_dir", "logger")):  # keys the test fixture sets itself
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("run", overrides=["scale=tiny", *overrides.split("|")])
    else:
        cfg = make_cfg(*overrides.split("|"))
    with pytest.raises(ConfigError) as e:
        World(cfg)
    assert key in str(e.value) and "\n" not in str(e.value)


def cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "experiments/run.py", "scale=tiny", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


# refused by the entry point before Hydra composes or anything is imported (fast)
BEFORE_COMPOSE = [
    ("student.stepz=5", "student.stepz=5: no such key (did you mean student.steps?)"),
    ("gateway.max_dely=3", "gateway.max_dely=3: no such key (did you mean gateway.max_delay?)"),
    ("+sed=1", "sed=1: no part of a run reads this key (did you mean seed?)"),
    ("attacker=sneaky", "attacker=sneaky is not a config option"),
    ("defense=[rate_limit,clustr]", "defense=clustr is not a config option"),
    ("seed=[1", "error: "),
]
# refused by the world's build: the first and last of each in-process category, through the CLI
THROUGH_CLI = [WRONG_TYPE[0], OUT_OF_RANGE[0], DEPENDENT[3], UNKNOWN_OR_MISSING[0], CODE[0]]


@pytest.mark.parametrize("override, message", BEFORE_COMPOSE, ids=[o for o, _ in BEFORE_COMPOSE])
def test_the_cli_refuses_before_composing(tmp_path, override, message):
    p = cli(override, f"hydra.run.dir={tmp_path}")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], p.stderr
    assert "Traceback" not in p.stderr and not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("overrides, key", THROUGH_CLI, ids=[o for o, _ in THROUGH_CLI])
def test_the_cli_refuses_a_bad_value_in_one_line(tmp_path, overrides, key):
    p = cli(*overrides.split("|"), f"hydra.run.dir={tmp_path}")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert {q.name for q in tmp_path.iterdir()} <= {".hydra"}  # nothing computed, nothing written


def test_the_battery_covers_every_category():
    assert len(IN_PROCESS) + len(BEFORE_COMPOSE) >= 60
