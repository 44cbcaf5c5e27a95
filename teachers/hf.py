"""Any local Hugging Face causal-LM checkpoint as teacher, attacker base or student.

A checkpoint directory written by `save_pretrained` (model and tokenizer) is read with the
Auto classes, offline (`local_files_only`). Exchanges keep the project's format: the request,
then a separator (the tokenizer's `sep_token`, else a newline), then the response and EOS.
The built-in char teacher's directories load the same way (`CharLM.load`); a checkpoint's own
tokenizer is adapted by `teachers.lm.HFTokenizer`.

Limits: per-character features assume one character per token: top-k log-probs from a
sub-word tokenizer do not line up with the response characters, so KD on them is skipped
(`students.distill.Recipe.example`), and the char-vocabulary logits processors (watermark,
antidistillation) expect the char teacher.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def checkpoint_dir(path: str | None, where: str) -> Path:
    if path is None or not (Path(path) / "config.json").exists():
        raise ValueError(f"{where}={path!r} is not a checkpoint directory (no config.json)")
    return Path(path)


def weights_digest(path: Path) -> str:
    """A hash of a checkpoint's files: a changed checkpoint is a different teacher."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.iterdir() if p.is_file()):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class HFCheckpoint:
    """The teacher read from a local checkpoint directory (`teacher=hf teacher.path=DIR`).

    Shape and training keys that a scale sets for the built-in teacher (`n_layer`, `steps`, ...)
    are accepted and ignored: a checkpoint has its own shape and is not trained here."""

    def __init__(self, path: str | None = None, max_new_tokens: int = 96, **ignored):
        self.path = checkpoint_dir(path, "teacher.path")
        if max_new_tokens < 1:
            raise ValueError(f"teacher.max_new_tokens={max_new_tokens} must be >= 1")
        self.max_new_tokens = max_new_tokens
        self.steps = 0

    def fingerprint(self) -> dict:
        return {"kind": "hf", "path": str(self.path.resolve()), "weights": weights_digest(self.path),
                "max_new_tokens": self.max_new_tokens}

    def checkpoint(self, suite, log=print):
        """The model and its card (measured now: a checkpoint from elsewhere has none of ours)."""
        from teachers import make_card, teacher_hash
        from teachers.lm import CharLM

        lm = CharLM.load(self.path)
        card = make_card(lm, suite, self.max_new_tokens)
        card.update(hash=teacher_hash(self, suite), config=self.fingerprint())
        return lm, card
