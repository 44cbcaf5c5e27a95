"""The traffic side of a run: the clock drives the actors, the gateway serves each tick in one
teacher batch, the defenses observe every K ticks, and the exchange log records it all.

Ground truth is kept here and only here: which actor sent each request and why (`truth/*`
log columns, the `owner` of each account). The gateway and the defenses never see it.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from sim.actors import Actor, Ask, served_well
from sim.gateway import PUBLIC_COLUMNS, Gateway
from sim.grading import TOP, Verdict, score_of
from sim.tasks import final_answer


TRUTH_COLUMNS = ("truth/actor", "truth/kind", "truth/skill", "truth/difficulty", "truth/explain", "truth/correct",
                 "truth/ok", "truth/clean_ok", "truth/altered", "truth/grading", "truth/verdict_ok")


def calibrate(stack, suite, clock, server: bool = False) -> None:
    """Simulate each calibration a defense of `stack` asks for (`Defense.calibration`) and hand
    it the traffic, before the run's own traffic starts. Apart from the run: the defense's own
    actors, their own network and seed, an oracle teacher (answers without generation), no
    defenses. A defense calibrated already is left alone. `server`: the traffic runs until
    stopped, not for the clock's ticks (the calibration still simulates the clock's days)."""
    from defenses.base import Stack
    from sim.accounts import Network
    from teachers.oracle import Oracle

    for d in stack.defenses:
        wanted = d.calibration(None if server else clock.n_ticks)
        if wanted is None:
            continue
        actors, seed = wanted
        network = Network(seed)
        for a in actors:
            a.bind(suite, clock, network, seed, users=actors[0])
        oracle = Oracle(seed=seed)
        oracle.watch(*actors)
        d.calibrate(simulate(actors, Gateway(oracle, Stack([]), max_new_tokens=1, seed=seed), suite, clock))


@dataclass
class Traffic:
    log: object  # pandas DataFrame: public columns, then `truth/*` columns
    gateway: Gateway
    owner: dict[str, str]  # account id -> the actor that opened it (ground truth)
    ticks: int  # ticks simulated (the run ends early once every actor is done)


def simulate(actors: list[Actor], gateway: Gateway, suite, clock, progress: bool = False, log=None) -> Traffic:
    """Run bound actors (see `Actor.bind`) through the clock against `gateway`. `progress`: a
    bar on a terminal; else, with `log`, a line every tenth of the ticks (a job's log file)."""
    import pandas as pd

    calibrate(gateway.stack, suite, clock)
    gateway.ctx.tick_minutes = clock.tick_minutes
    for a in actors:
        a.open_accounts(gateway, 0)
    truth: list[dict] = []
    clean_needed = bool(gateway.stack.logits_processors())
    bar = _progress(progress, clock.n_ticks)
    tick = n_served = n_blocked = 0
    with bar or nullcontext():
        task = bar.add_task("simulating", total=clock.n_ticks, stats="") if bar else None
        waiting: dict[int, tuple[int, Ask]] = {}  # request id -> (actor index, ask), until answered
        for tick in range(clock.n_ticks):
            exchanges = []
            new = [(k, ask) for k, actor in enumerate(actors) for ask in actor.requests(tick)]
            if new or gateway.queue:
                first = gateway.next_id
                for i, item in enumerate(new):
                    waiting[first + i] = item
                exchanges = gateway.serve(tick, [(ask.account, ask.text) for _, ask in new])
                done = [waiting.pop(e.request.id) for e in exchanges]
                asks = [ask for _, ask in done]
                truth += _truth(suite, gateway, asks, exchanges, clean_needed)
                for k, actor in enumerate(actors):
                    pairs = [(ask, e) for (j, ask), e in zip(done, exchanges) if j == k]
                    if pairs:
                        actor.receive(tick, pairs)
            if (tick + 1) % gateway.observe_every == 0:
                gateway.observe(tick)
            n_served += sum(e.status == "served" for e in exchanges)
            n_blocked += sum(e.status != "served" for e in exchanges)
            if bar:
                bar.update(task, advance=1, stats=f"served {n_served:,} · blocked {n_blocked:,} · "
                                                  f"banned {len(gateway.ctx.banned):,}")
            elif log is not None and (tick + 1) % -(-clock.n_ticks // 10) == 0:  # at most ten lines
                log(f"traffic: tick {tick + 1}/{clock.n_ticks}, served {n_served:,}, blocked {n_blocked:,}, "
                    f"banned {len(gateway.ctx.banned):,}")
            if all(a.done for a in actors) and not gateway.queue:
                break
    owner = {acc.id: a.name for a in actors for acc in a.owned_accounts()}
    log = pd.DataFrame(gateway.log, columns=list(PUBLIC_COLUMNS))
    for k in TRUTH_COLUMNS:
        log[k] = [r[k] for r in truth]
    log["truth/owner"] = [owner.get(a, "") for a in log["account"]]
    return Traffic(log, gateway, owner, tick + 1)


def _truth(suite, gateway: Gateway, asks: list[Ask], exchanges, clean_needed: bool) -> list[dict]:
    """Per exchange: who sent it and why, whether it served its sender well under the
    defenses, whether the undefended teacher would have (`clean_ok`, for utility), and
    whether shaping changed the final answer (`altered`, e.g. poisoning)."""
    rows, redo = [], []
    for k, (ask, ex) in enumerate(zip(asks, exchanges)):
        served, grading = ex.status == "served", isinstance(ask.problem, Verdict)
        raw = ex.raw.text if ex.raw is not None else ""
        rows.append({
            "truth/actor": ask.actor, "truth/kind": ask.kind, "truth/skill": ask.problem.skill,
            "truth/difficulty": ask.problem.difficulty, "truth/explain": ask.explain,
            "truth/correct": served and suite.grade(ask.problem, ex.response),
            "truth/ok": served and served_well(suite, ask, ex.response),
            "truth/clean_ok": served and served_well(suite, ask, raw),
            "truth/altered": served and final_answer(raw) != final_answer(ex.response),
            # a grading request: whether the served grade says ok exactly when the candidate is right
            "truth/grading": grading, "truth/verdict_ok": grading and served and _agrees(ex.response, ask.problem),
        })
        if ask.kind == "user" and (not served or clean_needed):
            redo.append(k)
    if redo:  # the counterfactual without defenses, for legitimate requests only
        outs = gateway.teacher.generate([asks[k].text for k in redo], max_new_tokens=gateway.max_new_tokens)
        for k, out in zip(redo, outs):
            rows[k]["truth/clean_ok"] = served_well(suite, asks[k], out.text)
    return rows


def _agrees(response: str, verdict: Verdict) -> bool:
    """Whether a served grade gives the right verdict (ok = the top score) on its candidate."""
    score = score_of(response)
    return score is not None and (score == TOP) == verdict.right


def _progress(enabled: bool, total: int):
    if not enabled or total < 2:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ticks"),
                    TimeElapsedColumn(), TextColumn("{task.fields[stats]}"), transient=False)
