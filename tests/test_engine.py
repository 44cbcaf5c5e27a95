"""The serving engine decodes what Hugging Face `generate` decodes (greedy), with processors
and top-k log-probs, while finished rows leave the batch."""

import random

import pytest
import torch

from teachers.engine import Engine
from teachers.lm import CharLM
from teachers.vocab import build_gpt


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(1)
    model = build_gpt(n_layer=2, n_embd=32, n_head=2, n_positions=96)
    # a random model that ends some answers early: a large EOS bias makes lengths vary
    model.lm_head.weight.data[2] += 0.15 * torch.randn(32)
    return CharLM(model), CharLM(model, engine=False)


def prompts(n=60):
    rng = random.Random(0)
    words = ["calc 1+2", "why run abcd rev", "kb zora boss city", "tbl max ka3 lo7", "why tool for 2"]
    return [rng.choice(words) + " " * rng.randrange(4) + "x" * rng.randrange(12) for _ in range(n)]


def test_greedy_engine_equals_hf_generate_with_top_k(pair):
    fast, hf = pair
    ps = prompts()
    a = fast.generate(ps, max_new_tokens=40, top_k_logprobs=3, batch_size=16)
    b = hf.generate(ps, max_new_tokens=40, top_k_logprobs=3, batch_size=16)
    assert [c.text for c in a] == [c.text for c in b]
    assert len({len(c.text) for c in a}) > 3  # lengths vary: rows finished at different steps
    for x, y in zip(a, b):
        assert [t for t, _ in sum(x.top_logprobs, [])] == [t for t, _ in sum(y.top_logprobs, [])]
        assert max((abs(u - v) for (_, u), (_, v) in zip(sum(x.top_logprobs, []), sum(y.top_logprobs, []))),
                   default=0) < 1e-4
        assert x.finished == y.finished


def test_decode_step_hands_attention_to_the_chosen_kernel(pair, monkeypatch):
    """`decode_attention="sdpa"`: every decode step calls the chosen kernel with the padding as
    a may-attend mask, and decodes the same greedy tokens."""
    fast, hf = pair
    ps = prompts(24)
    engine = Engine(fast.model, decode_attention="sdpa")
    calls = []
    kernel = engine._attend_one
    monkeypatch.setattr(engine, "_attend_one",
                        lambda q, k, v, mask: calls.append(None if mask is None else mask.dtype) or kernel(q, k, v, mask))
    fast._engine = engine
    try:
        a = fast.generate(ps, max_new_tokens=30, batch_size=8)
    finally:
        fast._engine = None
    # 3 batches x 2 layers x at least 10 decode steps (a prompt's last block adds one call a batch)
    assert len(calls) > 3 * 2 * 10 and set(calls) <= {torch.bool, None}
    assert [c.text for c in a] == [c.text for c in hf.generate(ps, max_new_tokens=30, batch_size=8)]


def test_continuous_batching_decodes_what_hf_generate_does(pair):
    """Slots refilled as rows finish: the same tokens, log-probs and finish flags as `generate`
    (greedy), and the same samples from a seed on repeated calls."""
    fast, hf = pair
    ps = prompts()
    cont = CharLM(fast.model, slots=8)
    a = cont.generate(ps, max_new_tokens=40, top_k_logprobs=3)
    b = hf.generate(ps, max_new_tokens=40, top_k_logprobs=3, batch_size=16)
    assert [c.text for c in a] == [c.text for c in b]
    for x, y in zip(a, b):
        assert [t for t, _ in sum(x.top_logprobs, [])] == [t for t, _ in sum(y.top_logprobs, [])]
        assert max((abs(u - v) for (_, u), (_, v) in zip(sum(x.top_logprobs, []), sum(y.top_logprobs, []))),
                   default=0) < 1e-4
        assert x.finished == y.finished
    s1 = cont.generate(ps, max_new_tokens=40, temperature=1.0, seed=3)
    s2 = cont.generate(ps, max_new_tokens=40, temperature=1.0, seed=3)
    assert [c.text for c in s1] == [c.text for c in s2] != [c.text for c in a]
    with pytest.raises(ValueError, match="slots=-1"):
        Engine(fast.model, slots=-1)


