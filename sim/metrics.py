"""Metrics of a run (DESIGN.md names, `area/metric`): pure functions over graded rows.

- `transfer/<skill>` = student accuracy / teacher accuracy on the held-out set;
  `transfer/mean` their mean; `transfer/net` = (student - base) / (teacher - base), base = the
  student before distillation.
- `fidelity` = agreement of the student's and the teacher's final answers.
"""

from __future__ import annotations

from sim.tasks import Suite, final_answer


def evaluate(lm, suite: Suite, *, explain: bool = True, max_new_tokens: int = 96, problems=None) -> list[dict]:
    """Greedy answers of `lm` to every held-out problem (or to `problems`), graded; one row each."""
    problems = suite.eval_set if problems is None else problems
    outs = lm.generate([p.request(explain) for p in problems], max_new_tokens=max_new_tokens)
    return [
        {"skill": p.skill, "difficulty": p.difficulty, "prompt": p.prompt, "answer": p.answer,
         "text": o.text, "correct": bool(suite.grade(p, o.text))}
        for p, o in zip(problems, outs)
    ]


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


def transfer(teacher_rows: list[dict], student_rows: list[dict], base_rows: list[dict]) -> dict[str, float]:
    t, s, b = (accuracy_by_skill(r) for r in (teacher_rows, student_rows, base_rows))
    out = {f"transfer/{k}": ratio(s[k], t[k]) for k in t}
    out["transfer/mean"] = mean(v for v in out.values() if v == v)
    t_all, s_all, b_all = (mean(r["correct"] for r in rows) for rows in (teacher_rows, student_rows, base_rows))
    out["transfer/net"] = ratio(s_all - b_all, t_all - b_all)
    out["teacher/acc"], out["student/acc"], out["base/acc"] = t_all, s_all, b_all
    for k in t:
        out[f"teacher/acc_{k}"], out[f"student/acc_{k}"] = t[k], s[k]
    return out


def fidelity(teacher_rows: list[dict], student_rows: list[dict]) -> float:
    """Fraction of held-out problems where student and teacher give the same final answer."""
    same = [final_answer(a["text"]) == final_answer(b["text"]) for a, b in zip(teacher_rows, student_rows)]
    return mean(same)


def kb_coverage(suite: Suite, queried) -> float:
    """Fraction of the facts the held-out kb problems depend on that some queried problem also
    depends on (asked directly, or as a hop of a multi-hop question): what the attacker asked."""
    needed = {f for p in suite.eval_set for f in p.facts}
    asked = {f for p in queried for f in p.facts}
    return mean(f in asked for f in needed) if needed else float("nan")


def world_metrics(log, attacker_ids: set[str], legit_ids: set[str], bans: dict[str, int],
                  clusters: dict[str, str] | None = None, flags: dict[str, int] | None = None) -> dict[str, float]:
    """`utility/*`, `detection/*` and traffic counts from the exchange log (a DataFrame with
    the public columns and the `truth/*` columns) and the gateway's bans (account -> tick).

    - `utility/relative`: legitimate requests served well under the defenses / served well by
      the undefended teacher (blocked, throttled, poisoned, wrong and a hidden requested
      rationale all count as not served).
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
    return {
        "utility/relative": ratio(float(legit["truth/ok"].sum()), float(legit["truth/clean_ok"].sum())),
        "utility/false_ban_rate": ratio(len(banned & legit_ids), len(legit_ids)),
        "utility/legit_requests": len(legit),
        "detection/precision": ratio(len(detected & attacker_ids), len(detected)),
        "detection/recall": ratio(len(detected & attacker_ids), len(attacker_ids)),
        "detection/ticks_to_first_ban": first_ban - first_query if attack_bans else float("nan"),
        "detection/leaked_before_ban": int((served_attack["tick"] < first_ban).sum()),
        "detection/cluster_ari": adjusted_rand_index(truth, found),
        "traffic/exchanges": len(log),
        "traffic/served": int((log["status"] == "served").sum()),
        "traffic/blocked": int((log["status"] != "served").sum()),
        "traffic/cover": int((log["truth/kind"] == "cover").sum()),
    }


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
