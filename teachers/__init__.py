"""Teachers behind one protocol: `generate(prompts, *, max_new_tokens, logits_processors=())`.

`load` returns the teacher for a config: the checkpoint shipped in `teachers/shipped/` when
its hash matches, else one from the local cache, else it trains one and caches it. The hash
covers the teacher config, the task suite's config and the source of every file that decides
the trained weights, so a stale checkpoint is never used silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pandas as pd

from sim.tasks import Suite
from teachers.lm import CharLM, Completion

__all__ = ["CharLM", "Completion", "load", "teacher_hash", "make_card", "full_card", "format_card", "SHIPPED"]

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "teachers" / "shipped"
# the files whose source decides a trained teacher's weights
TRAINING_CODE = ("sim/tasks/*.py", "teachers/vocab.py", "teachers/train.py", "teachers/char_gpt.py")


def teacher_hash(spec, suite: Suite) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"teacher": spec.fingerprint(), "tasks": suite.fingerprint()}, sort_keys=True).encode())
    # a spec may name more files of its own (a judging stage's), beside the shared ones
    for pattern in (*TRAINING_CODE, *getattr(spec, "training_code", ())):
        for f in sorted(ROOT.glob(pattern)):
            h.update(f.relative_to(ROOT).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def make_card(lm: CharLM, suite: Suite, max_new_tokens: int) -> dict:
    """Accuracy per skill x difficulty on the held-out set, asked with and without reasoning:
    `explain` and `plain` on the public cells, `private.explain` and `private.plain` on the
    private ones; `entropy` the model's mean next-token entropy (bits) on its own explained
    answers, split into voice words, rationale steps and the final answer."""
    from sim.metrics import accuracy_grid, evaluate, response_entropy

    card = {"params": lm.num_parameters(), "private": {}}
    for mode, explain in (("explain", True), ("plain", False)):
        rows = evaluate(lm, suite, explain=explain, max_new_tokens=max_new_tokens)
        for private, into in ((False, card), (True, card["private"])):
            grid = accuracy_grid([r for r in rows if r["private"] == private])
            into[mode] = {s: {str(d): round(float(v), 4) for d, v in grid.loc[s].items()} for s in suite.skills}
        if explain:
            card["entropy"] = response_entropy(lm, [(r["request"], r["text"]) for r in rows])
    return card


def stage_steps(spec) -> int:
    """The optimiser steps `spec.train` runs itself: a judge's judging stage (its teacher is
    loaded, or trained once by its own `load`), else every step."""
    return getattr(spec, "judge_steps", spec.steps)


def full_card(spec, lm: CharLM, suite: Suite) -> dict:
    """`make_card`, what the spec adds to it (a judge's agreement) and the spec's config."""
    card = make_card(lm, suite, spec.max_new_tokens)
    extra = getattr(spec, "card", None)
    if callable(extra):
        card.update(extra(lm, suite))
    return {**card, "config": spec.fingerprint()}


def format_card(card: dict, what: str = "teacher") -> str:
    parts = [f"{what} card ({card['params']:,} parameters, hash {card.get('hash', '?')}): "
             "held-out accuracy per skill x difficulty"]
    for split, grids in (("public", card), ("private", card.get("private", {}))):
        for mode in ("explain", "plain"):
            if mode in grids:
                df = pd.DataFrame(grids[mode]).T
                df.index.name = f"{split} {mode}"
                parts.append(df.to_markdown(floatfmt=".2f"))
    for split, agree in card.get("judge", {}).items():
        parts.append(f"judge on {agree['n']} {split} candidates (one right, one wrong per held-out question): "
                     f"same score as the rubric {agree['score']:.3f}, same verdict {agree['verdict']:.3f}, "
                     f"a score at all {agree['valid']:.3f}")
    if "entropy" in card:
        parts.append("next-token entropy of its explained answers (bits per character): " + ", ".join(
            f"{k} {v:.3f}" for k, v in card["entropy"].items()))
    return "\n\n".join(parts)


def load(spec, suite: Suite, cache_dir: str | Path, progress: bool = False, log=print,
         what: str = "teacher", shipped: Path = SHIPPED) -> tuple[CharLM, dict]:
    """`trained` (below), served the way the spec says (`spec.serve`: a reference-guided judge
    wraps the model it trained)."""
    lm, card = trained(spec, suite, cache_dir, progress, log, what, shipped)
    serve = getattr(spec, "serve", None)
    return serve(lm, card, suite) if callable(serve) else (lm, card)


def trained(spec, suite: Suite, cache_dir: str | Path, progress: bool = False, log=print,
            what: str = "teacher", shipped: Path = SHIPPED) -> tuple[CharLM, dict]:
    """The model `spec.train(suite)` would give, trained at most once per hash (`what` names it
    in the log: the public base model is cached the same way, and ships in its own `shipped`
    directory). A spec that names its own weights (`teachers.hf.HFCheckpoint`) is read from
    them instead."""
    own = getattr(spec, "checkpoint", None)
    if callable(own):
        return own(suite, log=log)
    key = teacher_hash(spec, suite)
    shipped = getattr(spec, "shipped", shipped)  # a judge ships in its own directory
    for path in (shipped, Path(cache_dir) / key):
        card_file = path / "card.json"
        if not path.exists():
            continue
        try:
            card = json.loads(card_file.read_text())
            if card.get("hash") != key:
                continue
            return CharLM.load(path), card
        except Exception as e:  # a truncated, random or half-written checkpoint
            why = f"{path}: not a readable {what} checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
            if path == shipped:
                raise ValueError(f"{why}; restore it (git checkout {path}) or retrain it (make {what})") from None
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            os.replace(path, aside)
            log(f"warning: {why}; moved aside to {aside.name} and rebuilt")
    steps = stage_steps(spec)
    log(f"training {what} {key} ({steps} steps); cached in {Path(cache_dir) / key}")
    from teachers.progress import ProgressLines

    lines = [] if progress else [ProgressLines(what, max(1, steps // 10), log)]  # a bar, or lines
    lm, stats = spec.train(suite, progress=progress, callbacks=lines)
    card = full_card(spec, lm, suite)
    card.update(hash=key, train=stats)
    lm.save(Path(cache_dir) / key, extra={"card.json": card})
    log(format_card(card, what))
    return lm, card
