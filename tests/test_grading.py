"""Grader harvesting: the grading format and its rubric, the rejection-sampling filter, the GRPO
loss, the defenses on grades, and a judge campaign end to end at scale=tiny."""

import json
import random

import pytest
import torch

from sim import grading
from sim.runner import run
from sim.records import ConfigError
from sim.tasks import Problem
from students.rl import accepted, grpo_loss

P = Problem("arith", 3, "calc 4-5*3*2", "4", "4-5=9 9*3=7 7*2=4")


def test_the_rubric_gives_full_marks_to_a_right_answer_and_partial_credit_by_the_steps_shown():
    assert grading.rubric(P, "4-5=9 9*3=7 7*2=4 #4") == (5, "y y y")
    assert grading.rubric(P, "#4") == (5, "plain")  # the final answer decides the verdict
    assert grading.rubric(P, "4-5=9 9*3=7 7*2=5 #5") == (2, "y y n")  # 4 x 2 // 3
    assert grading.rubric(P, "4-5=9 9*3=7 7*2=4 #5") == (4, "y y y")  # every step right, the answer not
    assert grading.rubric(P, "4-5=8 9*3=7 7*2=4 #5") == (0, "n")  # checked in order: nothing after the first miss
    assert grading.rubric(P, "4-5=9 9*3") == (1, "y")  # cut off: what it showed, whole steps only
    assert grading.rubric(P, "#5") == (0, "plain")


def test_a_candidate_is_sent_without_its_voice_and_the_request_parses_back():
    said = "first 4-5=9 after 9*3=7 after 7*2=4 end #4"
    assert grading.canonical(said) == "4-5=9 9*3=7 7*2=4 #4"
    text = grading.request(P.prompt, said)
    assert text == "grade calc 4-5*3*2 ; 4-5=9 9*3=7 7*2=4 #4"
    assert grading.is_grading(text) and not grading.is_grading("why calc 4-5*3*2")
    assert grading.parse(text) == (P.prompt, "4-5=9 9*3=7 7*2=4 #4")
    v = grading.verdict(P, said)
    assert v.prompt == text and v.answer == "5" and v.right and v.question is P
    assert grading.score_of("y n #3") == 3 and grading.score_of("#9") is None and grading.score_of("ok") is None


def test_training_candidates_are_right_and_wrong_in_the_ways_a_students_are():
    rng = random.Random(0)
    scores = [grading.verdict(P, grading.candidate(P, rng)).answer for _ in range(500)]
    assert 0.3 < scores.count("5") / 500 < 0.5
    assert {"0", "1", "2", "4"} <= set(scores)  # partial credit is taught, not only ok/wrong


def test_the_rejection_filter_keeps_distinct_accepted_candidates():
    q = ["a", "a", "a", "b", "b", "c"]
    c = ["x", "x", "y", "x", "z", "w"]
    s = [5, 5, 5, 4, None, 5]
    assert accepted(q, c, s, threshold=5) == [0, 2, 5]  # the repeated (a, x) once; 4 and None refused
    assert accepted(q, c, s, threshold=4) == [0, 2, 3, 5]
    assert accepted(q, c, s, threshold=5, per_question=1) == [0, 5]


def test_the_grpo_loss_favours_the_better_samples_of_a_group_and_penalises_drift():
    torch.manual_seed(0)
    logp = torch.randn(4, 6, requires_grad=True)
    mask = torch.ones(4, 6)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])  # two groups of two
    loss, parts = grpo_loss(logp, logp.detach(), mask, rewards, group=2, beta=0.1)
    assert parts["kl"] == pytest.approx(0.0, abs=1e-7)  # no drift from the reference
    loss.backward()
    g = logp.grad.sum(1)
    assert g[0] < 0 < g[1]  # descending the loss raises the better sample's log-probability
    assert g[2] == pytest.approx(0.0, abs=1e-6) and g[3] == pytest.approx(0.0, abs=1e-6)  # equal rewards: no signal
    # the KL term is positive away from the reference, and grows with β
    ref = logp.detach() - 0.5
    k1 = grpo_loss(logp.detach(), ref, mask, rewards, 2, beta=0.1)[0]
    k2 = grpo_loss(logp.detach(), ref, mask, rewards, 2, beta=1.0)[0]
    assert k2 > k1
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_loss(logp, logp, mask, rewards, group=3, beta=0.1)


