"""One run, end to end (the README's "What a run does").

`run(cfg, out_dir)` takes a composed config (it never reads Hydra's runtime state), builds
and validates every component before any compute, then: teacher -> gateway -> clock
(legitimate users and the attacker campaign, `sim.world.simulate`) -> exchange log and
harvest -> student -> metrics -> `results.json`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

import teachers
from defenses.base import Stack
from sim import metrics, records
from sim.accounts import Network
from sim.gateway import Gateway
from sim.grading import Verdict
from sim.quiet import quiet
from sim.records import INT_LIMIT, ROOT, ConfigError, build, check, check_targets, config_hash, flat_config, git_commit, write_json
from sim.world import simulate


@contextmanager
def opened(logger):
    """A Lightning logger that is closed (a wandb run finished) even when the job crashes."""
    try:
        yield logger
    finally:
        finish = getattr(getattr(logger, "experiment", None), "finish", None) if logger else None
        if callable(finish):
            finish()


class World:
    """Every component of a run, built and validated from the config before any compute."""

    def __init__(self, cfg: DictConfig):
        try:
            self._build(cfg)
        except ConfigError:
            raise
        except Exception as e:  # any refusal at build time is a config error: one line, before compute
            raise ConfigError(str(e).splitlines()[0] if str(e) else type(e).__name__) from e

    def _build(self, cfg: DictConfig):
        plugins = cfg.get("plugins")
        plugins = OmegaConf.to_container(plugins) if OmegaConf.is_list(plugins) else [] if plugins is None else plugins
        if not isinstance(plugins, list) or not all(isinstance(p, str) and p.isidentifier() for p in plugins):
            raise ConfigError(f"plugins={plugins!r} must be a list of package names")
        records.PLUGINS[:] = list(plugins)
        self.seeds = {"world": cfg.seed, "attacker": cfg.seed, "student": cfg.seed, **dict(cfg.get("seeds") or {})}
        for name, value in [("seed", cfg.seed), *((f"seeds.{k}", v) for k, v in self.seeds.items())]:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= INT_LIMIT:
                raise ConfigError(f"{name}={value!r} must be a non-negative integer (at most {INT_LIMIT})")
        threads = cfg.get("threads", 1)
        if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 1024:
            raise ConfigError(f"threads={threads!r} must be a positive integer (torch CPU threads)")
        if cfg.get("cache_dir") is not None and not isinstance(cfg.cache_dir, str):
            raise ConfigError(f"cache_dir={cfg.cache_dir!r} must be a directory path or null")
        self.boundary = cfg.get("metrics", {}).get("boundary", 0.5)
        if isinstance(self.boundary, bool) or not isinstance(self.boundary, (int, float)) or not 0 <= self.boundary <= 1:
            raise ConfigError(f"metrics.boundary={self.boundary!r} must be in [0, 1]")
        self.boundary = float(self.boundary)
        self.suite = build(cfg.tasks)
        self.teacher_spec = build(cfg.teacher)
        # student=none (no `_target_`): the run stops at the traffic, for detection studies
        self.student_spec = build(cfg.student) if cfg.student.get("_target_") else None
        self.stack = Stack([build(node) for node in (cfg.defense or {}).values()])
        self.clock = build(cfg.clock)
        self.users = build(cfg.users)
        self.attacker = build(cfg.attacker)
        check(cfg.gateway, Gateway, "gateway")
        self.gateway_cfg = dict(cfg.gateway)
        Gateway(None, self.stack, **self.gateway_cfg)  # validates the gateway's values
        if cfg.get("logger"):  # built later, next to the student's training; checked now
            check_targets(cfg.logger, "logger")
            check(cfg.logger, where="logger")
        self._limits(cfg)
        # binding checks every skill the actors ask for and lays out their infrastructure
        network = Network(self.seeds["world"])
        for actor, stream in ((self.users, "world"), (self.attacker, "attacker")):
            actor.bind(self.suite, self.clock, network, self.seeds[stream], users=self.users)

    # rates measured on the 2-core reference machine (docs/performance.md): the 0.8M-parameter
    # teacher serves ~250 explained questions/s, and training runs ~60 GFLOP/s (6 x parameters
    # per token, ~150 tokens an exchange). Estimates only: they say "minutes" or "hours".
    SERVE_QPS, TRAIN_FLOPS, TOKENS, TEACHER_PARAMS = 250.0, 6e10, 150, 825_000

    @staticmethod
    def params(spec) -> float:
        n, d = getattr(spec, "n_layer", 4), getattr(spec, "n_embd", 128)
        return 12 * n * d * d + 64 * d

    def estimate(self, cache: Path) -> dict[str, float]:
        """Seconds each phase of this run should take (see the rates above), before any compute."""
        import teachers as registry

        def trained(spec, shipped) -> bool:
            if getattr(spec, "checkpoint", None) or getattr(spec, "path", None):
                return True
            key = registry.teacher_hash(spec, self.suite)
            return any((p / "card.json").exists() and key in (p / "card.json").read_text() for p in (shipped, cache / key))

        def training(spec) -> float:
            steps = getattr(spec, "judge_steps", 0) + spec.steps  # a judge: its teacher, then its judging stage
            return steps * spec.batch_size * self.TOKENS * 6 * self.params(spec) / self.TRAIN_FLOPS

        out = {}
        if not trained(self.teacher_spec, getattr(self.teacher_spec, "shipped", registry.SHIPPED)):
            out["teacher training"] = training(self.teacher_spec)
        mix = float(getattr(self.attacker, "mix", 0.0))
        requests = self.attacker.queries / max(1e-9, 1 - mix) + 10 * self.users.n_users * self.clock.days
        out["traffic"] = requests / self.SERVE_QPS * self.params(self.teacher_spec) / self.TEACHER_PARAMS
        spec = self.student_spec
        if spec is not None:
            base = getattr(spec, "base", None)
            if base is not None:
                from students.base import SHIPPED_BASE

                if not trained(base, SHIPPED_BASE):
                    out["base training"] = training(base)
            steps = spec.schedule(int(0.9 * self.attacker.queries))
            out["student"] = steps * spec.batch_size * self.TOKENS * 6 * self.params(spec) / self.TRAIN_FLOPS
            out["evaluation"] = 3 * len(self.suite.eval_set) / self.SERVE_QPS
        return out

    def _limits(self, cfg: DictConfig) -> None:
        """Values that are each fine alone but not together."""
        from teachers.vocab import CharTokenizer

        g = self.gateway_cfg
        longest = max(len(p.request(True)) for p in self.suite.eval_set) + 2  # BOS ... SEP
        models = [("teacher", self.teacher_spec)] + ([("student", self.student_spec)] if self.student_spec else [])
        for name, spec in models:
            n_pos = getattr(spec, "n_positions", None)
            if n_pos is not None and longest + g["max_new_tokens"] > n_pos:
                raise ConfigError(f"gateway.max_new_tokens={g['max_new_tokens']}: the longest held-out prompt "
                                  f"({longest} tokens) plus it exceeds {name}.n_positions={n_pos}")
        vocab = CharTokenizer().vocab_size
        if g["top_k_logprobs"] > vocab:
            raise ConfigError(f"gateway.top_k_logprobs={g['top_k_logprobs']}: the vocabulary has {vocab} tokens")
        recipe = getattr(self.student_spec, "recipe", None)
        if recipe is not None and recipe.kd_alpha > 0 and not g["top_k_logprobs"]:
            raise ConfigError(f"student.recipe.kd_alpha={recipe.kd_alpha}: KD needs log-probabilities, and the API "
                              f"exposes none (set gateway.top_k_logprobs > 0)")
        policy = getattr(self.attacker, "policy", None)
        if recipe is not None and policy is not None and getattr(recipe, "graded", False) != policy.grades:
            raise ConfigError(f"student.recipe={type(recipe).__name__} and attacker.policy={type(policy).__name__}: "
                              + ("a graded recipe (best_of_k, reward) needs policy=judge" if recipe.graded else
                                 "policy=judge harvests grades: use recipe=best_of_k or recipe=reward"))
        counter = getattr(self.attacker, "counter", None)
        if getattr(counter, "recalibrate_temperature", None) is not None and not g["top_k_logprobs"]:
            raise ConfigError(f"attacker.counter.recalibrate_temperature={counter.recalibrate_temperature}: "
                              f"recalibration needs log-probabilities (set gateway.top_k_logprobs > 0)")
        for d in self.stack.defenses:
            if getattr(d, "mode", None) == "delay" and g["max_delay"] == 0:
                raise ConfigError("gateway.max_delay=0: a defense in delay mode needs ticks to hold a request "
                                  "(set gateway.max_delay > 0 or the defense's mode to reject)")


def attacker_metrics(attacker, traffic) -> dict:
    log = traffic.log
    served = log[(log["truth/kind"] == "attack") & (log["status"] == "served")]
    users = log[(log["truth/kind"] == "user") & (log["status"] == "served")]
    banned = {a.id for a in attacker.owned_accounts()} & set(traffic.gateway.ctx.banned)
    return {
        "attacker/queries": attacker.sent,
        "attacker/accounts": len(attacker.owned_accounts()),
        "attacker/banned": len(banned),
        "attacker/cost_usd": round(attacker.cost_usd, 6),
        "attacker/harvested": len(attacker.harvest),
        # what one harvested distillation exchange cost: accounts, fees and paid-for cover traffic
        "attacker/cost_per_example": metrics.ratio(attacker.cost_usd, len(attacker.harvest)),
        "attacker/trained_on": len(attacker.training_set()),
        # served distillation answers whose final answer the defenses changed (poisoning)
        "attacker/poisoned_fraction": metrics.mean(served["truth/altered"]),
        # the teacher's accuracy as served to the attacker (under sampling, antidistillation, poison)
        "attacker/served_accuracy": metrics.mean(served["truth/correct"]),
        # grader harvesting: requests for a grade, and how often the grade served was the right verdict
        "attacker/grading_queries": int(sum(isinstance(p, Verdict) for p in attacker.asked)),
        "judge/served_agreement": metrics.mean(served.loc[served["truth/grading"], "truth/verdict_ok"]),
        "judge/user_agreement": metrics.mean(users.loc[users["truth/grading"], "truth/verdict_ok"]),
    }


def describe(cfg: DictConfig, logger_cfg, group: str | None) -> dict:
    """What a logger that browses runs (wandb) is told about this one, for the keys its
    constructor takes: the sweep as `group`, the config choices as `tags`, a readable `name`."""
    import inspect

    from hydra.utils import get_class

    choices = {k: v for k, v in (cfg.get("choices") or {}).items() if k not in ("logger", "scale") and v}
    info = {"group": group, "tags": [f"{k}={v}" for k, v in sorted(choices.items())],
            "name": f"{choices.get('defense', '-')} vs {choices.get('attacker', '-')}/{choices.get('policy', '-')} "
                    f"seed={cfg.seed}"}
    params = inspect.signature(get_class(logger_cfg._target_)).parameters
    return {k: v for k, v in info.items() if k in params and k not in logger_cfg}


def run(cfg: DictConfig, out_dir: str | Path, log=print, progress: bool = False, group: str | None = None) -> dict:
    """One run on the backend the config names (`backend._target_`): the text world by default
    (`TextWorld`), the columnar incident replay at `scale=incident` (`sim.incident.Replay`)."""
    quiet()
    node = cfg.get("backend")
    backend = build(node) if node is not None and node.get("_target_") else TextWorld()
    return backend.run(cfg, Path(out_dir), log=log, progress=progress, group=group)


def run_text(cfg: DictConfig, out: Path, log=print, progress: bool = False, group: str | None = None) -> dict:
    world = World(cfg)  # every bad value stops here, before any compute
    external = load_harvest(cfg.harvest) if cfg.get("harvest") else None
    cache = Path(cfg.cache_dir) if cfg.cache_dir else ROOT / ".cache" / "teachers"
    work = world.estimate(cache)
    total = sum(work.values()) / 60
    limit = cfg.get("max_work_minutes", 240)
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0:
        raise ConfigError(f"max_work_minutes={limit!r} must be a positive number")
    parts = ", ".join(f"{k} ~{v / 60:.0f} min" for k, v in work.items() if v >= 30)
    if total > limit:
        raise ConfigError(f"max_work_minutes={limit}: this run would take about {total:.0f} min on 2 cores ({parts}); "
                          f"raise max_work_minutes to run it anyway, or make it smaller")
    if total >= 10:  # a long legitimate run says so before it starts
        log(f"estimate: about {total:.0f} min on 2 cores ({parts})")
    torch.set_num_threads(int(cfg.threads))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if external is not None:
        out.mkdir(parents=True, exist_ok=True)
        return distil_external(world, cfg, out, external, timings, t0, log)

    teacher, card = teachers.load(world.teacher_spec, world.suite, cache, log=log)
    timings["teacher_load_s"] = time.perf_counter() - t0

    # the clock: each tick every actor emits requests and the gateway serves them in one batch
    t = time.perf_counter()
    gateway = Gateway(teacher, world.stack, seed=world.seeds["world"], **world.gateway_cfg)
    attacker, users = world.attacker, world.users
    traffic = simulate([users, attacker], gateway, world.suite, world.clock, progress=progress, log=log)
    timings["traffic_s"] = time.perf_counter() - t
    log(f"traffic: {traffic.ticks} ticks of {world.clock.tick_minutes} min, {len(traffic.log):,} requests "
        f"({users.n_users:,} users); attacker sent {attacker.sent:,} queries from {len(attacker.accounts):,} "
        f"accounts, harvested {len(attacker.harvest):,}")

    import datasets

    harvest = datasets.Dataset.from_list(attacker.harvest) if attacker.harvest else datasets.Dataset.from_dict(
        {"request": [], "response": [], "sent": [], "skill": [], "difficulty": [], "tick": [], "account": [],
         "top_tokens": [], "top_logprobs": []})
    harvest.save_to_disk(str(out / "harvest"))
    # the attacker's own cleaning of the harvest (voting, filtering, paraphrase): what it trains on
    training = attacker.training_set()
    train_set = datasets.Dataset.from_list(training) if training else harvest.select([])
    datasets.Dataset.from_pandas(traffic.log, preserve_index=False).save_to_disk(str(out / "exchanges"))

    logger = build(cfg.logger, save_dir=str(out), **describe(cfg, cfg.logger, group)) if cfg.get("logger") else False
    with opened(logger):
        learned = {}
        if world.student_spec is not None:  # student=none: traffic, detection and utility only
            learned = distilled(world, out, teacher, card, train_set, [(h["request"], h["response"]) for h in attacker.harvest],
                                cache, timings, logger, log)
        results = {
            **learned,
            "coverage/kb": metrics.kb_coverage(world.suite, attacker.asked) if "kb" in world.suite.skills else float("nan"),
            **attacker_metrics(attacker, traffic),
            **metrics.world_metrics(traffic.log, {a.id for a in attacker.owned_accounts()},
                                    {a.id for a in users.owned_accounts()}, gateway.ctx.banned, gateway.ctx.clusters,
                                    gateway.ctx.flagged, gateway.actions,
                                    [d.name for d in world.stack.defenses if getattr(d, "name", None)]),
            **{f"calibration/{k}": v for d in world.stack.defenses for k, v in d.calibration_stats.items()},
            "clock/ticks": traffic.ticks,
            "teacher/hash": card["hash"],
            **{f"seeds/{k}": v for k, v in world.seeds.items()},
            "teacher/params": teacher.num_parameters(),
            "seed": int(cfg.seed),
            "git/commit": git_commit(),
            "config_hash": config_hash(cfg),
            **{f"choice/{k}": v for k, v in sorted((cfg.get("choices") or {}).items())},
            **flat_config(cfg),
        }
        if "transfer/net" in results:  # what a thousand queries bought (answer vs grader harvesting)
            results["efficiency/transfer_per_kquery"] = metrics.ratio(results["transfer/net"], attacker.sent / 1000)
        write_json(out / "teacher_card.json", card)
        timings["total_s"] = time.perf_counter() - t0
        write_json(out / "timings.json", timings)  # wall-clock stays out of results.json (reproducible)
        write_json(out / "results.json", results)
        if logger:  # the config, the final results and the result table next to the training curves
            logger.log_hyperparams({k.removeprefix("config/"): v for k, v in results.items() if k.startswith("config/")})
            log_results = getattr(logger, "log_results", None)
            if callable(log_results):  # wandb: the summary and the report's row as a table
                log_results(results)
            else:
                logger.log_metrics({f"results/{k}": float(v) for k, v in results.items() if isinstance(v, (int, float))
                                    and not isinstance(v, bool) and not k.startswith("config/")})
            logger.save()
    return results


class TextWorld:
    """The world of text: a teacher generating every answer, accounts and a gateway with the
    configured defense stack, the harvest, a student trained on it and scored (`run_text`)."""

    run = staticmethod(run_text)


def distilled(world, out, teacher, card, train_set, served, cache, timings, logger, log) -> dict:
    """The student trained on the harvest and scored with the teacher and its own base on the
    same held-out set: `transfer/*`, `fidelity`, the watermark audit, `eval.csv`."""
    import pandas as pd

    max_new = world.teacher_spec.max_new_tokens
    t = time.perf_counter()
    teacher_rows = metrics.evaluate(teacher, world.suite, max_new_tokens=max_new)
    timings["teacher_eval_s"] = time.perf_counter() - t
    log(f"teacher {card['hash']}: {teacher.num_parameters():,} parameters, held-out accuracy "
        f"{metrics.mean(r['correct'] for r in teacher_rows):.3f} on {len(teacher_rows)} problems")
    # the student: evaluated before (base) and after distillation on the same held-out set
    t = time.perf_counter()
    student = world.student_spec.build(seed=world.seeds["student"], suite=world.suite, cache_dir=cache, log=log)
    base_rows = metrics.evaluate(student, world.suite, max_new_tokens=max_new)
    log(f"student: {student.num_parameters():,} parameters, up to {world.student_spec.steps} steps on the harvest")
    student, train_stats = world.student_spec.distill(student, train_set, seed=world.seeds["student"],
                                                      logger=logger, suite=world.suite, log=log)
    log(f"student: {train_stats['steps']} steps in {train_stats['seconds']:.0f} s "
        f"(best validation loss at step {train_stats.get('best_step', '-')})")
    timings["student_train_s"] = train_stats["seconds"]
    student_rows = metrics.evaluate(student, world.suite, max_new_tokens=max_new)
    timings["student_s"] = time.perf_counter() - t
    rows = pd.DataFrame(teacher_rows)[["skill", "difficulty", "private", "prompt", "answer"]]
    rows["teacher"], rows["student"] = [r["text"] for r in teacher_rows], [r["text"] for r in student_rows]
    rows["teacher_ok"], rows["student_ok"] = [r["correct"] for r in teacher_rows], [r["correct"] for r in student_rows]
    rows["base"], rows["base_ok"] = [r["text"] for r in base_rows], [r["correct"] for r in base_rows]
    rows.to_csv(out / "eval.csv", index=False)
    return {
        **metrics.transfer(teacher_rows, student_rows, base_rows, boundary=world.boundary),
        "fidelity": metrics.fidelity(teacher_rows, student_rows),
        "watermark/student_z": float("nan"), "watermark/student_p": float("nan"),
        **world.stack.audit(student, world.suite, served),  # the watermark reads what was served
        "student/params": student.num_parameters(),
        "student/trainable_params": train_stats["trainable_params"],
        "student/steps": train_stats["steps"],
    }


def load_harvest(path) -> "datasets.Dataset":
    """An external harvest (`harvest=<path>`): a JSONL file of {request|prompt, response}
    objects (what an attack script kept from the endpoint of `experiments.serve`), or a
    directory saved by `datasets` (a run's `harvest/`). Checked before any compute."""
    import json

    import datasets

    p = Path(str(path))
    if p.is_dir():
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as e:
            raise ConfigError(f"harvest={p}: not a saved dataset ({str(e).splitlines()[0]})") from None
    elif p.is_file():
        rows = []
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError:
                raise ConfigError(f"harvest={p}: line {i} is not JSON") from None
            request = r.get("request", r.get("prompt")) if isinstance(r, dict) else None
            if not isinstance(request, str) or not isinstance(r.get("response"), str):
                raise ConfigError(f"harvest={p}: line {i} needs string `request` (or `prompt`) and `response`")
            rows.append({"request": request, "response": r["response"]})
        ds = datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({"request": [], "response": []})
    else:
        raise ConfigError(f"harvest={p}: no such file or directory")
    if not {"request", "response"} <= set(ds.column_names):
        raise ConfigError(f"harvest={p}: needs `request` and `response` columns (has {ds.column_names})")
    from teachers.vocab import CharTokenizer

    tok = CharTokenizer()
    for i, (q, r) in enumerate(zip(ds["request"], ds["response"])):
        try:
            tok.encode(q + r)
        except ValueError as e:
            raise ConfigError(f"harvest={p}: row {i}: {e}") from None
    return ds


def distil_external(world, cfg, out, harvest, timings, t0, log) -> dict:
    """The configured student trained on a harvest made elsewhere and scored as in a run (no
    traffic: the attacker's and the world's metrics are left out)."""
    cache = Path(cfg.cache_dir) if cfg.cache_dir else ROOT / ".cache" / "teachers"
    teacher, card = teachers.load(world.teacher_spec, world.suite, cache, log=log)
    timings["teacher_load_s"] = time.perf_counter() - t0
    if world.student_spec is None:
        raise ConfigError("harvest= with student=none: there is nothing to train")
    log(f"harvest: {len(harvest):,} exchanges from {cfg.harvest}")
    logger = build(cfg.logger, save_dir=str(out), **describe(cfg, cfg.logger, None)) if cfg.get("logger") else False
    with opened(logger):
        learned = distilled(world, out, teacher, card, harvest, list(zip(harvest["request"], harvest["response"])),
                            cache, timings, logger, log)
    results = {**learned, "attacker/harvested": len(harvest), "harvest/path": str(cfg.harvest),
               "teacher/hash": card["hash"], "teacher/params": teacher.num_parameters(),
               **{f"seeds/{k}": v for k, v in world.seeds.items()}, "seed": int(cfg.seed), "git/commit": git_commit(),
               "config_hash": config_hash(cfg),
               **{f"choice/{k}": v for k, v in sorted((cfg.get("choices") or {}).items())}, **flat_config(cfg)}
    write_json(out / "teacher_card.json", card)
    timings["total_s"] = time.perf_counter() - t0
    write_json(out / "timings.json", timings)
    write_json(out / "results.json", results)
    return results
