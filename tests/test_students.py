"""Students: the pure losses, the recipes' data, the attacker base model, LoRA and fine-tuning."""

import datasets
import pytest
import torch

from sim.runner import World
from students.distill import Recipe, collate, sft_loss, topk_kd_loss
from teachers.vocab import CharTokenizer


def test_sft_loss_weights_positions_and_ignores_unlabelled_ones():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 7)
    labels = torch.tensor([[-100, 2, 3, 4]])
    ce = torch.nn.functional.cross_entropy(logits[0, :3], labels[0, 1:], reduction="none")
    ones = sft_loss(logits, labels, torch.ones(1, 4))
    assert torch.isclose(ones, ce.mean())
    # weight 0 on the first labelled token: the mean of the other two
    assert torch.isclose(sft_loss(logits, labels, torch.tensor([[1.0, 0.0, 1.0, 1.0]])), ce[1:].mean())
    # λ = 0.5 on it: a weighted mean
    w = torch.tensor([[9.0, 0.5, 1.0, 1.0]])  # the weight at an unlabelled position never counts
    assert torch.isclose(sft_loss(logits, labels, w), (0.5 * ce[0] + ce[1] + ce[2]) / 2.5)


def test_topk_kd_loss_is_zero_on_a_match_and_shift_invariant():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 10)
    ids = torch.tensor([[[1, 4, 7]] * 3] * 2)
    teacher = logits.gather(-1, ids).log_softmax(-1)
    mask = torch.ones(2, 3)
    for T in (0.5, 1.0, 2.0):
        assert topk_kd_loss(logits, ids, teacher, mask, T).abs() < 1e-6
    other = torch.randn(2, 3, 3)
    loss = topk_kd_loss(logits, ids, other, mask, 2.0)
    assert loss > 0
    assert torch.isclose(topk_kd_loss(logits, ids, other - 3.0, mask, 2.0), loss, atol=1e-6)  # renormalised
    # by hand at T = 2: T² KL(q || p) with both renormalised over the k tokens
    q = (other[0, 0] / 2).softmax(-1)
    p = (logits[0, 0, [1, 4, 7]] / 2).softmax(-1)
    one = 4 * (q * (q.log() - p.log())).sum()
    m = torch.zeros(2, 3)
    m[0, 0] = 1
    assert torch.isclose(topk_kd_loss(logits, ids, other, m, 2.0), one, atol=1e-6)
    assert topk_kd_loss(logits, ids, other, torch.zeros(2, 3), 2.0) == 0


def test_recipes_weight_the_rationale_or_cut_it():
    tok = CharTokenizer()
    request, response = "why calc 1+3", "1+3=4 #4"
    full = Recipe("visible", rationale_weight=0.25).example(tok, request, response)
    n_prompt = full["start"]
    assert full["weights"][:n_prompt] == [0.0] * n_prompt
    assert full["weights"][n_prompt:] == [0.25] * 6 + [1.0, 1.0, 1.0]  # rationale, then "#4" and EOS
    answer = Recipe("answer").example(tok, request, response)
    assert tok.decode(answer["ids"][answer["start"]:]) == "#4"
    tops = [[c, "x"] for c in response]
    lps = [[-0.1, -2.5] for _ in response]
    kd = Recipe("visible", kd_alpha=1.0).example(tok, request, response, tops, lps)
    assert len(kd["top_ids"]) == len(response) and kd["top_ids"][0][0] == tok.stoi["1"]
    batch = collate([kd, answer])
    # the logits one position before each response character carry its top-k
    assert batch["top_mask"][0].sum() == len(response) and batch["top_mask"][1].sum() == 0
    assert batch["top_ids"][0, n_prompt - 1, 0] == tok.stoi["1"]
    with pytest.raises(ValueError, match="target='rationales'"):
        Recipe("rationales")


