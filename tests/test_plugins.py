"""Plug-ins from outside the package: a skill, a defense and a recipe are each one file and
one YAML in the researcher's own package, found through `hydra.searchpath`, with nothing in
this repository edited; `examples/my_defense` runs as its README says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FILES = {
    # a skill: reverse a word; the private variant reverses it and shifts every letter by one
    "toyplug/skill.py": '''
        from sim.tasks.base import Problem, Skill

        LETTERS = "abcdefghijklmnopqrstuvwxyz"

        class Rev(Skill):
            name = "rev"

            def _sample(self, rng, difficulty, private):
                word = "".join(rng.choice(LETTERS) for _ in range(difficulty + 1))
                out = word[::-1]
                if private:
                    out = "".join(LETTERS[(LETTERS.index(c) + 1) % 26] for c in out)
                return Problem(self.name, difficulty, f"rev {word}", out, f"{word[::-1]}", private=private)
        ''',
    "toyplug/configs/tasks/with_rev.yaml": '''
        defaults:
          - default
          - _self_
        skills:
          rev: {_target_: toyplug.skill.Rev}
        ''',
    # a defense: refuse prompts longer than `n` characters
    "toyplug/length_cap.py": '''
        from defenses.base import Defense

        class LengthCap(Defense):
            def __init__(self, n: int = 10):
                if not isinstance(n, int) or n < 1:
                    raise ValueError(f"defense.length_cap.n={n!r} must be a positive integer")
                self.n, self.refused = n, 0

            def check(self, request, ctx):
                if len(request.prompt) > self.n:
                    self.refused += 1
                    return "too long"
                return None
        ''',
    "toyplug/configs/defense/length_cap.yaml": '''
        length_cap:
          _target_: toyplug.length_cap.LengthCap
          n: 14
        ''',
    # a recipe: SFT with the final answer's tokens weighted `w` times the rest
    "toyplug/recipe.py": '''
        from dataclasses import dataclass

        from students.distill import Recipe

        @dataclass
        class AnswerWeighted(Recipe):
            w: float = 3.0
            calls = 0  # class attribute: the test counts the examples this recipe made

            def example(self, tok, request, response, tokens=None, logprobs=None):
                type(self).calls += 1
                ex = super().example(tok, request, response, tokens, logprobs)
                ex["weights"] = [x * self.w if x == 1.0 else x for x in ex["weights"]]
                return ex
        ''',
    "toyplug/configs/recipe/answer_weighted.yaml": '''
        # @package student.recipe
        _target_: toyplug.recipe.AnswerWeighted
        w: 3.0
        ''',
}


@pytest.fixture
def toyplug(tmp_path, monkeypatch):
    for name, text in {"toyplug/__init__.py": "", **FILES}.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_skill_a_defense_and_a_recipe_from_a_plugin_package_run_end_to_end(make_cfg, toyplug, tmp_path):
    import sim

    cfg = make_cfg(f"hydra.searchpath=[file://{toyplug / 'toyplug' / 'configs'}]", "plugins=[toyplug]",
                   "tasks=with_rev", "defense=length_cap", "student=finetune", "recipe=answer_weighted",
                   "attacker.queries=24", "users=none")
    from toyplug.recipe import AnswerWeighted

    res = sim.run(cfg, tmp_path / "run", log=lambda *a: None)
    assert "transfer/rev" in res and "rev" in json.loads((tmp_path / "run" / "teacher_card.json").read_text())["explain"]
    assert res["attacker/harvested"] < res["attacker/queries"]  # the length cap refused some
    assert AnswerWeighted.calls > 0


def test_a_plugin_option_is_refused_without_its_search_path_or_its_package(make_cfg, toyplug):
    from sim.runner import World

    cli = subprocess.run([sys.executable, "experiments/run.py", "scale=tiny", "defense=length_cap"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "defense=length_cap is not a config option" in cli.stderr
    cfg = make_cfg(f"hydra.searchpath=[file://{toyplug / 'toyplug' / 'configs'}]", "defense=length_cap")
    with pytest.raises(ValueError, match="toyplug.length_cap.LengthCap"):
        World(cfg)  # configs are code: a package must be listed in `plugins` to be trusted


def test_the_example_defense_package_runs_as_its_readme_says(teacher_cache, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples" / "my_defense")}
    args = [sys.executable, "experiments/run.py", "scale=tiny", "hydra.searchpath=[pkg://my_defense.configs]",
            "plugins=[my_defense]", "attacker.queries=16", "users=none", f"cache_dir={teacher_cache}", "threads=1"]
    ok = subprocess.run([*args, "defense=reasoning_quota", "defense.reasoning_quota.q=2", f"hydra.run.dir={tmp_path}/a"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    res = json.loads((tmp_path / "a" / "results.json").read_text())
    assert res["attacker/harvested"] <= 2 < res["attacker/queries"]  # one account, one day, a quota of 2
    bad = subprocess.run([*args, "defense=reasoning_quota", "defense.reasoning_quota.q=-1",
                          f"hydra.run.dir={tmp_path}/b"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: defense.reasoning_quota.q=-1 must be a non-negative integer"]
