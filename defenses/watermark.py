"""The green-list watermark on the teacher's voice, its detector, and the student radioactivity test.

Kirchenbauer, Geiping, Wen, Katz, Miers and Goldstein (2023), "A Watermark for Large
Language Models": at each step the previous h tokens, hashed with a secret key, seed a
split of the vocabulary into a green list (a fraction γ of it) and a red list; δ is added
to the green logits. A text of T scored tokens with |s|_G green ones has

    z = (|s|_G - γ T) / sqrt(T γ (1 - γ)),     p = 1 - Φ(z)

under the null hypothesis that the text was written without knowledge of the key; for the
few tokens of one short text the exact binomial tail P(Bin(T, γ) >= |s|_G) is the p-value
(`p_exact`), as the normal approximation overstates significance there.

Where the watermark goes. A character model's text is almost all forced: the digits of a
step, the letters after a word's first, the answer. Following Lee et al. (2023), "Who Wrote
this Code? Watermarking for Code Generation" (SWEET), δ is added only where the teacher's own
next-token entropy is at least `entropy` bits (the choice of a voice word) and never after
the answer mark, so answers and steps stay exact; the detector scores only the tokens that
can carry the mark (`scope: voice`: the first character of each word without `=` before the
answer mark, the voice the teacher chooses freely), or every response token before the
answer mark (`scope: all`, the plain KGW detector).

Radioactivity (Sander, Fernandez, Durmus, Douze and Furon (2024), "Watermarking Makes
Language Models Radioactive"): sample the suspect student on fresh prompts and score its
text with the teacher's key. A voice has few words, so the same (context, token) pairs come
back again and again: the binomial test's independence fails, and scoring each pair once,
as Sander et al. do, leaves a set of pairs that every student soon exhausts, whatever it
learnt. The test here keeps every occurrence and takes its null from the key instead, after
Kuditipudi, Thickstun, Hashimoto and Liang (2023), "Robust Distortion-free Watermarks for
Language Models": the green share S of the scored tokens under the secret key is ranked
among the shares under `null_keys` K keys drawn at random, p = (1 + #{S_k >= S}) / (K + 1).
A student that never saw the key is exchangeable with the random keys whatever its
repetitions, so p is exact; `z` = (S - mean S_k) / sd S_k. Reported as
`watermark/student_z`, `watermark/student_p` and, for the text the attacker harvested (what
the student learnt from), `watermark/harvest_z`.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import torch
from transformers import LogitsProcessor

from defenses.base import Defense
from sim.tasks.base import ANSWER_MARK
from teachers.vocab import PAD, SEP, CharTokenizer

MASK = (1 << 32) - 1
SCOPES = ("voice", "all")


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (the finaliser of MurmurHash3) on int64 tensors. Only the low 32
    bits of each product are kept, and those are exact even when the int64 product wraps, so
    the hash is the same on every machine."""
    x = x & MASK
    x = ((x ^ (x >> 16)) * 0x85EBCA6B) & MASK
    x = ((x ^ (x >> 13)) * 0xC2B2AE35) & MASK
    return x ^ (x >> 16)