def test_worker_threads_return_what_one_thread_returns(pair):
    """Batches decoded on two threads at once: the same greedy tokens and log-probs, and the same
    samples from a seed, as on one thread (each batch samples from its own stream)."""
    fast, _ = pair
    ps = prompts()
    one, two = CharLM(fast.model, workers=1), CharLM(fast.model, workers=2)
    for kw in (dict(top_k_logprobs=2), dict(temperature=1.0, seed=5)):
        a = one.generate(ps, max_new_tokens=40, batch_size=16, **kw)
        b = two.generate(ps, max_new_tokens=40, batch_size=16, **kw)
        assert [(c.text, c.finished) for c in a] == [(c.text, c.finished) for c in b]
        for x, y in zip(a, b):  # a worker's share of torch's threads sums in another order
            assert [t for t, _ in sum(x.top_logprobs or [], [])] == [t for t, _ in sum(y.top_logprobs or [], [])]
            assert all(abs(u - v) < 1e-4 for (_, u), (_, v) in zip(sum(x.top_logprobs or [], []),
                                                                   sum(y.top_logprobs or [], [])))
    two.slots = 8  # continuous batching, one call per worker
    assert [c.text for c in two.generate(ps, max_new_tokens=40)] == [c.text for c in one.generate(ps, max_new_tokens=40)]
    with pytest.raises(ValueError, match="workers=0"):
        CharLM(fast.model, workers=0)
    with pytest.raises(ValueError, match="compact_below=0"):
        Engine(fast.model, compact_below=0)


def test_engine_applies_processors_like_generate(pair):
    from defenses.watermark import GreenList, WatermarkProcessor

    fast, hf = pair
    green = GreenList(7, 0.25, 1, fast.tok.vocab_size)
    ps = prompts(24)
    a = fast.generate(ps, max_new_tokens=30, logits_processors=[WatermarkProcessor(green, 4.0)])
    b = hf.generate(ps, max_new_tokens=30, logits_processors=[WatermarkProcessor(green, 4.0)])
    assert [c.text for c in a] == [c.text for c in b]
    plain = fast.generate(ps, max_new_tokens=30)
    assert [c.text for c in a] != [c.text for c in plain]


def test_engine_rejects_other_architectures():
    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))
    with pytest.raises(ValueError, match="GPT-2"):
        Engine(tiny)
    assert not CharLM(tiny).use_engine  # such a checkpoint is served by `generate`


def _until_eos(row, eos):
    row = row.tolist()
    return row[: row.index(eos) + 1] if eos in row else row


@pytest.mark.parametrize("padded", [True, False])
def test_static_decode_matches_the_engine(pair, padded):
    """The loop that CUDA graphs capture (`StaticDecode`), run eagerly here: same tokens and
    top-k log-probs as the engine's own loop, with left padding (masked) and without (dense)."""
    from teachers.engine import StaticDecode

    fast, _ = pair
    engine = Engine(fast.model)
    enc = [fast.tok.request_ids(p) for p in prompts(24)]
    width = max(map(len, enc)) if padded else min(map(len, enc))
    enc = [e[:width] for e in enc]
    input_ids, attention = fast._left_pad(enc, width)
    assert bool(attention.all()) is not padded
    suppress = (fast.pad, fast.bos, fast.sep)
    a, (va, ia) = engine.generate(input_ids, attention, max_new_tokens=40, eos=fast.eos, suppress=suppress, top_k=3)
    dec = StaticDecode(engine, len(enc), width, 40, fast.eos, suppress, 3, not padded, device="cpu", capture=False)
    for _ in range(2):  # a second batch through the same buffers decodes the same
        b, (vb, ib) = dec.run(input_ids, attention.bool())
        lengths = set()
        for j in range(len(enc)):
            ra, rb = _until_eos(a[j], fast.eos), _until_eos(b[j], fast.eos)
            assert ra == rb
            lengths.add(len(ra))
            assert torch.equal(ia[j, : len(ra)], ib[j, : len(ra)])
            assert torch.allclose(va[j, : len(ra)], vb[j, : len(ra)], atol=1e-5)
        assert len(lengths) > 2
    with pytest.raises(ValueError, match="CUDA"):
        StaticDecode(engine, 2, 4, 4, fast.eos, suppress, 0, True, device="cpu", capture=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton decode kernel runs on CUDA")
def test_triton_decode_attention_matches_matmuls():
    """One new token over strided cache views, with and without a key mask (rows whose first
    blocks are all masked included): the kernel against the engine's matmul attention."""
    from teachers.decode_attention import decode_attention
    from teachers.engine import matmul_attention

    torch.manual_seed(0)
    B, H, N, D, n = 64, 4, 160, 32, 137
    cache = torch.randn(2, B, H, N, D, device="cuda")
    q = torch.randn(B, 1, 3 * H * D, device="cuda")[..., : H * D].view(B, 1, H, D).transpose(1, 2)
    k, v = cache[0, :, :, :n], cache[1, :, :, :n]
    keep = torch.rand(B, N, device="cuda") > 0.3
    keep[:8, :100] = False
    keep[:, n - 1] = True
    for mask in (None, keep[:, None, None, :n]):
        ref = matmul_attention(q, k, v, None if mask is None else mask.clone())
        out = decode_attention(q, k, v, None if mask is None else mask[:, 0, 0])
        assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()