def _shape(defense, prompt, text, flagged=False):
    from types import SimpleNamespace

    from teachers.lm import Completion

    account = SimpleNamespace(id="a")
    ctx = SimpleNamespace(flagged={"a"} if flagged else set())
    return defense.shape(SimpleNamespace(prompt=prompt, account=account), Completion(text), ctx).text


def test_shaping_coarsens_and_noises_grades_and_poison_flips_them():
    from defenses.poison import Poison
    from defenses.shaping import Shaping

    g = grading.request(P.prompt, "4-5=9 9*3=7 7*2=5 #5")
    binary = Shaping(grade_round=5)
    assert _shape(binary, g, "y y n #2") == "wrong #0" and _shape(binary, g, "y y y #5") == "right #5"
    assert _shape(Shaping(grade_round=2), g, "y y n #3") == "wrong #2"
    assert _shape(binary, "why calc 1+1", "1+1=2 #2") == "1+1=2 #2"  # answers are not grades
    noisy = [_shape(Shaping(grade_noise=1.0, seed=s), g, "y y n #2") for s in range(200)]
    assert 0.3 < sum(t != "y y n #2" for t in noisy) / 200 < 0.9
    assert all(0 <= grading.score_of(t) <= 5 for t in noisy)
    assert noisy == [_shape(Shaping(grade_noise=1.0, seed=s), g, "y y n #2") for s in range(200)]  # seeded
    poison = Poison(target="flagged")
    assert _shape(poison, g, "y y y #5", flagged=True) == "wrong #0"
    assert _shape(poison, g, "y y n #2", flagged=True) == "right #5"
    assert _shape(poison, g, "y y n #2") == "y y n #2"
    with pytest.raises(ValueError, match="grade_round=6"):
        Shaping(grade_round=6)


