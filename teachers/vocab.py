"""The character vocabulary and the GPT-2 model shape: everything here decides a teacher's
trained weights, so it is part of the teacher hash (`teachers.TRAINING_CODE`).

The vocabulary is small and hand-checked (every character the skill suite and the world's
actors can type), so nothing is downloaded and every id is inside the embedding table.
Special ids: PAD=0, BOS=1, EOS=2, SEP=3 (end of request, start of response).
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

PAD, BOS, EOS, SEP = 0, 1, 2, 3
CHARS = " abcdefghijklmnopqrstuvwxyz0123456789+-*=#.,()<>:;!?'/_"

class CharTokenizer:
    def __init__(self, chars: str = CHARS):
        if len(set(chars)) != len(chars):
            raise ValueError("tokenizer characters must be unique")
        self.chars = chars
        self.stoi = {c: i + 4 for i, c in enumerate(chars)}
        self.vocab_size = len(chars) + 4

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} in {text!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i - 4] for i in ids if i >= 4)

    def request_ids(self, request: str) -> list[int]:
        return [BOS, *self.encode(request), SEP]

    def pair_ids(self, request: str, response: str) -> tuple[list[int], int]:
        """Token ids of a whole exchange, and where the response starts (the loss mask)."""
        prompt = self.request_ids(request)
        return prompt + self.encode(response) + [EOS], len(prompt)


def build_gpt(n_layer: int, n_embd: int, n_head: int, n_positions: int, dropout: float = 0.0) -> GPT2LMHeadModel:
    tok = CharTokenizer()
    config = GPT2Config(
        vocab_size=tok.vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # the config kwarg is dropped in transformers 5.x
    return model


def collate(pairs: list[tuple[list[int], int]], weights: list[list[float]] | None = None) -> dict:
    """Right-pad exchanges; labels are -100 on the request and the padding."""
    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), PAD, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    attention = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (ids, start) in enumerate(pairs):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, start : len(ids)] = torch.tensor(ids[start:])
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