class GreenList:
    """The keyed green lists: the previous h tokens, hashed with the key, decide for each
    token of the vocabulary whether it is green, with probability γ."""

    def __init__(self, key: int, gamma: float, h: int, vocab_size: int):
        self.key, self.gamma, self.h, self.V = key, gamma, h, vocab_size
        self.threshold = round(gamma * (1 << 32))  # a pair is green when its hash falls below

    def ctx_hash(self, ctx: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """[N, h] token ids (the last h before each position) -> [N] context hashes under the
        key, or [K, N] under each of `keys`."""
        k = torch.tensor([self.key]) if keys is None else keys
        c = (k.long() & MASK)[:, None].expand(-1, ctx.shape[0])
        for j in range(ctx.shape[1]):
            c = _mix(c * self.V + ctx[None, :, j].long())
        return c[0] if keys is None else c

    def mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] sequences -> [B, V] green masks for their next token."""
        c = self.ctx_hash(input_ids[:, -self.h:])
        return _mix(c[:, None] * self.V + torch.arange(self.V)) < self.threshold

    def is_green(self, ctx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[N, h] contexts and [N] tokens -> [N] booleans."""
        return _mix(self.ctx_hash(ctx) * self.V + tokens.long()) < self.threshold

    def is_green_under(self, keys: torch.Tensor, ctx: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """[K] keys, [N, h] contexts and [N] tokens -> [K, N] booleans: the same pairs under
        other keys (the null of `Watermark.key_test`)."""
        return _mix(self.ctx_hash(ctx, keys) * self.V + tokens[None].long()) < self.threshold


def entropy_bits(scores: torch.Tensor) -> torch.Tensor:
    """Next-token entropy in bits of each row of logits (suppressed tokens at -inf count 0)."""
    return torch.special.entr(torch.softmax(scores.float(), -1)).sum(-1) / math.log(2)


class WatermarkProcessor(LogitsProcessor):
    """Adds δ to the green logits of the rows whose request is watermarked (all of them when
    `fraction` is 1, else those whose request text hashes with the key below `fraction`),
    where the next token's entropy is at least `entropy` bits and the answer has not begun."""

    def __init__(self, green: GreenList, delta: float, fraction: float = 1.0, entropy: float = 0.0,
                 answer_id: int | None = None):
        self.green, self.delta, self.fraction, self.entropy = green, delta, fraction, entropy
        self.answer_id = CharTokenizer().stoi[ANSWER_MARK] if answer_id is None else answer_id
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
        in_response = (input_ids == SEP).cumsum(1) > 0
        answering = ((input_ids == self.answer_id) & in_response).any(1)
        rows = self._marked(input_ids) & ~answering
        if self.entropy > 0:
            rows &= entropy_bits(scores) >= self.entropy
        mask = self.green.mask(input_ids) & rows[:, None]
        return scores + self.delta * mask.to(scores.dtype)


def z_score(green: int, total: int, gamma: float) -> float:
    if total == 0:
        return float("nan")
    return (green - gamma * total) / math.sqrt(total * gamma * (1 - gamma))


def p_value(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2)) if z == z else float("nan")


def p_exact(green: int, total: int, gamma: float) -> float:
    """P(Bin(total, γ) >= green): the exact tail, for texts too short for the normal one."""
    if total == 0:
        return float("nan")
    from scipy.stats import binom

    return float(binom.sf(green - 1, total, gamma))