def test_a_graded_recipe_without_a_judge_policy_is_refused_before_compute(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="needs policy=judge"):
        run(make_cfg("recipe=best_of_k"), tmp_path / "a")
    with pytest.raises(ConfigError, match="use recipe=best_of_k or recipe=reward"):
        run(make_cfg("policy=judge"), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


PERSONAS = ("student", "developer", "analyst", "power", "researcher")


@pytest.mark.parametrize("harvest", ["grades", "rewards"])
def test_a_judge_campaign_spends_its_budget_on_grading_requests(make_cfg, tmp_path, harvest):
    import datasets

    cfg = make_cfg(f"extraction={harvest}", "teacher=reference_judge", "attacker.policy.rounds=2",
                   *(f"users.personas.{p}.check_rate=0.5" for p in PERSONAS))
    r = run(cfg, tmp_path)
    assert r["attacker/queries"] == r["attacker/grading_queries"] == cfg.attacker.queries
    h = datasets.load_from_disk(str(tmp_path / "harvest"))
    assert all(grading.is_grading(q) for q in h["request"]) and {"question", "candidate", "score"} <= set(h.column_names)
    assert all(q.startswith("why ") for q in h["question"])
    log = datasets.load_from_disk(str(tmp_path / "exchanges")).to_pandas()
    users = log[(log["truth/kind"] == "user") & log["truth/grading"]]
    assert len(users) > 0 and users["prompt"].map(grading.is_grading).all()  # "is this right?" from people too
    assert "judge/served_agreement" in r and "efficiency/transfer_per_kquery" in r
    again = run(cfg, tmp_path / "again")
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads((tmp_path / "again" / "results.json").read_text())


def graded_harvest(n_questions=24, k=3, seed=0):
    """A judge's harvest written by hand: k candidates per question, graded by the rubric."""
    import datasets

    from sim.tasks.arith import Arith

    rng, skill, rows = random.Random(seed), Arith(), []
    for _ in range(n_questions):
        p = skill.sample(rng, 1)
        for _ in range(k):
            v = grading.verdict(p, grading.candidate(p, rng, right_rate=0.5))
            rows.append({"request": v.prompt, "response": grading.response(int(v.answer), v.rationale),
                         "question": p.request(True), "candidate": v.candidate, "score": int(v.answer)})
    return datasets.Dataset.from_list(rows)


def test_best_of_k_fine_tunes_on_the_accepted_candidates_only(make_cfg):
    from sim.runner import World

    world = World(make_cfg("extraction=grades", "student=scratch"))
    spec, harvest = world.student_spec, graded_harvest()
    chosen = spec.recipe.select(harvest)
    assert len(chosen) == len(set(zip(*[h for h in (harvest.filter(lambda r: r["score"] == 5)["question"],
                                                       harvest.filter(lambda r: r["score"] == 5)["candidate"])])))
    assert chosen.column_names == ["request", "response"] and all(r.startswith("why ") for r in chosen["request"])
    student, stats = spec.distill(spec.build(0), harvest, seed=0)
    assert stats["steps"] > 0 and stats["train_exchanges"] + stats.get("val_exchanges", 0) == len(chosen)


def test_the_reward_recipe_fits_a_reward_model_and_takes_grpo_steps(make_cfg):
    from sim.runner import World

    world = World(make_cfg("extraction=rewards", "student=scratch", "sizes.rm_steps=30", "sizes.rl_steps=4"))
    spec = world.student_spec
    student = spec.build(0)
    before = {k: v.clone() for k, v in student.model.state_dict().items()}
    student, stats = spec.distill(student, graded_harvest(), seed=0)
    assert stats["rm_steps"] == 30 and stats["steps"] == 4 and stats["rm_mse"] < 0.2
    assert any(not torch.equal(before[k], v) for k, v in student.model.state_dict().items())  # the policy moved


def test_the_reference_judge_grades_against_its_own_solution_and_answers_the_rest_as_the_teacher():
    from teachers.grader import Grader
    from teachers.lm import CharLM
    from teachers.vocab import build_gpt

    solution = "ok 4-5=9 then 9*3=7 so 7*2=4 done #4"  # the teacher's own, in its voice
    assert Grader.grade(P.prompt, "4-5=9 9*3=7 7*2=5 #5", solution).text == "y y n #2"
    assert Grader.grade(P.prompt, "#4", solution).text == "plain #5"
    torch.manual_seed(0)
    lm = CharLM(build_gpt(n_layer=1, n_embd=32, n_head=2, n_positions=96))
    judge = Grader(lm)
    asks = ["calc 1+2", grading.request(P.prompt, "4-5=9 #3"), "why kb x"]
    outs, plain = judge.generate(asks, max_new_tokens=24), lm.generate(asks, max_new_tokens=24)
    assert [outs[0].text, outs[2].text] == [plain[0].text, plain[2].text]  # one batch, the rest untouched
    solved = lm.generate(["why " + P.prompt], max_new_tokens=24)[0].text
    assert outs[1].text == Grader.grade(P.prompt, "4-5=9 #3", solved).text and judge.n_positions == 96


def test_a_judge_round_waits_for_the_grades_of_the_last_and_never_regrades_a_candidate(make_cfg):
    from sim.runner import World

    world = World(make_cfg("extraction=grades", "attacker.policy.rounds=3"))
    policy, rng = world.attacker.policy, random.Random(0)
    first = [policy.next(rng) for _ in range(policy.per_round)]
    assert not policy.ready()  # the round's grades are not back: the campaign sends nothing more
    for v, explain in first[:-1]:
        policy.feedback(v, explain, type("Ex", (), {"status": "refused", "response": ""})(), rng)
    assert not policy.ready()
    policy.feedback(*first[-1], type("Ex", (), {"status": "refused", "response": ""})(), rng)
    assert policy.ready() and policy.round == 1
    second = [policy.next(rng) for _ in range(policy.per_round)]
    assert policy.round == 2 and not {v.prompt for v, _ in first} & {v.prompt for v, _ in second}


def test_a_long_candidate_keeps_its_answer():
    from students.judge import cut

    assert cut("a=1 b=2 c=3 #123", 10) == "a=1 #123" and cut("a=1 #1", 96) == "a=1 #1"
    assert cut("abcdefghijkl", 5) == "abcde"


def test_a_hydra_account_that_finds_the_policy_waiting_stays_scheduled(make_cfg):
    from sim.gateway import Gateway
    from sim.runner import World

    world = World(make_cfg("extraction=grades", "attacker=hydra", "attacker.mix=0.0", "attacker.accounts=4"))
    hydra = world.attacker
    hydra.open_accounts(Gateway(None, world.stack, **world.gateway_cfg), 0)
    hydra.policy.ready = lambda: False  # every grade of the round is still out
    assert hydra.requests(0) == [] and sorted(aid for _, _, aid in hydra.schedule) == sorted(a.id for a in hydra.live)
