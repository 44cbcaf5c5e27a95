"""Behavioural fingerprinting: a classifier of accounts from their traffic, calibrated on a
separate labelled simulation, with its threshold set on benign traffic for a target
false-positive rate.

The 2026 reports name "classifiers and behavioural fingerprinting systems designed to
identify distillation attack patterns". Here:

- features: `defenses.features` over each account's requests in the last `window_ticks`;
- classifier: logistic regression (`model: logreg`) or a one-hidden-layer MLP (`model:
  mlp`) in torch, on standardised features, trained on a *calibration* simulation: the same
  legitimate personas and the `campaigns` listed in the config, with its own seed and an
  oracle teacher (no generation), never on the evaluation run's labels;
- threshold τ: the (1 - `target_fpr`) quantile of the highest score each benign calibration
  account reached over the scoring rounds, so about `target_fpr` of legitimate accounts are
  ever acted on in a run of the same length;
- action: `flag` (shaping and poisoning can act on it) or `ban`, on accounts with at least
  `min_requests` requests whose score exceeds τ, scored every `score_every` ticks;
- adaptive (`adaptive_every` K, config `defense=adaptive`): every K ticks the classifier is
  retrained on the calibration data plus the current features of the accounts already
  banned in this run (labelled as attackers by the ban, never by ground truth), and τ is
  set again on the calibration's benign accounts. A campaign that drifts from what the
  calibration saw is learnt from its own banned accounts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from defenses.base import Defense, Stack
from defenses.features import FEATURES, account_features


class Fingerprint(Defense):
    def __init__(self, suite, users, clock, campaigns: Sequence, target_fpr: float = 0.01,
                 action: str = "flag", window_ticks: int = 144, score_every: int = 36, min_requests: int = 8,
                 model: str = "logreg", epochs: int = 300, seed: int = 0, calibration_seed: int = 1000,
                 adaptive_every: int | None = None):
        if not 0 < target_fpr < 1:
            raise ValueError(f"defense.fingerprint.target_fpr={target_fpr!r} must be in (0, 1)")
        if action not in ("flag", "ban"):
            raise ValueError(f"defense.fingerprint.action={action!r} must be 'flag' or 'ban'")
        if model not in ("logreg", "mlp"):
            raise ValueError(f"defense.fingerprint.model={model!r} must be 'logreg' or 'mlp'")
        for k, v in (("window_ticks", window_ticks), ("score_every", score_every), ("min_requests", min_requests),
                     ("epochs", epochs)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"defense.fingerprint.{k}={v!r} must be a positive integer")
        if adaptive_every is not None and (not isinstance(adaptive_every, int) or adaptive_every < 1):
            raise ValueError(f"defense.fingerprint.adaptive_every={adaptive_every!r} must be a positive integer or null")
        if not campaigns:
            raise ValueError("defense.fingerprint.campaigns is empty: the calibration needs attack traffic")
        self.suite, self.users, self.clock, self.campaigns = suite, users, clock, list(campaigns)
        self.target_fpr, self.action, self.window_ticks = target_fpr, action, window_ticks
        self.score_every, self.min_requests, self.model_kind = score_every, min_requests, model
        self.epochs, self.seed, self.calibration_seed = epochs, seed, calibration_seed
        self.adaptive_every, self.last_retrained, self.retrains = adaptive_every, 0, 0
        self.net = None
        self.history: list[dict] = []
        self.acted: set[str] = set()
        self.last_scored = -1
        self.calibration: dict = {}

    # -- calibration ---------------------------------------------------------------------
    def _snapshots(self, log: pd.DataFrame, offsets: dict, ticks: int) -> pd.DataFrame:
        """Features of every account at every scoring round, as the detector would see them."""
        out = []
        for t in range(self.score_every - 1, ticks, self.score_every):
            rows = log[(log["tick"] <= t) & (log["tick"] > t - self.window_ticks)]
            f = account_features(rows, offsets, self.clock.tick_minutes, self.min_requests)
            f["round"] = t
            out.append(f)
        return pd.concat(out) if out else pd.DataFrame(columns=[*FEATURES, "round"])

    def calibrate(self) -> None:
        from sim.accounts import Network
        from sim.gateway import Gateway
        from sim.world import simulate
        from teachers.oracle import Oracle

        network, seed = Network(self.calibration_seed), self.calibration_seed
        actors = [self.users, *self.campaigns]
        for a in actors:
            a.bind(self.suite, self.clock, network, seed, users=self.users)
        oracle = Oracle(seed=seed)
        oracle.watch(*actors)
        gateway = Gateway(oracle, Stack([]), max_new_tokens=1, seed=seed)
        traffic = simulate(actors, gateway, self.suite, self.clock)
        offsets = {a.id: a.utc_offset for a in gateway.ctx.accounts.values()}
        snaps = self._snapshots(traffic.log, offsets, traffic.ticks)
        y = np.array([traffic.owner.get(a) != self.users.name for a in snaps.index], dtype=np.float32)
        x = snaps[list(FEATURES)].to_numpy(np.float32)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        self.cal_x, self.cal_y, self.cal_accounts = x, y, snaps.index
        self._fit((x - self.mu) / self.sd, y)
        self._set_threshold()
        scores = self._score(x)
        attack_max = pd.Series(scores[y == 1], index=snaps.index[y == 1]).groupby(level=0).max()
        self.calibration = {"accounts_benign": int(pd.Index(self.cal_accounts[y == 0]).nunique()), "accounts_attack": int(len(attack_max)),
                            "tau": self.tau, "recall_at_tau": float((attack_max > self.tau).mean())}

    def _set_threshold(self) -> None:
        """τ: the (1 - target_fpr) quantile of benign calibration accounts' highest score."""
        benign = self.cal_y == 0
        scores = self._score(self.cal_x[benign])
        best = pd.Series(scores, index=self.cal_accounts[benign]).groupby(level=0).max()
        self.tau = float(np.quantile(best, 1 - self.target_fpr))

    def retrain(self, banned_features: np.ndarray) -> None:
        """Refit on the calibration data plus the banned accounts' features (as attackers)."""
        x = np.concatenate([self.cal_x, banned_features]).astype(np.float32)
        y = np.concatenate([self.cal_y, np.ones(len(banned_features), np.float32)])
        self._fit((x - self.mu) / self.sd, y)
        self._set_threshold()
        self.retrains += 1

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        torch.manual_seed(self.seed)
        d = x.shape[1]
        self.net = (torch.nn.Linear(d, 1) if self.model_kind == "logreg"
                    else torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)))
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        pos = float(yt.mean())
        weight = torch.where(yt > 0, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))  # balance the classes
        opt = torch.optim.Adam(self.net.parameters(), lr=0.05, weight_decay=1e-4)
        for _ in range(self.epochs):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(xt).squeeze(-1), yt, weight=weight)
            loss.backward()
            opt.step()

    def _score(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = torch.from_numpy(((x - self.mu) / self.sd).astype(np.float32))
            return self.net(z).squeeze(-1).numpy()

    # -- detection -----------------------------------------------------------------------
    def observe(self, window, ctx) -> list:
        from sim.gateway import Action

        self.history += window
        if ctx.tick - self.last_scored < self.score_every:
            return []
        self.last_scored = ctx.tick
        if self.net is None:
            self.calibrate()
        rows = pd.DataFrame([r for r in self.history if r["tick"] > ctx.tick - self.window_ticks])
        self.history = rows.to_dict("records") if len(rows) else []
        if rows.empty:
            return []
        offsets = {a.id: a.utc_offset for a in ctx.accounts.values()}
        f = account_features(rows, offsets, ctx.tick_minutes, self.min_requests)
        if f.empty:
            return []
        if (self.adaptive_every and ctx.tick - self.last_retrained >= self.adaptive_every
                and f.index.isin(list(ctx.banned)).any()):
            self.last_retrained = ctx.tick
            self.retrain(f[f.index.isin(list(ctx.banned))][list(FEATURES)].to_numpy(np.float32))
        scores = self._score(f[list(FEATURES)].to_numpy(np.float32))
        hits = [a for a, s in zip(f.index, scores) if s > self.tau and a not in self.acted]
        self.acted.update(hits)
        return [Action(self.action, a, by="fingerprint") for a in hits]
