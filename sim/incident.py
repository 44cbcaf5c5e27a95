"""Incident-scale replay: a hydra campaign of ~24,000 accounts and ~16 million exchanges
against a legitimate population, with detection running (`scale=incident`).

The February 2026 reports describe ~24,000 fraudulent accounts behind shared proxies and
more than 16 million exchanges. At that size generating text is out of reach on a laptop,
so the replay keeps everything a detector and the metrics need and drops the rest:

- **No text, no generation.** An exchange is a row of integer columns: tick, account,
  skill, difficulty, and the request's surface (asks for the reasoning, chat template, typo,
  follow-up). The teacher is an oracle: a row is answered correctly with the shipped neural
  teacher's measured held-out accuracy for its skill x difficulty (explained or plain
  card), so no forward pass is run.
- **The same actors, drawn in numpy.** Legitimate users follow the personas of
  `configs/users` (skill mix, difficulty preference, rates, sessions per day, think time,
  regular hours, topic sweeps, NATs) on the clock's daily cycle; the campaign follows
  `configs/attacker/hydra.yaml` (accounts, pace, proxies, payment and device reuse, cover
  mixing, respawn) with the surface rates of its query policy. Each tick is drawn for all
  accounts at once; there is no per-request Python.
- **The same detectors.** Features are `defenses.features.aggregate` (the function the text
  runs use) over each account's window; the classifier is `defenses.fingerprint.Classifier`
  trained on a separate labelled calibration replay (its own seed and population), its
  threshold τ set on benign calibration accounts for `target_fpr`. Cluster detection is
  `defenses.graph.clusters`, the function the text runs' `cluster` defense calls (shared
  payment, device, IP, non-residential /24, behavioural similarity only for pairs that already
  share infrastructure, connected components), with the same bans: a cluster that reuses cards
  and clients (`ban_share`) and one with a banned member (`propagate`).
- **A memory bound.** Only the detector's sliding window stays in memory; the exchange log
  is streamed to `exchanges/part-NNNNN.parquet`, one file per `chunk_ticks`, each written
  atomically (`datasets.load_dataset("parquet", data_dir=...)` reads it back).

There is no student at this scale: results report what the campaign harvested (served
distillation rows, correct rationales), the detection metrics of `sim.metrics.world_metrics`
and the legitimate users' utility.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

from defenses.features import aggregate
from sim.accounts import REGIONS, TIERS, check_tier
from sim.records import rate
from sim.tasks import MAX_DIFFICULTY

KIND = {"user": 0, "attack": 1, "cover": 2}
FORMS = ("fingerprint", "cluster")  # the detectors' array forms the replay runs (`Defense.columnar`)
LINKS = ("payment", "device", "ip", "subnet")
OFFSETS = np.array(list(REGIONS.values()), float)


class Accounts:
    """The account table as columns (the defense view plus ground truth `kind`)."""

    COLUMNS = ("kind", "persona", "region", "created", "ip", "subnet", "residential", "payment", "device", "tier")

    def __init__(self):
        self.cols = {k: np.zeros(0, np.int64) for k in self.COLUMNS}
        self.banned = np.zeros(0, np.int64)  # ban tick, -1 = not banned

    def add(self, n: int, **values) -> np.ndarray:
        first = len(self)
        for k in self.COLUMNS:
            v = np.broadcast_to(np.asarray(values.get(k, 0), np.int64), (n,))
            self.cols[k] = np.concatenate([self.cols[k], v])
        self.banned = np.concatenate([self.banned, np.full(n, -1, np.int64)])
        return np.arange(first, first + n)

    def __len__(self) -> int:
        return len(self.banned)

    def __getitem__(self, k: str) -> np.ndarray:
        return self.cols[k]


class Population:
    """Legitimate users from the `users` config's personas, drawn per tick for all at once."""

    def __init__(self, personas: dict, nats, n_users: int, skills: list[str]):
        if not isinstance(n_users, int) or n_users < 1:
            raise ValueError(f"users.n_users={n_users!r} must be a positive integer at scale=incident")
        from sim.users import Persona

        self.names = list(personas)
        ps = [Persona(**dict(v)).check(f"users.personas.{k}") for k, v in personas.items()]
        self.n, self.skills = n_users, skills
        self.share = np.array([p.share for p in ps]) / sum(p.share for p in ps)
        mix = np.array([[p.skills.get(s, 0.0) if p.skills else 1.0 for s in skills] for p in ps])
        self.skill_cum = np.cumsum(mix / mix.sum(1, keepdims=True), 1)
        diff = np.array([p.difficulty for p in ps], float)
        self.diff_cum = np.cumsum(diff / diff.sum(1, keepdims=True), 1)
        for k in ("typo_rate", "template_rate", "explain_rate", "followup_rate", "switch_rate", "session_len",
                  "sessions_per_day", "gap_minutes"):
            setattr(self, k, np.array([getattr(p, k) for p in ps], float))
        self.regular = np.array([p.regular for p in ps])
        self.sweep = np.array([p.sweep for p in ps])
        self.tiers = [check_tier(p.tier, f"users.personas.{k}.tier") for k, p in zip(self.names, ps)]
        self.nats = [dict(n) for n in nats]
        for i, n in enumerate(self.nats):
            rate(n.get("share", 0), f"users.nats.{i}.share")
            if n.get("persona") is not None and n["persona"] not in self.names:
                raise ValueError(f"users.nats.{i}.persona={n['persona']!r} is not a persona ({', '.join(self.names)})")

    def open(self, accounts: Accounts, rng: np.random.Generator, ids) -> np.ndarray:
        """Open one account per user: own residential address unless behind a NAT."""
        persona = rng.choice(len(self.names), self.n, p=self.share)
        region = rng.integers(len(OFFSETS), size=self.n)
        ip = ids.fresh(self.n)
        subnet, residential = ip.copy(), np.ones(self.n, np.int64)
        for n in self.nats:  # one shared address for that share of the population (optionally one persona)
            pool = np.flatnonzero(persona == self.names.index(n["persona"])) if n.get("persona") else np.arange(self.n)
            take = rng.choice(pool, min(len(pool), round(n["share"] * self.n)), replace=False)
            ip[take] = subnet[take] = ids.fresh(1)[0]
            residential[take] = n.get("asn_kind", "residential") == "residential"
        tier = np.array([list(TIERS).index(self.tiers[p]) for p in persona])
        acc = accounts.add(self.n, kind=KIND["user"], persona=persona, region=region, ip=ip, subnet=subnet,
                           residential=residential, payment=ids.fresh(self.n), device=ids.fresh(self.n), tier=tier)
        self.acc, self.persona = acc, persona
        self.left = np.zeros(self.n, np.int64)  # requests left in the session
        self.length = np.ones(self.n, np.int64)
        self.pos = np.zeros(self.n, np.int64)
        self.skill = self._draw_skill(rng, persona)
        return acc

    def _draw_skill(self, rng, persona):
        return (rng.random(len(persona))[:, None] > self.skill_cum[persona]).sum(1).clip(0, len(self.skills) - 1)

    def surface(self, rng, persona) -> dict:
        """Difficulty and surface of fresh questions of these personas (cover traffic too)."""
        d = 1 + (rng.random(len(persona))[:, None] > self.diff_cum[persona]).sum(1).clip(0, MAX_DIFFICULTY - 1)
        return {"skill": self._draw_skill(rng, persona), "difficulty": d,
                "explain": rng.random(len(persona)) < self.explain_rate[persona],
                "templated": rng.random(len(persona)) < self.template_rate[persona],
                "typo": rng.random(len(persona)) < self.typo_rate[persona],
                "followup": rng.random(len(persona)) < self.followup_rate[persona]}

    def tick(self, t: int, rng: np.random.Generator, cycle: np.ndarray, shift: np.ndarray,
             tick_minutes: int) -> tuple[np.ndarray, dict]:
        p = self.persona
        tpd = len(cycle)
        idle = self.left == 0
        act = cycle[(t + shift) % tpd]
        spd = self.sessions_per_day[p]
        # power users start their sessions at the same ticks every day; others when the cycle says
        every = np.maximum(1, np.round(tpd / np.maximum(spd, 1e-9))).astype(np.int64)
        regular = self.regular[p] & ((t + self.acc * 7919) % every == 0)
        start = idle & np.where(self.regular[p], regular, rng.random(self.n) < spd / tpd * act)
        s = np.flatnonzero(start)
        self.length[s] = rng.geometric(1 / self.session_len[p[s]])
        self.left[s], self.pos[s] = self.length[s], 0
        self.skill[s] = self._draw_skill(rng, p[s])
        k = np.minimum(self.left, rng.poisson(tick_minutes / self.gap_minutes[p]))
        k[s] = np.maximum(k[s], 1)  # a session opens with a request
        k = np.minimum(k, self.left)
        rows = np.repeat(np.arange(self.n), k)
        within = np.arange(len(rows)) - np.repeat(np.cumsum(k) - k, k)
        pr = p[rows]
        cols = self.surface(rng, pr)
        follow = cols["followup"] & ((within > 0) | (self.pos[rows] > 0))
        switch = ~follow & (rng.random(len(rows)) < self.switch_rate[pr])
        cols["skill"] = np.where(switch, cols["skill"], self.skill[rows])
        cols["followup"] = follow
        sweep = self.sweep[pr]  # researchers walk one skill from easy to hard
        pos = self.pos[rows] + within
        cols["difficulty"] = np.where(sweep, 1 + np.minimum(pos * MAX_DIFFICULTY // np.maximum(self.length[rows], 1),
                                                            MAX_DIFFICULTY - 1), cols["difficulty"])
        cols["skill"] = np.where(sweep, self.skill[rows], cols["skill"])
        self.skill[rows] = cols["skill"]  # the last request of the tick sets the topic
        self.left -= k
        self.pos += k
        return self.acc[rows], cols


