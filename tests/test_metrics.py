import math

from sim import metrics
from sim.tasks import Problem


def rows(skill_correct, private=True, difficulty=1):
    return [{"skill": s, "difficulty": difficulty, "private": private, "correct": c, "text": f"#{int(c)}"}
            for s, c in skill_correct]


def test_net_transfer_is_the_share_of_the_private_gap_closed():
    t = rows([("a", True), ("a", True), ("b", True), ("b", True)])
    s = rows([("a", True), ("a", False), ("b", True), ("b", True)])
    base = rows([("a", False), ("a", False), ("b", True), ("b", False)])
    m = metrics.transfer(t, s, base)
    assert m["transfer/a"] == 0.5 and m["transfer/b"] == 1.0
    assert math.isclose(m["transfer/net"], (0.75 - 0.25) / (1.0 - 0.25))


def test_public_cells_measure_forgetting_not_transfer():
    t = rows([("a", True)] * 2) + rows([("a", True)] * 2, private=False)
    s = rows([("a", True)] * 2) + rows([("a", False)] * 2, private=False)
    base = rows([("a", False)] * 2) + rows([("a", True)] * 2, private=False)
    m = metrics.transfer(t, s, base)
    assert m["transfer/net"] == 1.0 and m["student/public_acc"] == 0.0 and m["base/public_acc"] == 1.0


def test_cells_past_the_teachers_boundary_are_reported_apart():
    # difficulty 5 of skill a: the teacher scores 0.25, below the boundary 0.5
    t = rows([("a", True)] * 4) + rows([("a", True)] + [("a", False)] * 3, difficulty=5)
    s = rows([("a", True)] * 2 + [("a", False)] * 2) + rows([("a", True)] * 4, difficulty=5)
    base = rows([("a", False)] * 4) + rows([("a", False)] * 4, difficulty=5)
    m = metrics.transfer(t, s, base)
    assert m["boundary/cells"] == 1 and m["transfer/net"] == 0.5  # the boundary cell's 4/4 does not count
    assert m["boundary/teacher_acc"] == 0.25 and m["boundary/student_acc"] == 1.0
    assert metrics.transfer(t, s, base, boundary=0.0)["boundary/cells"] == 0


def test_transfer_of_a_skill_the_teacher_cannot_beat_the_base_on_is_nan_not_infinite():
    t = rows([("a", False), ("b", True)])
    s = rows([("a", True), ("b", True)])
    m = metrics.transfer(t, s, rows([("a", False), ("b", True)]), boundary=0.0)
    assert math.isnan(m["transfer/a"]) and math.isnan(m["transfer/b"])


def test_identical_models_have_full_transfer_and_fidelity():
    t = rows([("a", True), ("a", False), ("b", True)])
    m = metrics.transfer(t, t, rows([("a", False)] * 2 + [("b", False)]), boundary=0.0)
    assert m["transfer/net"] == 1.0
    assert metrics.fidelity(t, t) == 1.0


def test_token_kinds_split_voice_steps_and_answer():
    text = "ok 4*7=8 then 8-4=4 #4"
    kinds = metrics.token_kinds(text)
    assert len(kinds) == len(text)
    assert "".join(c for c, k in zip(text, kinds) if k == "voice").split() == ["ok", "then"]
    assert "".join(c for c, k in zip(text, kinds) if k == "answer") == "#4"


def test_fidelity_compares_final_answers_only():
    a = [{"text": "x=1 #3"}, {"text": "#4"}]
    b = [{"text": "#3"}, {"text": "y #5"}]
    assert metrics.fidelity(a, b) == 0.5


class FakeSuite:
    def __init__(self, eval_set):
        self.eval_set = eval_set


def test_kb_coverage_counts_facts_asked_about():
    ev = [Problem("kb", 2, "kb a boss city", "x", "", ("a.boss=b", "b.city=x"), private=True),
          Problem("kb", 1, "kb c pet", "y", "", ("c.pet=y",), private=True),
          Problem("kb", 1, "kb d pet", "z", "", ("d.pet=z",))]  # public: not the attacker's to cover
    asked = [Problem("kb", 1, "kb b city", "x", "", ("b.city=x",)), Problem("arith", 1, "calc 1+1", "2", "")]
    assert metrics.kb_coverage(FakeSuite(ev), asked) == 1 / 3
    assert metrics.kb_coverage(FakeSuite(ev), []) == 0.0


def test_cluster_purity_reads_the_banned_clusters_attribution():
    from sim.metrics import cluster_purity

    acc = ["h1", "h2", "h3", "u1", "u2", "n1", "n2"]
    truth = ["attacker", "attacker", "attacker", "u1", "u2", "n1", "n2"]
    found = ["c1", "c1", "c1", "c1", "u2", "c2", "c2"]  # u2 unclustered; c1 took one person with the campaign
    assert cluster_purity(acc, truth, found, {"h1"}) == 0.75
    assert cluster_purity(acc, truth, found, {"h1", "n1"}) == (3 + 1) / 6
    assert cluster_purity(acc, truth, found, {"u2"}) != cluster_purity(acc, truth, found, {"u2"})  # NaN: no cluster