class Watermark(Defense):
    def __init__(self, gamma: float = 0.25, delta: float = 2.0, h: int = 4, key: int = 42, fraction: float = 1.0,
                 entropy: float = 1.0, scope: str = "voice", audit_prompts: int = 256,
                 audit_temperature: float = 1.0, seed: int = 0, null_keys: int = 1999):
        if not 0 <= fraction <= 1:
            raise ValueError(f"defense.watermark.fraction={fraction!r} must be in [0, 1]")
        if not 0 < gamma < 1:
            raise ValueError(f"defense.watermark.gamma={gamma!r} must be in (0, 1)")
        if not delta >= 0:
            raise ValueError(f"defense.watermark.delta={delta!r} must be >= 0")
        if not isinstance(h, int) or isinstance(h, bool) or not 1 <= h <= 16:
            raise ValueError(f"defense.watermark.h={h!r} must be an integer in [1, 16] (tokens of context hashed)")
        if not isinstance(key, int) or isinstance(key, bool):
            raise ValueError(f"defense.watermark.key={key!r} must be an integer")
        if not 0 <= entropy <= 16:
            raise ValueError(f"defense.watermark.entropy={entropy!r} must be in [0, 16] bits")
        if scope not in SCOPES:
            raise ValueError(f"defense.watermark.scope={scope!r} must be one of {SCOPES}")
        if not isinstance(audit_prompts, int) or audit_prompts < 1:
            raise ValueError(f"defense.watermark.audit_prompts={audit_prompts!r} must be a positive integer")
        if not audit_temperature > 0:
            raise ValueError(f"defense.watermark.audit_temperature={audit_temperature!r} must be > 0")
        if not isinstance(null_keys, int) or null_keys < 19:
            raise ValueError(f"defense.watermark.null_keys={null_keys!r} must be an integer >= 19 (p resolves 1/(K+1))")
        self.null_keys = null_keys
        self.tok = CharTokenizer()
        self.green = GreenList(key, gamma, h, self.tok.vocab_size)
        self.fraction, self.delta, self.h, self.entropy, self.scope = float(fraction), float(delta), h, float(entropy), scope
        self.audit_prompts, self.audit_temperature, self.seed = audit_prompts, float(audit_temperature), seed

    def logits_processors(self) -> list:
        if not (self.delta and self.fraction):
            return []
        return [WatermarkProcessor(self.green, self.delta, self.fraction, self.entropy)]

    def positions(self, response: str) -> list[int]:
        """Indices of the response's characters the detector scores (see the module docstring)."""
        head = response.rsplit(ANSWER_MARK, 1)[0] if ANSWER_MARK in response else response
        if self.scope == "all":
            return list(range(len(head)))
        out, i = [], 0
        for word in head.split(" "):
            if word and "=" not in word:
                out.append(i)
            i += len(word) + 1
        return out

    def pairs(self, texts, requests=None) -> list[tuple[tuple[int, ...], int]]:
        """The scored (context, token) pairs of each text, in order."""
        out = []
        for k, text in enumerate(texts):
            prefix = self.tok.request_ids(requests[k]) if requests is not None else []
            ids = prefix + self.tok.encode(text)
            for i in self.positions(text):
                j = len(prefix) + i
                if j >= self.h:
                    out.append((tuple(ids[j - self.h:j]), ids[j]))
        return out

    def detect(self, texts, requests=None, dedupe: bool = True) -> dict:
        """z, p (normal) and p_exact (binomial) of texts (responses; `requests` give each its
        context, as in generation), pooled; each (context, token) pair once when `dedupe`."""
        pairs = self.pairs(texts, requests)
        if dedupe:
            pairs = list(dict.fromkeys(pairs))
        green = 0
        if pairs:
            ctx = torch.tensor([c for c, _ in pairs], dtype=torch.long)
            green = int(self.green.is_green(ctx, torch.tensor([t for _, t in pairs])).sum())
        z = z_score(green, len(pairs), self.green.gamma)
        return {"z": z, "p": p_value(z), "p_exact": p_exact(green, len(pairs), self.green.gamma),
                "tokens": len(pairs), "green": green}

    def key_test(self, texts, requests=None) -> dict:
        """The green share of every scored token of `texts` under the key, against `null_keys`
        random keys (see the module docstring): share, z, p, tokens."""
        pairs = self.pairs(texts, requests)
        if not pairs:
            return {"share": float("nan"), "z": float("nan"), "p": float("nan"), "tokens": 0}
        counts = Counter(pairs)  # each distinct pair once, weighted by how often it occurs
        ctx = torch.tensor([c for c, _ in counts], dtype=torch.long)
        tok = torch.tensor([t for _, t in counts], dtype=torch.long)
        w = torch.tensor(list(counts.values()), dtype=torch.float64)
        share = float((self.green.is_green(ctx, tok).double() * w).sum() / w.sum())
        rng = random.Random(f"watermark-null-keys-{self.green.key}")
        keys = [k for k in (rng.getrandbits(32) for _ in range(self.null_keys + 1)) if k != self.green.key & MASK]
        keys = torch.tensor(keys[: self.null_keys], dtype=torch.long)
        null = torch.cat([self.green.is_green_under(k, ctx, tok).double() @ w for k in keys.split(256)]) / w.sum()
        sd = float(null.std())
        return {"share": share, "z": (share - float(null.mean())) / sd if sd > 0 else float("nan"),
                "p": (1 + int((null >= share).sum())) / (self.null_keys + 1), "tokens": len(pairs)}

    def audit(self, student, suite, harvest) -> dict:
        """Radioactivity: the student's samples on fresh prompts, scored with the key; and, for
        reference, the text the attacker harvested (what the student learned from)."""
        rng = random.Random(f"watermark-audit-{self.seed}")
        prompts = [suite.sample(rng).request(True) for _ in range(self.audit_prompts)]
        outs = student.generate(prompts, max_new_tokens=64, temperature=self.audit_temperature, seed=self.seed)
        s = self.key_test([o.text for o in outs], prompts)
        h = self.key_test([r for _, r in harvest], [q for q, _ in harvest]) if harvest else {"z": float("nan")}
        return {"watermark/student_z": s["z"], "watermark/student_p": s["p"], "watermark/student_green": s["share"],
                "watermark/harvest_z": h["z"]}