class Ids:
    """Fresh integer identifiers for addresses and fingerprints (distinct across kinds)."""

    def __init__(self):
        self.next = 1

    def fresh(self, n: int) -> np.ndarray:
        out = np.arange(self.next, self.next + n)
        self.next += n
        return out


class Campaign:
    """The hydra: `accounts` behind `proxies` shared subnets, paced, mixing cover traffic."""

    def __init__(self, accounts: int, queries: int, pace_per_day: float, proxies: int, ips_per_proxy: int,
                 payment_reuse: float, device_reuse: float, mix: float, respawn: bool, tier: str,
                 explain_rate: float, typo_rate: float, template_rate: float, followup_rate: float, where="attacker"):
        for k, v in (("accounts", accounts), ("proxies", proxies), ("ips_per_proxy", ips_per_proxy)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{where}.{k}={v!r} must be a positive integer")
        if not isinstance(queries, int) or queries < 0:
            raise ValueError(f"{where}.queries={queries!r} must be a non-negative integer")
        if not pace_per_day > 0:
            raise ValueError(f"{where}.pace_per_day={pace_per_day!r} must be > 0")
        self.n, self.queries, self.pace = accounts, queries, float(pace_per_day)
        self.proxies, self.ips_per_proxy, self.respawn = proxies, ips_per_proxy, bool(respawn)
        self.payment_reuse = rate(payment_reuse, f"{where}.payment_reuse")
        self.device_reuse = rate(device_reuse, f"{where}.device_reuse")
        self.mix = rate(mix, f"{where}.mix")
        self.tier = list(TIERS).index(check_tier(tier, f"{where}.tier"))
        self.rates = {k: rate(v, f"{where}.policy.{k}") for k, v in (
            ("explain", explain_rate), ("typo", typo_rate), ("templated", template_rate), ("followup", followup_rate))}
        self.sent = 0

    def open(self, accounts: Accounts, rng, ids, n: int, tick: int) -> np.ndarray:
        if not hasattr(self, "proxy_ips"):  # the campaign's infrastructure, bought once
            self.proxy_subnets = ids.fresh(self.proxies)
            self.proxy_ips = ids.fresh(self.proxies * self.ips_per_proxy)
            self.clients = ids.fresh(3)  # its automation clients
            self.payments = np.zeros(0, np.int64)
        ip_k = rng.integers(len(self.proxy_ips), size=n)
        pay = ids.fresh(n)
        reuse = rng.random(n) < self.payment_reuse
        if len(self.payments):
            pay[reuse] = rng.choice(self.payments, reuse.sum())
        self.payments = np.concatenate([self.payments, pay])
        dev = np.where(rng.random(n) < self.device_reuse, rng.choice(self.clients, n), ids.fresh(n))
        new = accounts.add(n, kind=KIND["attack"], region=rng.integers(len(OFFSETS), size=n), created=tick,
                           ip=self.proxy_ips[ip_k], subnet=self.proxy_subnets[ip_k // self.ips_per_proxy],
                           residential=0, payment=pay, device=dev, tier=self.tier)
        self.live = np.concatenate([getattr(self, "live", np.zeros(0, np.int64)), new])
        return new

    def tick(self, rng, live: np.ndarray, tpd: int, skills: int, users: Population) -> tuple[np.ndarray, dict, np.ndarray]:
        k = rng.poisson(self.pace / tpd, size=len(live))  # automated: no daily cycle
        rows = np.repeat(live, k)[: max(self.queries - self.sent, 0)]
        self.sent += len(rows)
        n = len(rows)
        cover = rng.random(n) < self.mix  # imitations of the legitimate personas
        m = int((~cover).sum())
        # the distillation requests map capabilities: every skill x difficulty cell, uniformly
        mine = {"skill": rng.integers(skills, size=m), "difficulty": rng.integers(1, MAX_DIFFICULTY + 1, size=m),
                **{k: rng.random(m) < r for k, r in self.rates.items()}}
        fake = users.surface(rng, rng.choice(len(users.names), n - m, p=users.share))
        cols = {}
        for key, v in mine.items():  # each row drawn once, by whichever side sent it
            cols[key] = np.empty(n, v.dtype)
            cols[key][~cover], cols[key][cover] = v, fake[key]
        return rows, cols, cover

    @property
    def done(self) -> bool:
        return self.sent >= self.queries


class Replay:
    """`scale=incident`: see the module docstring. Parameters beyond the actors' and the
    detectors' own configs: `chunk_ticks` (ticks per parquet file of the exchange log),
    `card` (a teacher card whose per-cell accuracies the oracle uses; null = the shipped
    teacher's) and `calibration` (the labelled replay the classifier is trained on). The
    campaign, the users and the defenses are the configured objects' array forms
    (`columnar()`)."""

    def __init__(self, chunk_ticks: int = 144, card: str | None = None, calibration: dict | None = None):
        if not isinstance(chunk_ticks, int) or chunk_ticks < 1:
            raise ValueError(f"backend.chunk_ticks={chunk_ticks!r} must be a positive integer")
        calibration = dict(calibration or {})
        for k in ("users", "days", "seed"):
            if not isinstance(calibration.get(k), int) or calibration[k] < (0 if k == "seed" else 1):
                raise ValueError(f"backend.calibration.{k}={calibration.get(k)!r} must be a positive integer")
        if not calibration.get("campaigns"):
            raise ValueError("backend.calibration.campaigns is empty: the classifier needs attack traffic")
        self.chunk_ticks, self.calibration = chunk_ticks, calibration
        from teachers import SHIPPED

        path = Path(card) if card else SHIPPED / "card.json"
        if not path.is_file():
            raise ValueError(f"backend.card={str(path)!r} is not a teacher card file")
        self.card = json.loads(path.read_text())

    def run(self, cfg, out: Path, log=print, progress: bool = False, group: str | None = None) -> dict:
        import torch

        torch.set_num_threads(int(cfg.threads))
        return run(cfg, out, log=log, replay=self)


def _accuracy(card: dict, skills: list[str], private_rate: float = 0.0) -> np.ndarray:
    """acc[explain, skill, difficulty - 1] from the card's held-out accuracies: the public
    cells', mixed with the private cells' at `private_rate` (the replay's rows do not say
    which they are; the task distribution asks a private variant that often)."""

    def grid(c):
        return np.array([[[c[mode][s][str(d)] for d in range(1, MAX_DIFFICULTY + 1)] for s in skills]
                         for mode in ("plain", "explain")])

    try:
        acc = grid(card)
        if private_rate and "private" in card:
            acc = (1 - private_rate) * acc + private_rate * grid(card["private"])
        return acc
    except KeyError as e:
        raise ValueError(f"backend.card has no accuracy for {e}: it must cover skills {skills}") from None


class _Sim:
    """One replay: accounts, actors, detectors and the log, over the clock."""

    def __init__(self, seed: int, skills, acc, clock, users: Population, campaigns: list[Campaign],
                 fingerprint: dict | None, cluster: dict | None, clf=None):
        self.rng = np.random.default_rng(seed)
        self.skills, self.acc, self.clock = skills, acc, clock
        self.users, self.campaigns, self.fp, self.cl, self.clf = users, campaigns, fingerprint, cluster, clf
        self.accounts, self.ids = Accounts(), Ids()
        users.open(self.accounts, self.rng, self.ids)
        for c in campaigns:
            c.open(self.accounts, self.rng, self.ids, c.n, 0)
        self.cluster = np.zeros(0, np.int64)  # the latest cluster of each account (-1: none)
        self.n_clusters = 0

    def run(self, sink=None, window_ticks: int = 144, score_every: int = 36, snapshots: bool = False, progress=None):
        tpd, tm = self.clock.ticks_per_day, self.clock.tick_minutes
        cycle = np.array(self.clock._cycle)
        self.window: deque = deque()
        self.snaps = []
        self.first_attack, self.first_ban = None, None
        totals = np.zeros((3, 2, 2), np.int64)  # [kind, served, correct]
        self.leaked = 0
        self.harvest = np.zeros((len(self.skills), MAX_DIFFICULTY), np.int64)  # correct rationales per cell
        nid = 0
        self.active = np.zeros(len(self.accounts), bool)  # accounts that sent anything
        shift = np.round(OFFSETS[self.accounts["region"][self.users.acc]] * 60 / tm).astype(np.int64)
        for t in range(self.clock.n_ticks):
            a = self.accounts
            if progress and t % tpd == 0 and t:
                progress(f"day {t // tpd}: {nid:,} exchanges, {int((a.banned >= 0).sum()):,} accounts banned")
            acc_u, cols_u = self.users.tick(t, self.rng, cycle, shift, tm)
            parts = [(acc_u, cols_u, np.full(len(acc_u), KIND["user"]))]
            for c in self.campaigns:
                if not c.done:
                    rows, cols, cover = c.tick(self.rng, c.live, tpd, len(self.skills), self.users)
                    parts.append((rows, cols, np.where(cover, KIND["cover"], KIND["attack"])))
            acc_t = np.concatenate([p[0] for p in parts])
            cols = {k: np.concatenate([p[1][k] for p in parts]) for k in parts[0][1]}
            kind = np.concatenate([p[2] for p in parts])
            n = len(acc_t)
            served = a.banned[acc_t] < 0  # a banned legitimate user keeps asking and is refused
            correct = self.rng.random(n) < self.acc[cols["explain"].astype(int), cols["skill"], cols["difficulty"] - 1]
            block = {"id": np.arange(nid, nid + n), "tick": np.full(n, t), "account": acc_t, "kind": kind,
                     "served": served, "correct": correct, **cols}
            nid += n
            if len(self.active) < len(a):  # replacement accounts were opened
                self.active = np.pad(self.active, (0, len(a) - len(self.active)))
            self.active[acc_t] = True
            np.add.at(totals, (kind, served.astype(int), correct.astype(int)), 1)
            attack = kind == KIND["attack"]
            if attack.any() and self.first_attack is None:
                self.first_attack = t
            if self.first_ban is None:
                self.leaked += int((attack & served).sum())
            good = attack & served & correct & cols["explain"]
            np.add.at(self.harvest, (cols["skill"][good], cols["difficulty"][good] - 1), 1)
            self.window.append(block)
            if sink is not None:
                sink.add(block)
            while self.window and self.window[0]["tick"][0] <= t - window_ticks:
                self.window.popleft()
            if (t + 1) % score_every == 0:
                self.observe(t, snapshots)
        self.totals, self.ticks = totals, t + 1
        return self

    def _window_features(self, min_requests: int):
        w = {k: np.concatenate([b[k] for b in self.window]) for k in self.window[0]}
        cols = {"why": w["explain"], "templated": w["templated"], "typo": w["typo"], "followup": w["followup"],
                "command": w["skill"], "cell": w["skill"] * MAX_DIFFICULTY + w["difficulty"] - 1,
                "length": w["difficulty"]}
        offsets = OFFSETS[self.accounts["region"]]
        return aggregate(w["account"], w["tick"], cols, offsets, self.clock.tick_minutes, min_requests), w

    def observe(self, t: int, snapshots: bool) -> None:
        if not self.window or not any(len(b["tick"]) for b in self.window):
            return
        min_req = self.fp["min_requests"] if self.fp else (self.cl or {}).get("min_requests", 1)
        (ids, x), w = self._window_features(min_req)
        if snapshots:  # the calibration replay: labelled snapshots, no actions
            self.snaps.append((ids, x, self.accounts["kind"][ids] == KIND["attack"]))
            return
        a = self.accounts
        new_bans = []
        if self.fp and len(ids):
            hits = ids[(self.clf.score(x.astype(np.float32)) > self.clf.tau) & (a.banned[ids] < 0)]
            if self.fp["action"] == "ban":
                new_bans.append(hits)
        if self.cl:
            new_bans.append(self._clusters(np.unique(w["account"]), ids, x, new_bans))
        hit = np.unique(np.concatenate(new_bans)) if new_bans else np.zeros(0, np.int64)
        hit = hit[a.banned[hit] < 0]
        a.banned[hit] = t
        if len(hit) and self.first_ban is None and (a["kind"][hit] == KIND["attack"]).any():
            self.first_ban = t
        for c in self.campaigns:  # the hydra notices its bans and replaces the accounts
            lost = np.isin(c.live, hit)
            c.live = c.live[~lost]
            if c.respawn and lost.any() and not c.done:
                c.open(a, self.rng, self.ids, int(lost.sum()), t + 1)

    def _clusters(self, seen: np.ndarray, ids: np.ndarray, x: np.ndarray, bans: list) -> np.ndarray:
        """Shared-infrastructure graph over the window's accounts -> connected components ->
        clusters of >= min_size; returns the members of clusters with a banned member."""
        from defenses.graph import clusters, shared_identity

        cl, a, m = self.cl, self.accounts, len(seen)
        codes = {key: a[key][seen] for key in LINKS}
        codes["subnet"] = np.where(a["residential"][seen] == 0, codes["subnet"], -1)
        pos = np.full(len(a), -1)
        pos[seen] = np.arange(m)
        label = clusters(codes, cl["weights"], cl["min_weight"], cl["min_size"], features=x, at=pos[ids],
                         similarity=cl["similarity"])
        member = label >= 0
        self.cluster = np.pad(self.cluster, (0, len(a) - len(self.cluster)), constant_values=-1)
        self.cluster[seen[member]] = self.n_clusters + label[member]
        self.n_clusters += int(label.max()) + 1 if m else 0
        hit = np.zeros(m, bool)
        if cl.get("ban_share") is not None:  # a cluster whose members reuse cards and clients bans itself
            hit |= member & (shared_identity(label, codes["payment"], codes["device"]) >= cl["ban_share"])
        if cl.get("propagate", True):
            flagged = a.banned[seen] >= 0
            if bans:
                flagged |= np.isin(seen, np.concatenate(bans))
            hit |= member & np.isin(label, np.unique(label[member & flagged]))
        return seen[hit]


class Sink:
    """The exchange log streamed to parquet, `chunk_ticks` ticks per file, atomically."""

    def __init__(self, out: Path, chunk_ticks: int):
        self.dir, self.chunk_ticks = out / "exchanges", chunk_ticks
        self.dir.mkdir(parents=True, exist_ok=True)
        self.blocks, self.part, self.rows = [], 0, 0

    def add(self, block: dict) -> None:
        self.blocks.append(block)
        if len(self.blocks) >= self.chunk_ticks:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.blocks:
            return
        table = pa.table({k: np.concatenate([b[k] for b in self.blocks]) for k in self.blocks[0]})
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".part-", suffix=".parquet")
        os.close(fd)
        pq.write_table(table, tmp)
        os.replace(tmp, self.dir / f"part-{self.part:05d}.parquet")
        self.part, self.rows, self.blocks = self.part + 1, self.rows + table.num_rows, []


def _campaign(node, where: str) -> Campaign:
    keys = ("accounts", "queries", "pace_per_day", "proxies", "ips_per_proxy", "payment_reuse", "device_reuse",
            "mix", "respawn", "tier", "explain_rate", "typo_rate", "template_rate", "followup_rate")
    missing = [k for k in keys if k not in node]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)} (scale=incident replays a hydra campaign)")
    return Campaign(**{k: node[k] for k in keys}, where=where)


