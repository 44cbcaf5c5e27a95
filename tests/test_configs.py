"""Every YAML under configs/ is composed and instantiated: adding a YAML adds a test."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from sim.runner import World

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
YAMLS = sorted(p.relative_to(CONFIGS) for p in CONFIGS.rglob("*.yaml"))


def overrides_for(rel: Path) -> list[str]:
    if rel.parent == Path("."):
        return []  # run.yaml: the defaults themselves
    group = rel.parent.as_posix()
    return [f"{group}={rel.stem}"]


@pytest.mark.parametrize("rel", YAMLS, ids=str)
def test_yaml_composes_and_instantiates(rel, make_cfg, tmp_path, request):
    ov = overrides_for(rel)
    if rel in (Path("recipe/kd.yaml"), Path("counter/recalibrate.yaml")):  # they read the API's log-probs
        ov.append("gateway.top_k_logprobs=5")
    if rel == Path("policy/judge.yaml"):  # a judge harvests grades: a graded recipe goes with it
        ov.append("recipe=best_of_k")
    if rel in (Path("recipe/best_of_k.yaml"), Path("recipe/reward.yaml")):
        ov.append("policy=judge")
    if rel.parent == Path("calibration"):  # what the fingerprint calibrates on: build one with it
        ov.append("defense=fingerprint")
    if rel == Path("teacher/hf.yaml"):  # a checkpoint directory is required: the test writes one
        ov.append(f"teacher.path={request.getfixturevalue('hf_checkpoint')}")
    scale = rel.stem if rel.parent == Path("scale") else "tiny"
    cfg = make_cfg(*[o for o in ov if not o.startswith("scale=")], scale=scale)
    if cfg.backend._target_ == "sim.incident.Replay":  # scale=incident: validated and built without its compute
        from sim import incident

        plan = incident.prepare(cfg)
        assert plan.campaign.n == 24000 and plan.users.n == 60000 and plan.fp and plan.cl
        return
    world = World(cfg)
    assert world.suite.eval_set and world.attacker.queries >= 0
    if rel.parent == Path("logger"):
        node = __import__("omegaconf").OmegaConf.load(CONFIGS / rel)
        assert instantiate(node, save_dir=str(tmp_path)) is not None


def test_every_group_the_design_names_exists():
    for group in ("teacher", "student", "attacker", "policy", "users", "defense", "tasks", "scale", "experiment",
                  "logger"):
        assert list((CONFIGS / group).glob("*.yaml")), group


@pytest.mark.parametrize("launcher, target", [("slurm", "SlurmLauncher"), ("ray", "RayLauncher"),
                                              ("joblib", "JoblibLauncher")])
def test_cluster_launchers_compose(launcher, target):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("run", overrides=[f"hydra/launcher={launcher}", "threads=4"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.cpus_per_task == 4
