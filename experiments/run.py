"""The one Hydra entry point: `python experiments/run.py [overrides]` (add -m for sweeps).

The only place that reads Hydra's runtime state: it records the chosen config options and
the output directory, then hands a plain config to `sim.run`.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import sim  # noqa: E402  (sets the offline switches before anything imports transformers)
from sim.records import config_hash, write_json  # noqa: E402
import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# the config groups: every folder of configs/ but Hydra's own (a new group needs no edit here)
GROUPS = tuple(sorted(p.name for p in CONFIGS.iterdir() if p.is_dir() and p.name != "hydra"))


def search_dirs(argv: list[str]) -> list[Path]:
    """The config directories a run composes from: ours, then each `hydra.searchpath` entry
    given on the command line (`file://<dir>` or `pkg://<package>`), where a researcher's own
    package keeps its group options (`defense/my_defense.yaml`)."""
    import importlib.util

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    dirs = [CONFIGS]
    for arg in argv:
        if not arg.startswith(("hydra.searchpath=", "+hydra.searchpath=", "++hydra.searchpath=")):
            continue
        try:
            entries = OverridesParser.create().parse_overrides([arg])[0].value()
        except OverrideParseException:
            continue  # Hydra names the syntax error itself
        for entry in entries if isinstance(entries, list) else [entries]:
            scheme, _, where = str(entry).partition("://")
            if scheme == "file":
                dirs.append(Path(where))
            elif scheme == "pkg":
                try:
                    spec = importlib.util.find_spec(where.replace("/", "."))
                except ModuleNotFoundError:
                    spec = None
                if spec is None or not spec.submodule_search_locations:
                    fail(f"hydra.searchpath={entry}: no importable package {where!r} (is it installed, or on PYTHONPATH?)")
                dirs += [Path(d) for d in spec.submodule_search_locations]
            else:
                fail(f"hydra.searchpath={entry}: an entry is file://<dir> or pkg://<package>")
    return dirs


def check_group_options(argv: list[str]) -> None:
    """`group=option` overrides naming no YAML: one line, before Hydra's multi-line error.

    Read with Hydra's own override grammar, so a sweep (`defense=none,full`), a stack of
    several options (`defense=[rate_limit,cluster]`) and both together are understood. The
    options of plug-in packages on `hydra.searchpath` count."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    dirs = search_dirs(argv)

    def options(value):
        for v in (value if isinstance(value, list) else [value]):
            yield from (options(v) if isinstance(v, list) else [v])

    parser = OverridesParser.create()
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        try:
            override = parser.parse_overrides([arg])[0]
        except OverrideParseException:
            continue  # Hydra names the syntax error itself
        group = override.key_or_group
        if group not in GROUPS or override.is_delete():
            continue
        value = list(override.sweep_iterator()) if override.is_sweep_override() else override.value()
        for option in options(value):
            if option is None or option == "null" or any((d / group / f"{option}.yaml").exists() for d in dirs):
                continue
            known = ", ".join(sorted({p.stem for d in dirs for p in (d / group).glob("*.yaml")}))
            print(f"error: {group}={option} is not a config option (available: {known})", file=sys.stderr)
            sys.exit(2)


def headline(results: dict) -> float:
    """What the job returns to Hydra's sweeper: transfer/net, NaN where no student was trained
    (an incident replay, `student=none`) or it could not be computed (null)."""
    value = results.get("transfer/net")
    return float("nan") if value is None else float(value)


def stacked_choices(overrides) -> dict[str, str]:
    """Groups given several options at once (`defense=[rate_limit,cluster]`), which Hydra leaves
    out of its runtime choices: recorded as `rate_limit+cluster`, so the report can group by them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group in GROUPS and isinstance(override.value(), list):
            out[override.key_or_group] = "+".join(map(str, override.value()))
    return out


class Tee:
    """A stream that also writes to the job's log file."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.log.write(text)
        return self.stream.write(text)

    def flush(self):
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding: the terminal's
        return getattr(self.stream, name)