def harvest_of(world, n=64):
    import random

    rng = random.Random(0)
    rows = []
    for _ in range(n):
        p = world.suite.sample(rng)
        rows.append({"request": p.request(True), "response": p.response(True)})
    return datasets.Dataset.from_list(rows)


def test_lora_trains_only_adapters_and_merges_back(make_cfg, teacher_cache):
    world = World(make_cfg("student=lora"))
    spec = world.student_spec
    student = spec.build(seed=0, suite=world.suite, cache_dir=teacher_cache)
    before = {n: p.clone() for n, p in student.model.named_parameters()}
    trained, stats = spec.distill(student, harvest_of(world), seed=0)
    assert 0 < stats["trainable_params"] < sum(p.numel() for p in before.values()) / 2
    after = dict(trained.model.named_parameters())
    assert set(after) == set(before)  # merged: a plain GPT-2 again, same parameter names
    changed = [n for n in after if not torch.equal(after[n], before[n])]
    assert changed and all(any(m in n for m in spec.target_modules) for n in changed)


def test_finetune_starts_from_the_cached_attacker_base(make_cfg, teacher_cache):
    world = World(make_cfg("student=finetune"))
    first, second = [], []
    a = world.student_spec.build(seed=0, suite=world.suite, cache_dir=teacher_cache, log=first.append)
    b = world.student_spec.build(seed=1, suite=world.suite, cache_dir=teacher_cache, log=second.append)
    # The first build may train the base (another test on this worker may have already), the
    # second must read it from the cache.
    assert sum(line.startswith("training base") for line in first) <= 1
    assert not any(line.startswith("training") for line in second)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    card = world.student_spec.base_card
    assert card["config"]["kind"] == "attacker_base" and "private" in card


def test_the_base_never_sees_private_cells_facts_or_held_out_prompts(make_cfg):
    import random

    world = World(make_cfg("student=finetune"))
    base = world.student_spec.base
    private_names = set(world.suite.skills["kb"].world)
    draw, rng = base.sampler(world.suite), random.Random(0)
    kb_seen, hard = 0, 0
    for _ in range(3000):
        request, response = draw(rng)
        prompt = request.removeprefix("why ")
        assert prompt not in world.suite.eval_prompts
        assert not {"zap", "odd", "cargo"} & set(prompt.split()) and "/" not in prompt, prompt
        if prompt.startswith("kb "):
            kb_seen += 1
            subjects = {f.split(".")[0] for f in response.split("#")[0].split()}
            assert prompt.split()[1] not in private_names and not subjects & private_names
            hard += len(prompt.split()) - 2 >= 4  # every difficulty is public
        elif request == "doc":
            assert not {f.split(".")[0] for f in response.split()} & private_names
    assert kb_seen > 100 and hard > 10


def test_lora_rejects_a_module_gpt2_does_not_have(make_cfg):
    with pytest.raises(ValueError, match="target_modules"):
        World(make_cfg("student=lora", "student.target_modules=[q_proj]"))


