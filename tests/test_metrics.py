import math

from sim import metrics
from sim.tasks import Problem


def rows(skill_correct):
    return [{"skill": s, "correct": c, "text": f"#{int(c)}"} for s, c in skill_correct]


def test_transfer_is_student_over_teacher_per_skill():
    t = rows([("a", True), ("a", True), ("b", True), ("b", False)])
    s = rows([("a", True), ("a", False), ("b", False), ("b", False)])
    base = rows([("a", False), ("a", False), ("b", False), ("b", False)])
    m = metrics.transfer(t, s, base)
    assert m["transfer/a"] == 0.5 and m["transfer/b"] == 0.0
    assert m["transfer/mean"] == 0.25
    assert math.isclose(m["transfer/net"], (0.25 - 0) / (0.75 - 0))


def test_transfer_of_a_skill_the_teacher_cannot_do_is_nan_not_infinite():
    t = rows([("a", False), ("b", True)])
    s = rows([("a", True), ("b", True)])
    m = metrics.transfer(t, s, s)
    assert math.isnan(m["transfer/a"]) and m["transfer/mean"] == 1.0


def test_identical_models_have_full_transfer_and_fidelity():
    t = rows([("a", True), ("a", False), ("b", True)])
    m = metrics.transfer(t, t, rows([("a", False)] * 2 + [("b", False)]))
    assert m["transfer/mean"] == 1.0 and m["transfer/net"] == 1.0
    assert metrics.fidelity(t, t) == 1.0


def test_fidelity_compares_final_answers_only():
    a = [{"text": "x=1 #3"}, {"text": "#4"}]
    b = [{"text": "#3"}, {"text": "y #5"}]
    assert metrics.fidelity(a, b) == 0.5


class FakeSuite:
    def __init__(self, eval_set):
        self.eval_set = eval_set


def test_kb_coverage_counts_facts_asked_about():
    ev = [Problem("kb", 2, "kb a boss city", "x", "", ("a.boss=b", "b.city=x")),
          Problem("kb", 1, "kb c pet", "y", "", ("c.pet=y",))]
    asked = [Problem("kb", 1, "kb b city", "x", "", ("b.city=x",)), Problem("arith", 1, "calc 1+1", "2", "")]
    assert metrics.kb_coverage(FakeSuite(ev), asked) == 1 / 3
    assert metrics.kb_coverage(FakeSuite(ev), []) == 0.0
