"""The char LM: tokenizer, batched generation (left padding), log-probs, processors, saving."""

import json
import math

import pytest
import torch

from teachers.lm import CharLM
from teachers.vocab import EOS, CharTokenizer, build_gpt, collate


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return CharLM(build_gpt(n_layer=1, n_embd=32, n_head=2, n_positions=64))


def test_tokenizer_round_trip_and_unknown_character():
    tok = CharTokenizer()
    assert tok.decode(tok.encode("why calc 3+4")) == "why calc 3+4"
    with pytest.raises(ValueError, match="'Ä'"):
        tok.encode("Äpfel")
    ids, start = tok.pair_ids("calc 1+1", "#2")
    assert ids[start:] == tok.encode("#2") + [EOS]


def test_collate_masks_request_and_padding():
    tok = CharTokenizer()
    b = collate([tok.pair_ids("ab", "c"), tok.pair_ids("abcd", "ef")])
    assert b["input_ids"].shape == b["labels"].shape == (2, 9)
    assert (b["labels"][0, :4] == -100).all() and (b["labels"][0, 6:] == -100).all()
    assert b["attention_mask"].sum(1).tolist() == [6, 9]


def test_batched_generation_equals_one_at_a_time(lm):
    prompts = ["calc 1+2", "why run abcdefg rev rot swp", "kb x"]
    batched = lm.generate(prompts, max_new_tokens=12)
    single = [lm.generate([p], max_new_tokens=12)[0] for p in prompts]
    assert [c.text for c in batched] == [c.text for c in single]


def test_a_long_request_does_not_cut_the_answers_beside_it(lm):
    # 64 positions: a 50-token request leaves 12 new tokens; the short ones keep their 40
    short = ["calc 1+2", "kb x"]
    long = "grade " + "a" * 42
    alone = lm.generate(short, max_new_tokens=40)
    mixed = lm.generate([short[0], long, short[1]], max_new_tokens=40)
    assert [mixed[0].text, mixed[2].text] == [c.text for c in alone]
    assert len(mixed[1].text) <= 64 - len(lm.tok.request_ids(long))


def test_top_k_logprobs_are_sorted_and_normalised(lm):
    (c,) = lm.generate(["calc 1+2"], max_new_tokens=5, top_k_logprobs=3)
    assert len(c.top_logprobs) == len(c.text)  # one entry per generated character
    for step in c.top_logprobs:
        vals = [v for _, v in step]
        assert len(vals) == 3 and vals == sorted(vals, reverse=True) and all(v <= 0 for v in vals)
        assert sum(math.exp(v) for v in vals) <= 1 + 1e-5


def test_logits_processor_is_applied(lm):
    z = lm.tok.stoi["z"]

    def only_z(input_ids, scores):  # the Hugging Face LogitsProcessor contract
        forced = torch.full_like(scores, -float("inf"))
        forced[:, z] = 0
        return forced

    (c,) = lm.generate(["calc 1+2"], max_new_tokens=6, logits_processors=[only_z])
    assert c.text == "zzzzzz"


def test_sampling_is_seeded(lm):
    a = lm.generate(["calc 1"] * 4, max_new_tokens=8, temperature=1.0, seed=3)
    b = lm.generate(["calc 1"] * 4, max_new_tokens=8, temperature=1.0, seed=3)
    assert [c.text for c in a] == [c.text for c in b]


def test_save_is_atomic_and_round_trips(lm, tmp_path):
    path = tmp_path / "ckpt"
    lm.save(path, extra={"card.json": {"hash": "abc"}})
    assert json.loads((path / "card.json").read_text())["hash"] == "abc"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    again = CharLM.load(path)
    assert again.generate(["calc 1+2"], max_new_tokens=8)[0].text == lm.generate(["calc 1+2"], max_new_tokens=8)[0].text
    lm.save(path, extra={"card.json": {"hash": "def"}})  # overwrite keeps one complete checkpoint
    assert json.loads((path / "card.json").read_text())["hash"] == "def"
