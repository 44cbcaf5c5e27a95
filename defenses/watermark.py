"""The green-list watermark on the teacher, its detector, and the student radioactivity test.

Kirchenbauer, Geiping, Wen, Katz, Miers and Goldstein (2023), "A Watermark for Large
Language Models": at each step the previous h tokens, hashed with a secret key, seed a
split of the vocabulary into a green list (a fraction γ of it) and a red list; δ is added
to the green logits. A text of T scored tokens with |s|_G green ones has

    z = (|s|_G - γ T) / sqrt(T γ (1 - γ)),     p = 1 - Φ(z)

under the null hypothesis that the text was written without knowledge of the key.

Radioactivity (Sander, Fernandez, Durmus, Douze and Furon (2024), "Watermarking Makes
Language Models Radioactive"): sample the suspect student on fresh prompts and score its
text with the teacher's key; each (context, token) pair is scored once, as they do, so
that repeated patterns do not inflate z. Reported as `watermark/student_z` and
`watermark/student_p`.
"""

from __future__ import annotations

import math
import random

import torch
from transformers import LogitsProcessor

from defenses.base import Defense
from teachers.vocab import PAD, SEP, CharTokenizer


class GreenList:
    """The keyed green lists: `table[ctx_id]` is a boolean mask over the vocabulary, where
    ctx_id encodes the previous h tokens (h = 1 or 2 keeps the table small for a char vocab)."""

    def __init__(self, key: int, gamma: float, h: int, vocab_size: int):
        self.key, self.gamma, self.h, self.V = key, gamma, h, vocab_size
        n_green = max(1, round(gamma * vocab_size))
        self.gamma_eff = n_green / vocab_size  # the exact green fraction the test must use
        table = torch.zeros(vocab_size ** h, vocab_size, dtype=torch.bool)
        for ctx in range(vocab_size ** h):
            rng = random.Random(f"{key}-{ctx}")
            table[ctx, rng.sample(range(vocab_size), n_green)] = True
        self.table = table

    def ctx_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids[:, -self.h:]
        out = torch.zeros(ids.shape[0], dtype=torch.long)
        for j in range(self.h):
            out = out * self.V + ids[:, j]
        return out

    def is_green(self, context: tuple[int, ...], token: int) -> bool:
        ctx = 0
        for t in context:
            ctx = ctx * self.V + t
        return bool(self.table[ctx, token])


class WatermarkProcessor(LogitsProcessor):
    """Adds δ to the green logits of the rows whose request is watermarked: all of them when
    `fraction` is 1, else those whose request text hashes (with the key) below `fraction`."""

    def __init__(self, green: GreenList, delta: float, fraction: float = 1.0):
        self.green, self.delta, self.fraction = green, delta, fraction
        self._memo: dict[tuple, bool] = {}  # request tokens -> watermarked?

    def _marked(self, input_ids: torch.LongTensor) -> torch.Tensor:
        if self.fraction >= 1:
            return torch.ones(input_ids.shape[0], dtype=torch.bool)
        marks = []
        for row in input_ids.tolist():
            prompt = tuple(t for t in row[: row.index(SEP) + 1] if t != PAD) if SEP in row else tuple(row)
            if prompt not in self._memo:
                self._memo[prompt] = random.Random(f"{self.green.key}-{prompt}").random() < self.fraction
            marks.append(self._memo[prompt])
        return torch.tensor(marks)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = self.green.table[self.green.ctx_ids(input_ids)] & self._marked(input_ids)[:, None]
        return scores + self.delta * mask.to(scores.dtype)


def z_score(green: int, total: int, gamma: float) -> float:
    if total == 0:
        return float("nan")
    return (green - gamma * total) / math.sqrt(total * gamma * (1 - gamma))


def p_value(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2)) if z == z else float("nan")


class Watermark(Defense):
    def __init__(self, gamma: float = 0.25, delta: float = 2.0, h: int = 1, key: int = 42, fraction: float = 1.0,
                 audit_prompts: int = 256, audit_temperature: float = 1.0, seed: int = 0):
        if not 0 <= fraction <= 1:
            raise ValueError(f"defense.watermark.fraction={fraction!r} must be in [0, 1]")
        self.fraction = float(fraction)
        if not 0 < gamma < 1:
            raise ValueError(f"defense.watermark.gamma={gamma!r} must be in (0, 1)")
        if not delta >= 0:
            raise ValueError(f"defense.watermark.delta={delta!r} must be >= 0")
        if h not in (1, 2):
            raise ValueError(f"defense.watermark.h={h!r} must be 1 or 2 (tokens of context hashed)")
        if not isinstance(audit_prompts, int) or audit_prompts < 1:
            raise ValueError(f"defense.watermark.audit_prompts={audit_prompts!r} must be a positive integer")
        if not audit_temperature > 0:
            raise ValueError(f"defense.watermark.audit_temperature={audit_temperature!r} must be > 0")
        self.tok = CharTokenizer()
        self.green = GreenList(key, gamma, h, self.tok.vocab_size)
        self.delta, self.h = float(delta), h
        self.audit_prompts, self.audit_temperature, self.seed = audit_prompts, float(audit_temperature), seed

    def logits_processors(self) -> list:
        return [WatermarkProcessor(self.green, self.delta, self.fraction)] if self.delta and self.fraction else []

    def detect(self, texts, requests=None, dedupe: bool = True) -> dict:
        """z and p of texts (responses; `requests` give each its context, as in generation)."""
        seen, green, total = set(), 0, 0
        for k, text in enumerate(texts):
            ids = (self.tok.request_ids(requests[k]) if requests is not None else []) + self.tok.encode(text)
            start = len(ids) - len(text)
            for i in range(max(self.h, start), len(ids)):
                pair = (tuple(ids[i - self.h:i]), ids[i])
                if dedupe:
                    if pair in seen:
                        continue
                    seen.add(pair)
                total += 1
                green += self.green.is_green(*pair)
        z = z_score(green, total, self.green.gamma_eff)
        return {"z": z, "p": p_value(z), "tokens": total}

    def audit(self, student, suite, harvest) -> dict:
        """Radioactivity: the student's samples on fresh prompts, scored with the key; and, for
        reference, the z of the text the attacker harvested (what the student learned from)."""
        rng = random.Random(f"watermark-audit-{self.seed}")
        prompts = [suite.sample(rng).request(rng.random() < 0.5) for _ in range(self.audit_prompts)]
        outs = student.generate(prompts, max_new_tokens=64, temperature=self.audit_temperature, seed=self.seed)
        s = self.detect([o.text for o in outs], prompts)
        h = self.detect([r for _, r in harvest], [q for q, _ in harvest]) if harvest else {"z": float("nan")}
        return {"watermark/student_z": s["z"], "watermark/student_p": s["p"], "watermark/harvest_z": h["z"]}
