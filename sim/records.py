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


def rate(value, where: str) -> float:
    """A probability or share read from the config: in [0, 1], else one line naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{where}={value!r} must be in [0, 1]")
    return float(value)


def build(node, **kwargs):
    """instantiate() after `check` (keys and types against the constructor's signature), that
    surfaces a constructor's own error (which names the bad value)."""
    if isinstance(node, DictConfig):
        check_targets(node, node._get_full_key(None))
        check(node)
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


class ConfigError(ValueError):
    """A config value refused before any compute: one line, `<key>=<value>: <why>`."""


INT_LIMIT = 2**63 - 1  # seeds and sizes beyond this overflow torch's and numpy's generators
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def hints(cls) -> dict:
    """The constructor's parameter annotations of `cls`, resolved in each defining module
    (dataclass fields and `__init__` annotations; one that cannot be resolved is left out)."""
    import sys
    import typing

    out = {}
    for klass in reversed(cls.__mro__):
        anns = dict(klass.__dict__.get("__annotations__", {}))
        init = klass.__dict__.get("__init__")
        if init is not None and not getattr(klass, "__dataclass_fields__", None):
            anns.update(getattr(init, "__annotations__", {}))
        namespace = vars(sys.modules[klass.__module__]) if klass.__module__ in sys.modules else {}
        for k, a in anns.items():
            if isinstance(a, str):
                try:
                    a = eval(a, dict(namespace), {"typing": typing})  # noqa: S307 (the project's own annotations)
                except Exception:
                    continue
            out[k] = a
    out.pop("return", None)
    return out


def _accepts(value, hint) -> str | None:
    """None when `value` fits the annotation `hint`, else why not."""
    import collections.abc
    import types
    import typing

    from omegaconf import DictConfig, ListConfig

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        reasons = [_accepts(value, h) for h in typing.get_args(hint)]
        return None if any(r is None for r in reasons) else " or ".join(dict.fromkeys(r for r in reasons if r))
    if hint is type(None):
        return None if value is None else "must be null"
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        return None if abs(value) <= INT_LIMIT else f"must be an integer within ±{INT_LIMIT}"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    base = origin or hint
    if base in (dict, collections.abc.Mapping):
        return None if isinstance(value, (dict, DictConfig)) else "must be a mapping"
    if base in (list, tuple, collections.abc.Sequence):
        return None if isinstance(value, (list, tuple, ListConfig)) else "must be a list"
    return None  # another class (a nested component): checked where it is built


# A config is code: `_target_` names what gets constructed. Only these packages (and the
# plug-in packages a config lists under `plugins:`) may be named, so that a config file cannot
# call an arbitrary function (`shutil.rmtree`) before anything looks at it.
PACKAGES = ("sim", "teachers", "students", "defenses", "experiments", "lightning.pytorch.loggers")
PLUGINS: list[str] = []  # set from the run's config (`plugins: [mypkg]`) by the world


def allowed(target: str) -> bool:
    return any(target == p or target.startswith(p + ".") for p in (*PACKAGES, *PLUGINS))


def check_targets(node, where: str = "") -> None:
    """Every `_target_` anywhere under `node` names a class of an allowed package."""
    from omegaconf import OmegaConf

    if OmegaConf.is_dict(node):
        target = node.get("_target_") if "_target_" in node else None
        if target is not None and not (isinstance(target, str) and allowed(target)):
            raise ConfigError(f"{where + '.' if where else ''}_target_={target}: only classes of this project's "
                              f"packages ({', '.join(PACKAGES)}) and of the plug-in packages listed in `plugins` "
                              f"({', '.join(PLUGINS) or 'none'}) may be named")
        for k in node.keys():
            if not OmegaConf.is_missing(node, k):
                check_targets(node[k], f"{where}.{k}" if where else str(k))
    elif OmegaConf.is_list(node):
        for i, v in enumerate(node):
            check_targets(v, f"{where}[{i}]")


def check(node, cls=None, where: str | None = None) -> None:
    """Refuse, before anything is built, a node whose keys the constructor does not take
    (naming the nearest), a `???` left unset, and a value of the wrong type for its annotation
    (a string or float for an integer, nan or ±inf for a number); nested `_target_` nodes are
    checked the same way. The constructor itself checks ranges and relations."""
    import difflib
    import inspect

    from hydra.utils import get_class
    from omegaconf import DictConfig, OmegaConf

    where = where or node._get_full_key(None)
    if cls is None:
        target = node.get("_target_")
        if target is None:
            return
        try:
            cls = get_class(target)
        except Exception:
            raise ConfigError(f"{where}._target_={target}: no such class") from None
    params = inspect.signature(cls).parameters
    free = any(p.kind == p.VAR_KEYWORD for p in params.values())
    types_ = hints(cls)
    for key in node:
        if key in HYDRA_KEYS:
            continue
        name = f"{where}.{key}"
        if key not in params and not free:
            near = difflib.get_close_matches(str(key), [p for p in params if p not in ("self",)], n=1)
            raise ConfigError(f"{name}: unknown key" + (f" (did you mean {where}.{near[0]}?)" if near else
                                                         f" (valid: {', '.join(p for p in params if p != 'self')})"))
        if OmegaConf.is_missing(node, key):
            raise ConfigError(f"{name}=???: a value is required")
        value = node[key]
        if isinstance(value, DictConfig) and "_target_" in value:
            check(value, where=name)
            continue
        plain = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        why = _accepts(plain, types_[key]) if key in types_ else None
        if why:
            raise ConfigError(f"{name}={plain!r}: {why}")
