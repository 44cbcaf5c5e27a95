"""A run's records, shared by every runner and entry point: building components from config,
atomic JSON, the config's identity hash, the flat `config/*` columns and the code's commit.

Light on purpose (no torch): `experiments/run.py` imports it before Hydra parses arguments.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parent.parent


def build(node, **kwargs):
    """instantiate() that surfaces a constructor's own error (which names the bad value)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, (ValueError, TypeError)):
            raise e.__cause__ from None
        raise


def strict(obj):
    """`obj` with every NaN and ±inf float replaced by None (JSON `null`): strict JSON that
    every parser reads, where a metric that cannot be computed is null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    """Write strict JSON atomically: a killed run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(strict(obj), f, indent=1, sort_keys=True, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def config_hash(cfg: DictConfig) -> str:
    """A run's identity: the hash of its resolved config (a rerun of a sweep skips a job whose
    results.json carries the same hash)."""
    text = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flat_config(cfg: DictConfig) -> dict:
    """Scalar config leaves as `config/<dotted.key>` (lists as JSON strings), for grouping."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(node, list):
            out[f"config/{prefix}"] = json.dumps(node)
        else:
            out[f"config/{prefix}"] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out
