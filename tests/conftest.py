"""Tests compose the real configs (scale=tiny unless a test says otherwise)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import sim  # noqa: F401  (offline switches before transformers is imported)

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory) -> Path:
    """Tiny teachers are trained once per test session, in a private cache."""
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture(scope="session")
def make_cfg(teacher_cache):
    def make(*overrides: str, scale: str = "tiny"):
        with initialize_config_dir(str(CONFIGS), version_base="1.3"):
            cfg = compose("run", overrides=[f"scale={scale}", *overrides], return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.cache_dir = str(teacher_cache)
            cfg.logger = None  # no training curves in tests unless asked for
            cfg.threads = 1  # `make test` runs two pytest workers on two cores
            cfg.choices = {k: v for k, v in choices.items() if not k.startswith("hydra") and v is not None}
        return cfg

    return make


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory) -> Path:
    """A Hugging Face causal-LM checkpoint the test writes itself (no downloads): a tiny GPT-2
    and a byte-level BPE tokenizer trained here on the suite's text, both `save_pretrained`."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from sim.tasks import Suite
    from sim.tasks.arith import Arith
    from sim.tasks.kb import Kb

    suite = Suite({"arith": Arith(), "kb": Kb()}, eval_per_cell=1)
    rng = random.Random(0)
    texts = [p.request(True) + "\n" + p.response(True) for p in (suite.sample(rng) for _ in range(500))]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                       pad_token_id=tok.pad_token_id))
    path = tmp_path_factory.mktemp("hf_checkpoint")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
