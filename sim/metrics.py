"""Metrics of a run (`area/metric`, see docs/metrics.md): pure functions over graded rows.

- Capability is split in two: *public* cells (every attacker's open base model has them) and
  *private* cells (the teacher's own, what distillation can steal). A private cell where the
  explained teacher scores below `boundary` is past its capability boundary: reported apart
  (`boundary/*`) and left out of transfer.
- `transfer/net` (the headline) = (student - base) / (teacher - base) on the private cells
  inside the boundary, pooled: the share of the teacher's private advantage the student
  closed, base = the student before distillation. `transfer/<skill>` the same per skill.
- `student/public_acc` (and the teacher's and the base's) on the public cells: what
  fine-tuning made the student forget.
- `fidelity` = agreement of the student's and the teacher's final answers.
"""

from __future__ import annotations

import re
from collections import Counter

from sim.tasks import Suite, final_answer


def evaluate(lm, suite: Suite, *, explain: bool = True, max_new_tokens: int = 96, problems=None,
             logits_processors=()) -> list[dict]:
    """Greedy answers of `lm` to every held-out problem (or to `problems`), graded; one row each
    (`logits_processors`: as the gateway would apply them, e.g. a watermark)."""
    problems = suite.eval_set if problems is None else problems
    outs = lm.generate([p.request(explain) for p in problems], max_new_tokens=max_new_tokens,
                       logits_processors=logits_processors)
    return [
        {"skill": p.skill, "difficulty": p.difficulty, "private": p.private, "prompt": p.prompt,
         "request": p.request(explain), "answer": p.answer, "text": o.text, "correct": bool(suite.grade(p, o.text))}
        for p, o in zip(problems, outs)
    ]


def token_kinds(response: str) -> list[str]:
    """Per character of a response, what it belongs to: `answer` (the answer mark and after),
    `step` (a rationale token with `=`) or `voice` (any other word; a space goes with the word
    it precedes)."""
    cut = response.rfind("#")
    head = response[:cut] if cut >= 0 else ""
    kinds: list[str] = []
    tokens = head.split(" ")
    for j, t in enumerate(tokens):
        kind = "step" if "=" in t else "voice"
        kinds += [kind] * (len(t) + (1 if j else 0))  # the space before a word is the word's
    kinds = kinds[: len(head)]
    return kinds + ["answer"] * (len(response) - len(head))


def response_entropy(lm, pairs: list[tuple[str, str]], batch_size: int = 128) -> dict[str, float]:
    """Mean next-token entropy (bits) of `lm` over the characters of `pairs` (request, response),
    by kind of character (`token_kinds`): how much freedom the model has in its voice, its
    steps and its answers (an output watermark can only mark where there is entropy)."""
    import math

    import torch

    from teachers.vocab import collate

    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    pairs = [(q, r) for q, r in pairs if r]
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        encoded = [lm.tok.pair_ids(q, r) for q, r in chunk]
        encoded = [(ids[: lm.n_positions], start) for ids, start in encoded]
        batch = collate(encoded)
        with torch.no_grad():
            logits = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logp = logits.float().log_softmax(-1)
        ent = -(logp.exp() * logp).sum(-1) / math.log(2)  # [B, T]: entropy of the token after t
        for b, ((ids, start), (_, response)) in enumerate(zip(encoded, chunk)):
            for j, kind in enumerate(token_kinds(response)):
                t = start - 1 + j  # the position whose output predicts response character j
                if t + 1 >= len(ids):
                    break
                sums[kind] = sums.get(kind, 0.0) + float(ent[b, t])
                counts[kind] = counts.get(kind, 0) + 1
    return {k: round(sums[k] / counts[k], 4) for k in ("voice", "step", "answer") if counts.get(k)}