def prepare(cfg, replay=None):
    """Every piece of the replay, built and validated from the config before any compute."""
    from types import SimpleNamespace

    from sim.records import build

    replay = replay or build(cfg.backend)
    clock = build(cfg.clock)
    skills = list(cfg.tasks.skills) if "skills" in cfg.tasks else list(replay.card["plain"])
    forms = {}
    for name, node in (cfg.defense or {}).items():  # built by the defense's own constructor, as in a text run
        d = build(node)
        columnar = getattr(d, "columnar", None)
        if columnar is None:
            raise ValueError(f"defense.{name} ({type(d).__module__}.{type(d).__name__}) has no columnar form: "
                             f"scale=incident cannot replay it; leave it out or use a text-scale run")
        kind, params = columnar()
        if kind not in FORMS:
            raise ValueError(f"defense.{name}: columnar form {kind!r} is not one the replay runs ({', '.join(FORMS)})")
        if kind in forms:
            raise ValueError(f"defense.{name}: a second {kind} detector; the replay runs one of each")
        forms[kind] = params
    fp, cl = forms.get("fingerprint"), forms.get("cluster")
    # the campaign and the population are the text world's own objects, built by their own
    # constructors; the replay draws them through their array forms, or refuses by name
    actors = {}
    for key, want in (("attacker", "hydra"), ("users", "population")):
        actor = build(cfg[key])
        columnar = getattr(actor, "columnar", None)
        if columnar is None:
            raise ValueError(f"{key} ({type(actor).__module__}.{type(actor).__name__}) has no columnar form: "
                             f"scale=incident replays a hydra campaign among a population of users")
        kind, params = columnar()
        if kind != want:
            raise ValueError(f"{key}: columnar form {kind!r} is not the replay's {want!r}")
        actors[key] = params
    people = actors["users"]

    def population(n):
        return Population(people["personas"], people["nats"], n, skills)

    cal = replay.calibration
    return SimpleNamespace(
        replay=replay, clock=clock, skills=skills, acc=_accuracy(replay.card, skills, float(cfg.tasks.get("private_rate", 0.0))), fp=fp, cl=cl,
        window=(fp or cl or {}).get("window_ticks", 144), score_every=(fp or cl or {}).get("score_every", 36),
        campaign=_campaign(actors["attacker"], "attacker"),
        users=population(people["n_users"]), population=population, cal=cal,
        cams=[_campaign(c, f"backend.calibration.campaigns.{i}") for i, c in enumerate(cal["campaigns"])])