def test_a_local_hf_checkpoint_serves_as_teacher_base_and_student(make_cfg, hf_checkpoint, tmp_path):
    import json

    import sim
    from teachers.lm import CharLM

    lm = CharLM.load(hf_checkpoint)
    outs = lm.generate(["why calc 1+2", "kb zora city"], max_new_tokens=8, top_k_logprobs=2)
    assert len(outs) == 2 and all(len(o.top_logprobs) <= 8 for o in outs)
    cfg = make_cfg("teacher=hf", f"teacher.path={hf_checkpoint}", "student=finetune",
                   f"student.base.path={hf_checkpoint}", "attacker.queries=16", "users=none")
    res = sim.run(cfg, tmp_path, log=lambda *a: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["teacher/hash"] == res["teacher/hash"] and saved["attacker/harvested"] == 16
    assert saved["student/params"] == saved["teacher/params"] == lm.num_parameters()
    with pytest.raises(ValueError, match="teacher.path="):
        World(make_cfg("teacher=hf", f"teacher.path={tmp_path / 'nothing'}"))


def test_active_selection_asks_what_its_student_is_unsure_of(make_cfg):
    """An in-loop student that has only seen arith answers is surer of arith than of the other
    skills, so the next round asks less arith than the candidate pool holds."""
    import random

    from students.active import Active

    world = World(make_cfg())
    policy = Active(rounds=2, pool=4, steps=150, n_layer=1, n_embd=32, n_head=2, max_new_tokens=40)
    policy.bind(world.suite, budget=100)
    rng = random.Random(0)
    for _ in range(200):
        p = world.suite.sample(rng, "arith")
        policy.data.append((p.request(True), p.response(True)))
    policy.round = 1
    chosen = policy.select(rng)
    assert len(chosen) == policy.per_round == 50
    share = sum(p.skill == "arith" for p, _ in chosen) / len(chosen)
    assert share < 0.5 * (1 / len(world.suite.skills)), share


def test_validation_split_is_by_distinct_prompt():
    from students.distill import split_by_prompt

    requests = [f"q{i % 50}" for i in range(500)]  # every prompt asked ten times
    train, val = split_by_prompt(requests, 0.1, seed=0)
    assert sorted(train + val) == list(range(500)) and len(val) == 50
    assert not {requests[i] for i in train} & {requests[i] for i in val}
    assert split_by_prompt(requests, 0.1, seed=0) == (train, val) != split_by_prompt(requests, 0.1, seed=1)


def test_batches_are_length_bucketed_and_mix_in_public_replay():
    import random

    from students.distill import Batches

    rng = random.Random(0)
    examples = [{"ids": [0] * rng.randint(5, 100), "tag": "harvest"} for _ in range(480)]
    replay = lambda r: {"ids": [0] * r.randint(5, 100), "tag": "replay"}  # noqa: E731
    it = iter(Batches(examples, 12, seed=0, replay=replay, n_replay=4))
    batches = [next(it) for _ in range(40)]  # one pass over the harvest
    assert all(len(b) == 16 and sum(e["tag"] == "replay" for e in b) == 4 for b in batches)
    spread = [max(len(e["ids"]) for e in b[:12]) - min(len(e["ids"]) for e in b[:12]) for b in batches]
    assert sum(spread) / len(spread) < 15  # random batches of 12 from 5..100 spread ~75
    # the replayed exchanges are matched to their batch's length too (four drawn at random
    # from 5..100 would stretch a batch by ~40 on average)
    stretch = [max(len(e["ids"]) for e in b) - max(len(e["ids"]) for e in b[:12]) for b in batches]
    assert sum(stretch) / len(stretch) < 12
    seen = [id(e) for b in batches for e in b[:12]]
    assert len(set(seen)) == 480  # each harvested exchange once per pass


def test_steps_scale_with_the_harvest_up_to_the_cap(make_cfg):
    spec = World(make_cfg("student=finetune", scale="small")).student_spec
    assert spec.schedule(100) == spec.min_steps
    assert spec.schedule(1800) == 563  # 15 passes at 48 harvested exchanges a batch
    assert spec.schedule(100_000) == spec.steps


def test_early_stopping_keeps_the_best_weights(make_cfg, teacher_cache):
    world = World(make_cfg("student=finetune", "student.steps=60", "student.val_every=10", "student.patience=2",
                           "student.min_steps=60"))
    spec = world.student_spec
    student = spec.build(seed=0, suite=world.suite, cache_dir=teacher_cache)
    trained, stats = spec.distill(student, harvest_of(world, n=400), seed=0, suite=world.suite)
    assert stats["val_exchanges"] > 0 and stats["best_step"] % 10 == 0 and stats["best_step"] <= stats["steps"]
    assert stats["best_val_loss"] < 10 and 0 <= stats["padding_share"] < 0.5
