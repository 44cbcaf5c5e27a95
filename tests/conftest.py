"""Tests compose the real configs (scale=tiny unless a test says otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import sim  # noqa: F401  (offline switches before transformers is imported)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory) -> Path:
    """Tiny teachers are trained once per test session, in a private cache."""
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture(scope="session")
def make_cfg(teacher_cache):
    def make(*overrides: str, scale: str = "tiny"):
        with initialize_config_dir(str(CONFIGS), version_base="1.3"):
            cfg = compose("run", overrides=[f"scale={scale}", *overrides], return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.cache_dir = str(teacher_cache)
            cfg.logger = None  # no training curves in tests unless asked for
            cfg.choices = {k: v for k, v in choices.items() if not k.startswith("hydra") and v is not None}
        return cfg

    return make
