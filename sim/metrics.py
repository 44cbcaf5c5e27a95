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