def run(cfg, out: Path, log=print, replay: "Replay | None" = None) -> dict:
    """The replay behind `scale=incident` (`Replay.run`, called by `sim.run`)."""
    from defenses.fingerprint import Classifier
    from sim import metrics
    from sim.clock import Clock
    from sim.records import config_hash, flat_config, git_commit, write_json

    t0 = time.perf_counter()
    w = prepare(cfg, replay)  # every bad value stops here
    clock, skills, acc, fp, cl, cal = w.clock, w.skills, w.acc, w.fp, w.cl, w.cal
    replay, campaign, users, cams, population = w.replay, w.campaign, w.users, w.cams, w.population
    window, score_every = w.window, w.score_every
    stats = {}
    clf = None
    if fp:  # the classifier learns from a separate labelled replay, never from this one's labels
        t = time.perf_counter()
        cal_clock = Clock(clock.tick_minutes, cal["days"], clock.night_activity)
        sim_c = _Sim(cal["seed"], skills, acc, cal_clock, population(cal["users"]), cams, fp, None).run(
            window_ticks=fp["window_ticks"], score_every=fp["score_every"], snapshots=True)
        ids = np.concatenate([s[0] for s in sim_c.snaps])
        x = np.concatenate([s[1] for s in sim_c.snaps])
        y = np.concatenate([s[2] for s in sim_c.snaps]).astype(np.float32)
        clf = Classifier(fp["model"], fp["epochs"], fp["seed"], fp["target_fpr"])
        stats["calibration"] = {**clf.fit(x, y, ids), "target_fpr": clf.target_fpr}
        stats["calibration_s"] = time.perf_counter() - t
        log(f"calibration replay: {sim_c.totals.sum():,} exchanges, {len(ids):,} snapshots; "
            f"tau {clf.tau:.3f}, recall at tau {stats['calibration']['recall_at_tau']:.3f}")
    t = time.perf_counter()
    sink = Sink(out, replay.chunk_ticks)
    sim_ = _Sim(int(cfg.seed), skills, acc, clock, users, [campaign], fp, cl, clf)
    sim_.run(sink, window_ticks=window, score_every=score_every, progress=log)
    sink.flush()
    stats["replay_s"] = time.perf_counter() - t
    a = sim_.accounts
    kind, banned = a["kind"], a.banned >= 0
    attackers, legit = kind == KIND["attack"], kind == KIND["user"]
    tot = sim_.totals
    sent = np.pad(sim_.active, (0, len(a) - len(sim_.active)))  # accounts that sent anything
    # attribution over the accounts that sent anything: the campaign one group, every person alone
    active = np.flatnonzero(sim_.active)
    truth = np.where(attackers[active], -1, active)
    cluster = np.pad(sim_.cluster, (0, len(a) - len(sim_.cluster)), constant_values=-1)[active]
    found = np.where(cluster >= 0, cluster, -2 - active)  # an unclustered account stands alone
    first_ban = sim_.first_ban
    results = {
        "traffic/exchanges": int(tot.sum()),
        "traffic/served": int(tot[:, 1].sum()),
        "traffic/blocked": int(tot[:, 0].sum()),
        "traffic/cover": int(tot[KIND["cover"]].sum()),
        "utility/legit_requests": int(tot[KIND["user"]].sum()),
        # the oracle's answer does not depend on the defenses: clean_ok is `correct`
        "utility/relative": metrics.ratio(float(tot[KIND["user"], 1, 1]), float(tot[KIND["user"], :, 1].sum())),
        "utility/false_ban_rate": metrics.ratio(int((banned & legit).sum()), int(legit.sum())),
        "detection/false_positive_rate": metrics.ratio(int((banned & legit & sent).sum()), int((legit & sent).sum())),
        "detection/precision": metrics.ratio(int((banned & attackers).sum()), int(banned.sum())),
        "detection/recall": metrics.ratio(int((banned & attackers).sum()), int(attackers.sum())),
        "detection/ticks_to_first_ban": (first_ban - sim_.first_attack) if first_ban is not None else float("nan"),
        "detection/leaked_before_ban": sim_.leaked,
        "detection/cluster_ari": metrics.adjusted_rand_index(truth, found) if cl else float("nan"),
        "attacker/queries": int(campaign.sent),
        "attacker/accounts": int(attackers.sum()),
        "attacker/banned": int((banned & attackers).sum()),
        "attacker/cost_usd": round(float(attackers.sum() * list(TIERS.values())[campaign.tier][0]
                                         + campaign.sent * list(TIERS.values())[campaign.tier][1]), 6),
        "attacker/harvested": int(tot[KIND["attack"], 1].sum()),
        "attacker/cost_per_example": metrics.ratio(
            float(attackers.sum() * list(TIERS.values())[campaign.tier][0] + campaign.sent * list(TIERS.values())[campaign.tier][1]),
            float(tot[KIND["attack"], 1].sum())),
        "attacker/served_accuracy": metrics.ratio(float(tot[KIND["attack"], 1, 1]), float(tot[KIND["attack"], 1].sum())),
        "harvest/rationales": int(sim_.harvest.sum()),
        **{f"harvest/{s}": int(sim_.harvest[i].sum()) for i, s in enumerate(skills)},
        "users/accounts": int(legit.sum()),
        "clock/ticks": sim_.ticks,
        "seed": int(cfg.seed),
        "git/commit": git_commit(),
        "config_hash": config_hash(cfg),
        **{f"choice/{k}": v for k, v in sorted((cfg.get("choices") or {}).items())},
        **flat_config(cfg),
    }
    if "calibration" in stats:
        results |= {f"calibration/{k}": v for k, v in stats["calibration"].items()}
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB
    timings = {"total_s": time.perf_counter() - t0, "peak_rss_gb": peak_gb,
               **{k: v for k, v in stats.items() if k.endswith("_s")}}
    write_json(out / "timings.json", timings)  # wall-clock and memory stay out of results.json
    write_json(out / "results.json", results)
    log(f"replay: {results['traffic/exchanges']:,} exchanges over {sim_.ticks:,} ticks "
        f"({results['users/accounts']:,} users, {results['attacker/accounts']:,} campaign accounts) in "
        f"{stats['replay_s']:.0f} s, {sink.part} log files; peak memory {peak_gb:.2f} GB")
    return results