@hydra.main(version_base="1.3", config_path="../configs", config_name="run")
def main(cfg: DictConfig) -> float:
    """One job; what it prints also goes to `job.log` in its directory, since a sweep's parallel
    jobs interleave on the terminal and a cluster launcher's own logs are elsewhere."""
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stdout, stderr = sys.stdout, sys.stderr
    path = out / "job.log"
    fresh = not path.exists()
    with open(path, "a", buffering=1) as log:
        sys.stdout, sys.stderr = Tee(stdout, log), Tee(stderr, log)
        try:
            return job(cfg)
        except SystemExit as e:
            if e.code == 2 and fresh:  # a refused config leaves nothing but .hydra/ behind
                path.unlink(missing_ok=True)
            raise
        except BaseException:  # Hydra prints it after the streams are restored: the log keeps it too
            log.write(traceback.format_exc())
            raise
        finally:
            sys.stdout, sys.stderr = stdout, stderr


def job(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    with open_dict(cfg):
        cfg.choices = {**stacked_choices(hc.overrides.task),
                       **{g: hc.runtime.choices.get(g) for g in GROUPS if hc.runtime.choices.get(g) is not None}}
    out = Path(hc.runtime.output_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    key = config_hash(cfg)
    done = out / "results.json"
    if sweep and done.is_file():  # a rerun of the sweep: a job whose results match is not run again
        try:
            previous = json.loads(done.read_text())
        except ValueError:
            print(f"warning: {done} is not valid JSON: the job runs again", file=sys.stderr)
            previous = {}
        if previous.get("config_hash") == key:
            print(f"skipped {out}: results.json exists for this config ({key})")
            return headline(previous)
    import signal

    def terminated(signum, frame):  # a scheduler's SIGTERM: as Ctrl-C, the job is marked interrupted
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, terminated)
    try:
        # a sweep's runs share a group (its directory's name) in loggers that browse runs
        if sweep:
            results = isolated(cfg, out, group=Path(hc.sweep.dir).name)
            if results is None:  # the job failed and recorded why
                return float("nan")
        else:
            results = sim.run(cfg, out, progress=sys.stderr.isatty())
    except KeyboardInterrupt as e:
        write_json(out / "error.json", {"config_hash": key, "error": f"interrupted ({e.args[0] if e.args else 'SIGINT'})",
                                        "interrupted": True})
        print(f"error: job {out} interrupted; rerun to run it again", file=sys.stderr)
        raise
    except Exception as e:
        if sweep:  # the sweep goes on; the error stays in the job's directory for the report
            failed(out, key, e, e.output if isinstance(e, JobDied) else traceback.format_exc())
            return float("nan")
        if isinstance(e, ValueError):  # a bad config value: one clear line, no traceback, nothing computed
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
    (out / "error.json").unlink(missing_ok=True)  # an earlier failure of this job is fixed
    from experiments.report import table

    print(table([out]))
    files = ", ".join(sorted(p.name + "/" * p.is_dir() for p in out.iterdir() if not p.name.startswith(".")))
    print(f"\nrun directory: {out}\n  {files}")
    return headline(results)


HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--info", "-i", "--experimental-rerun"}
OWN_CONFIG = {"--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd"}


def check_overrides(argv: list[str]) -> None:
    """Compose the config once, each sweep at its first value, before Hydra runs anything: a
    key that does not exist (naming the nearest one), a `+key` nothing reads and a malformed
    override are one line each and exit status 2, instead of Hydra's multi-line report."""
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides, skip = [], False
    for arg in argv:
        if skip or arg in OWN_CONFIG or arg.startswith(tuple(f"{f}=" for f in OWN_CONFIG)):
            if arg in OWN_CONFIG or arg.startswith(tuple(f"{f}=" for f in OWN_CONFIG)):
                return  # another primary config: Hydra checks it itself
            skip = False
            continue
        if arg.startswith("-"):
            skip = arg in HYDRA_FLAGS_WITH_VALUE
            continue
        overrides.append(arg)
    if not overrides:
        return
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as e:
        fail(str(e).splitlines()[0])
    first = []
    for o, text in zip(parsed, overrides):
        if o.key_or_group.startswith("hydra") and o.key_or_group != "hydra.searchpath":
            continue  # Hydra's own settings (launcher, sweep dirs): Hydra checks them
        if o.is_sweep_override():
            value = next(iter(o.sweep_iterator()))
            text = f"{o.get_key_element()}={'[' + ','.join(map(str, value)) + ']' if isinstance(value, list) else value}"
        first.append(text)

    def keys(cfg) -> list[str]:
        flat = []

        def walk(node, prefix):
            if OmegaConf.is_dict(node):
                for k in node.keys():
                    walk(node._get_node(k), f"{prefix}.{k}" if prefix else str(k))
            else:
                flat.append(prefix)

        walk(cfg, "")
        return flat

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        try:
            cfg = compose("run", overrides=first)
        except (HydraException, OmegaConfBaseException) as e:
            text = str(e)
            key = text.split("'")[1] if text.startswith("Could not override '") else None
            if key is None:
                fail(text.splitlines()[0])
            groups_only = [t for t, o in zip(overrides, parsed) if o.key_or_group in (*GROUPS, "hydra.searchpath")]
            parent, _, leaf = key.rpartition(".")
            siblings = [k.rpartition(".")[2] for k in keys(compose("run", overrides=groups_only))
                        if k.rpartition(".")[0] == parent]
            near = [f"{parent}.{m}" if parent else m for m in difflib.get_close_matches(leaf, siblings, n=1)]
            value = next(t for t in first if t.lstrip("+~").startswith(key + "=")).split("=", 1)[1]
            fail(f"{key}={value}: no such key" + (f" (did you mean {near[0]}?)" if near else ""))
        base = set(compose("run", overrides=[t for t in first if not t.startswith("+") or "hydra.searchpath" in t]).keys())
    for text in first:  # `+key=value` at the top level: nothing reads it
        key = text[1:].split("=", 1)[0] if text.startswith("+") and not text.startswith("++") else None
        if key and "." not in key and key not in base and key not in GROUPS:
            near = difflib.get_close_matches(key, sorted(base), n=1)
            fail(f"{key}={text.split('=', 1)[1]}: no part of a run reads this key"
                 + (f" (did you mean {near[0]}?)" if near else ""))
    del cfg


def failed(out: Path, key: str, e: BaseException, trace: str) -> None:
    write_json(out / "error.json", {"config_hash": key, "error": f"{type(e).__name__}: {e}", "traceback": trace})
    print(f"error: job {out} failed: {type(e).__name__}: {e}", file=sys.stderr)


FAILED = 3  # the child's exit status when it recorded its own failure in error.json


class JobDied(RuntimeError):
    def __init__(self, message: str, output):
        super().__init__(message)
        self.output = "".join(output)  # the end of what the job printed: its traceback, if any


def isolated(cfg: DictConfig, out: Path, group: str) -> dict | None:
    """A sweep's job runs in a child process of the launcher's worker: a job killed by a signal
    (the OOM killer, a scheduler's SIGKILL) is then recorded as failed, like one that raised,
    instead of taking the worker and with it the whole sweep down. The child reads the job's
    config from its directory and writes `results.json` there; its output goes to the job's
    log through this process. None: the job failed and wrote `error.json` itself."""
    import os
    import signal
    import subprocess
    from collections import deque

    from omegaconf import OmegaConf

    (out / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / ".hydra" / "job.yaml")  # unresolved: the child hashes the same config
    tail: deque[str] = deque(maxlen=30)  # the end of its output, for error.json
    # unbuffered: every line reaches the job's log as it is printed, the last ones too when killed
    with subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--job", str(out), group],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as child:
        try:
            for line in child.stdout:
                sys.stdout.write(line)
                tail.append(line)
            code = child.wait()
        except BaseException:  # Ctrl-C or SIGTERM here: the child goes too
            child.terminate()
            child.wait()
            raise
    if code == FAILED:
        return None
    if code < 0:
        raise JobDied(f"the job's process was killed by {signal.Signals(-code).name}", tail)
    if code != 0:
        last = next((t.strip() for t in reversed(tail) if t.strip()), "it printed nothing")
        raise JobDied(f"the job's process exited with status {code}: {last}", tail)
    return json.loads((out / "results.json").read_text())


def run_child(out: Path, group: str) -> None:
    """`run.py --job <dir> <group>`: the job `isolated` started, with the config it saved."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(out / ".hydra" / "job.yaml")
    try:
        sim.run(cfg, out, progress=False, group=group or None)
    except Exception as e:
        failed(out, config_hash(cfg), e, traceback.format_exc())
        sys.exit(FAILED)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--job"]:
        run_child(Path(sys.argv[2]), sys.argv[3])
        sys.exit(0)
    check_group_options(sys.argv[1:])
    check_overrides(sys.argv[1:])
    main()