def accuracy_grid(rows: list[dict]):
    """Accuracy per skill (rows) x difficulty (columns), as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame(rows).groupby(["skill", "difficulty"])["correct"].mean().unstack()


def accuracy_by_skill(rows: list[dict]) -> dict[str, float]:
    by: dict[str, list[bool]] = {}
    for r in rows:
        by.setdefault(r["skill"], []).append(r["correct"])
    return {s: sum(v) / len(v) for s, v in by.items()}


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def ratio(num: float, den: float) -> float:
    """num/den, NaN when the denominator is zero (a skill the teacher cannot do transfers nothing)."""
    return num / den if den > 0 else float("nan")


def boundary_cells(teacher_rows: list[dict], boundary: float) -> set[tuple[str, int]]:
    """The private cells (skill, difficulty) where the teacher scores below `boundary`."""
    by: dict[tuple[str, int], list[bool]] = {}
    for r in teacher_rows:
        if r.get("private", True):
            by.setdefault((r["skill"], r["difficulty"]), []).append(r["correct"])
    return {c for c, v in by.items() if mean(v) < boundary}


def transfer(teacher_rows: list[dict], student_rows: list[dict], base_rows: list[dict],
             boundary: float = 0.5) -> dict[str, float]:
    """`transfer/net` and `transfer/<skill>` on the private cells inside the teacher's
    capability boundary; accuracies of the three models on every part of the held-out set."""
    if not 0 <= boundary <= 1:
        raise ValueError(f"boundary={boundary!r} must be in [0, 1]")
    edge = boundary_cells(teacher_rows, boundary)

    def part(rows, which):
        return [r for r in rows if which(r)]

    def inside(r):
        return r.get("private", True) and (r["skill"], r["difficulty"]) not in edge

    def outside(r):
        return r.get("private", True) and (r["skill"], r["difficulty"]) in edge

    def public(r):
        return not r.get("private", True)

    out: dict[str, float] = {}
    trio = (teacher_rows, student_rows, base_rows)
    t, s, b = (mean(r["correct"] for r in part(rows, inside)) for rows in trio)
    out["transfer/net"] = ratio(s - b, t - b)
    out["teacher/private_acc"], out["student/private_acc"], out["base/private_acc"] = t, s, b
    by = [accuracy_by_skill(part(rows, inside)) for rows in trio]
    nan = float("nan")
    # every skill gets its keys, NaN when all its private cells are past the boundary
    for k in sorted({r["skill"] for r in teacher_rows}):
        t_k, s_k, b_k = (d.get(k, nan) for d in by)
        out[f"transfer/{k}"] = ratio(s_k - b_k, t_k - b_k) if t_k == t_k else nan
        out[f"teacher/private_acc_{k}"], out[f"student/private_acc_{k}"] = t_k, s_k
    for name, rows in zip(("teacher", "student", "base"), trio):
        out[f"{name}/public_acc"] = mean(r["correct"] for r in part(rows, public))
        out[f"{name}/acc"] = mean(r["correct"] for r in rows)
    out["boundary/cells"] = len(edge)
    out["boundary/teacher_acc"], out["boundary/student_acc"] = (
        mean(r["correct"] for r in part(rows, outside)) for rows in trio[:2])
    return out


def fidelity(teacher_rows: list[dict], student_rows: list[dict]) -> float:
    """Fraction of held-out problems where student and teacher give the same final answer."""
    same = [final_answer(a["text"]) == final_answer(b["text"]) for a, b in zip(teacher_rows, student_rows)]
    return mean(same)


def kb_coverage(suite: Suite, queried) -> float:
    """Fraction of the private facts the held-out kb problems depend on that some queried problem
    also depends on (asked directly, or as a hop of a multi-hop question): what the attacker asked."""
    needed = {f for p in suite.eval_set if p.private for f in p.facts}
    asked = {f for p in queried for f in p.facts}
    return mean(f in asked for f in needed) if needed else float("nan")


def world_metrics(log, attacker_ids: set[str], legit_ids: set[str], bans: dict[str, int],
                  clusters: dict[str, str] | None = None, flags: dict[str, int] | None = None,
                  actions=(), detectors=()) -> dict[str, float]:
    """`utility/*`, `detection/*` and traffic counts from the exchange log (a DataFrame with
    the public columns and the `truth/*` columns) and the gateway's bans (account -> tick).

    - `utility/relative`: legitimate requests served well under the defenses / served well by
      the undefended teacher (blocked, throttled, poisoned, wrong and a hidden requested
      rationale all count as not served).
    - `utility/lost/<cause>`: of the legitimate requests the undefended teacher would have
      served well, the share lost to one cause: the refusal's reason (`identity_verification_pending`,
      `no_such_account`, `banned`, `rate_limit_...`), `altered` (served with another final
      answer: poisoning, perturbation, a logits processor) or `shaped` (a right answer, not
      served well: a hidden rationale). `utility/lost/total` sums them; a cause a run never
      met lost it nothing (the report reads its absence as 0). 1 - `utility/relative` is
      `total` less the requests the defended service happened to serve better than the clean one.
    - `utility/false_ban_rate`: legitimate accounts banned / legitimate accounts.
    - `detection/precision`, `detection/recall`: of the accounts a detector acted on (banned,
      or flagged for shaping and poisoning: `flags`), the attacker's; of the attacker's
      accounts, those acted on. Whether a detector bans or flags is policy; what it found is
      the same.
    - `detection/ticks_to_first_ban`: ticks from the campaign's first query to its first ban.
    - `detection/leaked_before_ban`: distillation exchanges served before that ban (all of
      them when it never came).
    - `detection/cluster_ari`: adjusted Rand index of the detected clusters against the truth
      (the campaign's accounts one group, every legitimate account its own).
    - `detection/false_positive_rate`: legitimate accounts acted on (banned or flagged) / the
      legitimate accounts that sent anything; `detection/<detector>/false_positive_rate` the
      same for each detector's own bans and flags (`actions`: the gateway's (tick, Action)
      list; every name in `detectors` is reported, 0 when it acted on no one), to read
      against the rate it was calibrated for (`calibration/target_fpr`).
    """
    legit = log[log["truth/kind"] == "user"]
    attack = log[log["truth/kind"] == "attack"]
    banned = set(bans)
    detected = banned | set(flags or {})
    hit = banned & attacker_ids
    attack_bans = [bans[a] for a in hit]
    first_query = float(attack["tick"].min()) if len(attack) else float("nan")
    first_ban = min(attack_bans) if attack_bans else float("inf")
    served_attack = attack[attack["status"] == "served"]
    # attribution: true groups are campaigns (all the attacker's accounts) and single people;
    # predicted groups are the detected clusters (an unclustered account stands alone)
    active = [a for a in log["account"].unique() if a in attacker_ids or a in legit_ids]
    truth = ["attacker" if a in attacker_ids else a for a in active]
    found = [(clusters or {}).get(a, a) for a in active]
    legit_active = legit_ids & set(legit["account"])
    by: dict[str, set] = {name: set() for name in detectors}
    for _, a in actions:
        if a.kind in ("ban", "flag"):
            by.setdefault(a.by or "unnamed", set()).add(a.account)
    per_detector = {f"detection/{name}/false_positive_rate": ratio(len(acted & legit_active), len(legit_active))
                    for name, acted in sorted(by.items())}
    return {
        "utility/relative": ratio(float(legit["truth/ok"].sum()), float(legit["truth/clean_ok"].sum())),
        **utility_lost(legit),
        "utility/false_ban_rate": ratio(len(banned & legit_ids), len(legit_ids)),
        "utility/legit_requests": len(legit),
        "detection/precision": ratio(len(detected & attacker_ids), len(detected)),
        "detection/recall": ratio(len(detected & attacker_ids), len(attacker_ids)),
        "detection/ticks_to_first_ban": first_ban - first_query if attack_bans else float("nan"),
        "detection/leaked_before_ban": int((served_attack["tick"] < first_ban).sum()),
        "detection/cluster_ari": adjusted_rand_index(truth, found),
        "detection/cluster_purity": cluster_purity(active, truth, found, banned),
        "detection/false_positive_rate": ratio(len(detected & legit_active), len(legit_active)),
        **per_detector,
        "traffic/exchanges": len(log),
        "traffic/served": int((log["status"] == "served").sum()),
        "traffic/blocked": int((log["status"] != "served").sum()),
        "traffic/cover": int((log["truth/kind"] == "cover").sum()),
    }


def utility_lost(legit) -> dict[str, float]:
    """`utility/lost/*` of `world_metrics`, from the legitimate rows of the log."""
    well = legit["truth/clean_ok"].astype(bool)
    lost = legit[well & ~legit["truth/ok"].astype(bool)]

    def refused(reason: str) -> str:  # which layer stopped it, as its refusal says
        slug = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_")
        return f"refused_{slug}" if slug in ("total", "altered", "shaped") else slug

    # a served request the clean teacher got right: a wrong answer now was changed (poisoning, or a
    # logits processor, whose effect `truth/altered` cannot see), a right one lost its reasoning
    cause = [refused(reason) if status != "served" else "shaped" if correct else "altered"
             for status, reason, correct in zip(lost["status"], lost["reason"], lost["truth/correct"])]
    total = int(well.sum())
    return {"utility/lost/total": ratio(len(lost), total),
            **{f"utility/lost/{c}": ratio(n, total) for c, n in sorted(Counter(cause).items())}}


def cluster_purity(accounts, truth, found, banned: set) -> float:
    """Attribution of the bans: over the detected clusters with a banned member, the share of
    their accounts that belong to the cluster's largest true group (one campaign, or one
    person); NaN when no banned account is in a cluster. 1.0: every banned cluster is one
    campaign's accounts and nobody else's."""
    import pandas as pd

    df = pd.DataFrame({"account": list(accounts), "truth": list(truth), "found": list(found)})
    df = df[df["found"] != df["account"]]  # in a detected cluster (an unclustered account is its own label)
    df = df[df["found"].isin(set(df.loc[df["account"].isin(banned), "found"]))]
    if df.empty:
        return float("nan")
    return float(df.groupby("found")["truth"].agg(lambda t: t.value_counts().iloc[0]).sum() / len(df))


def adjusted_rand_index(truth, predicted) -> float:
    """Hubert and Arabie's (1985) adjusted Rand index of two labelings of the same items."""
    import numpy as np
    import pandas as pd

    if len(truth) < 2:
        return float("nan")
    # the contingency table's non-zero cells only: incident scale has ~10^5 singleton groups
    both = pd.DataFrame({"t": list(truth), "p": list(predicted)})

    def pairs(x):
        return float((x * (x - 1) / 2).sum())

    n = len(both)
    index = pairs(both.value_counts().to_numpy(np.float64))
    a, b = pairs(both["t"].value_counts().to_numpy(np.float64)), pairs(both["p"].value_counts().to_numpy(np.float64))
    expected = a * b / (n * (n - 1) / 2)
    top = (a + b) / 2
    return float((index - expected) / (top - expected)) if top != expected else 1.0
