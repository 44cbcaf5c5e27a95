"""A character-level causal LM behind the teacher protocol: batched, KV-cached generation
for a whole tick of requests, optional top-k log-probabilities and logits processors, and
atomic checkpoints. (Vocabulary and model shape: `teachers.vocab`.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel, LogitsProcessorList

from teachers.vocab import BOS, EOS, PAD, SEP, CharTokenizer


class HFTokenizer:
    """A `transformers` tokenizer behind the `CharTokenizer` interface that `CharLM` uses."""

    def __init__(self, tokenizer):
        t = self.hf = tokenizer
        if t.eos_token_id is None:
            raise ValueError(f"the tokenizer of {t.name_or_path!r} has no eos_token: a response could not end")
        self.eos = t.eos_token_id
        self.pad = t.pad_token_id if t.pad_token_id is not None else self.eos
        self.bos = t.bos_token_id
        self.sep_ids = [t.sep_token_id] if t.sep_token_id is not None else t.encode("\n", add_special_tokens=False)
        self.special = {"pad": self.pad, "bos": self.bos if self.bos is not None else self.eos, "eos": self.eos,
                        "sep": self.sep_ids[-1]}
        self.stoi = t.get_vocab()
        self.vocab_size = len(t)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def request_ids(self, request: str) -> list[int]:
        return ([self.bos] if self.bos is not None else []) + self.encode(request) + self.sep_ids

    def pair_ids(self, request: str, response: str) -> tuple[list[int], int]:
        prompt = self.request_ids(request)
        return prompt + self.encode(response) + [self.eos], len(prompt)

    def save(self, path: Path) -> None:
        self.hf.save_pretrained(path)


@dataclass
class Completion:
    text: str
    # per generated token: the top-k (token text, log-probability) pairs, when asked for
    top_logprobs: list[list[tuple[str, float]]] | None = None
    meta: dict = field(default_factory=dict)
    finished: bool = True  # the model ended it (EOS), rather than running out of new tokens


class CharLM:
    """A GPT-2 over the char vocabulary with batched, KV-cached generation."""

    def __init__(self, model: GPT2LMHeadModel, tokenizer: CharTokenizer | None = None, engine: bool = True,
                 slots: int = 0, workers: int | None = None):
        self.model = model.eval()
        self.tok = tokenizer or CharTokenizer()
        # the batched serving engine (teachers.engine) for GPT-2 models; `generate` otherwise
        self.use_engine = engine and getattr(model.config, "model_type", "") == "gpt2" and isinstance(
            model, GPT2LMHeadModel)
        # > 0: the engine batches continuously over this many rows, a whole call at once
        self.slots = slots
        # the engine's batches run on this many threads at once (None: one per torch thread), each
        # with an equal share of torch's threads: a small model's ops split poorly across cores,
        # whole batches do not (1,024 questions on 2 cores: 1.6x the rate of one 2-thread batch)
        if workers is not None and workers < 1:
            raise ValueError(f"workers={workers} must be >= 1")
        self.workers = workers
        self._pool, self._pool_shape = None, None
        # special ids: the char vocabulary's, or those of a checkpoint's own tokenizer (`teachers.hf`)
        ids = getattr(self.tok, "special", None) or {"pad": PAD, "bos": BOS, "eos": EOS, "sep": SEP}
        self.pad, self.bos, self.eos, self.sep = ids["pad"], ids["bos"], ids["eos"], ids["sep"]

    @property
    def n_positions(self) -> int:
        return self.model.config.n_positions

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.no_grad()
    def generate(
        self,
        prompts: list[str],
        *,
        max_new_tokens: int,
        logits_processors=(),
        top_k_logprobs: int = 0,
        temperature: float = 0.0,
        seed: int = 0,
        batch_size: int = 128,
        stage: int = 32,
    ) -> list[Completion]:
        """Complete every request in batches (left-padded, one KV cache per batch).

        Greedy when temperature is 0, else sampled from a generator seeded by `seed`, so the
        same call returns the same completions. Early-finished requests stop costing work: the
        batch generates `stage` new tokens at a time, and after each stage only the unfinished
        requests go on, re-batched with what they have so far (a plain answer is done after
        the first stage; the re-encoding costs one prefill per stage)."""
        room = self.n_positions - max_new_tokens
        long = {i for i, p in enumerate(prompts) if len(self.tok.request_ids(p)) > room}
        if long and len(long) < len(prompts):
            # a batch generates at most what its longest request leaves of the context: a long
            # request (a grading request quoting a whole answer) is served apart, so that it
            # does not cut the answers of the short ones beside it
            kw = dict(max_new_tokens=max_new_tokens, logits_processors=logits_processors,
                      top_k_logprobs=top_k_logprobs, temperature=temperature, seed=seed, batch_size=batch_size,
                      stage=stage)
            parts = [sorted(set(range(len(prompts))) - long), sorted(long)]
            outs = [self.generate([prompts[i] for i in part], **kw) for part in parts]
            merged = dict(zip(parts[0] + parts[1], outs[0] + outs[1]))
            return [merged[i] for i in range(len(prompts))]
        if self.use_engine:
            return self._engine_generate(prompts, max_new_tokens, logits_processors, top_k_logprobs, temperature,
                                         seed, batch_size)
        if temperature > 0:
            torch.manual_seed(seed)
        texts, tops = [""] * len(prompts), [[] for _ in prompts]
        active, done_tokens = list(range(len(prompts))), 0
        while active and done_tokens < max_new_tokens:
            step = min(stage, max_new_tokens - done_tokens)
            outs = self._generate_all([prompts[i] for i in active], [texts[i] for i in active], step,
                                      logits_processors, top_k_logprobs, temperature, batch_size)
            for i, c in zip(active, outs):
                texts[i] += c.text
                tops[i] += c.top_logprobs or []
            active = [i for i, c in zip(active, outs) if not c.finished]
            done_tokens += step
        unfinished = set(active)
        return [Completion(t, tp if top_k_logprobs > 0 else None, finished=i not in unfinished)
                for i, (t, tp) in enumerate(zip(texts, tops))]

    def _engine_generate(self, prompts, max_new_tokens, logits_processors, top_k, temperature, seed, batch_size):
        """Each batch in one engine call: static KV cache, finished rows leave the batch."""
        from teachers.engine import Engine

        if getattr(self, "_engine", None) is None or self._engine.model is not self.model \
                or self._engine.slots != self.slots:
            self._engine = Engine(self.model, slots=self.slots)
        # longest prompts first: their batches take longest, and the pool hands the short ones
        # left to whichever worker frees first, so both finish together (shortest first left one
        # worker idle for a quarter of a 512-question call, longest first for a thirtieth)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        if self.slots and not logits_processors:
            # one continuous-batching call per worker; interleaved, so each gets every length
            batches = [order[w :: self.n_workers] for w in range(min(self.n_workers, len(order)))]
        else:
            batches = [order[b : b + batch_size] for b in range(0, len(order), batch_size)]

        def run(k: int) -> list[tuple[int, Completion]]:
            idx = batches[k]
            # each batch samples from its own stream, so results do not depend on the worker count
            gen = torch.Generator(device=self.model.device).manual_seed(seed * 100_003 + k) if temperature > 0 else None
            encoded = [self.tok.request_ids(prompts[i]) for i in idx]
            width = max(len(e) for e in encoded)
            n_new = min(max_new_tokens, self.n_positions - width)
            if n_new <= 0:
                raise ValueError(f"a request of {width} tokens does not fit the context of {self.n_positions}")
            input_ids, attention = self._left_pad(encoded, width)
            out, tops = self._engine.generate(
                input_ids, attention, max_new_tokens=n_new, eos=self.eos, suppress=[self.pad, self.bos, self.sep],
                logits_processors=list(logits_processors), temperature=temperature, top_k=top_k, generator=gen)
            out = out.tolist()
            if top_k:
                top_vals, top_inds = tops[0].tolist(), tops[1].tolist()
            done = []
            for j, i in enumerate(idx):
                ids = out[j]
                n = ids.index(self.eos) if self.eos in ids else len(ids)
                top = None
                if top_k:
                    top = [[(self._tok_text(t), v) for t, v in zip(ti, vi)]
                           for vi, ti in zip(top_vals[j][:n], top_inds[j][:n])]
                done.append((i, Completion(self.tok.decode(ids[:n]), top, finished=self.eos in ids)))
            return done

        if self.n_workers > 1 and len(batches) > 1 and not logits_processors:  # processors may keep state
            parts = self._workers().map(run, range(len(batches)))
        else:
            parts = map(run, range(len(batches)))
        results = dict(pair for part in parts for pair in part)
        return [results[i] for i in range(len(prompts))]

    @property
    def n_workers(self) -> int:
        return self.workers or torch.get_num_threads()

    def _workers(self):
        from concurrent.futures import ThreadPoolExecutor

        n, share = self.n_workers, max(1, torch.get_num_threads() // self.n_workers)
        if self._pool_shape != (n, share):
            if self._pool is not None:
                self._pool.shutdown()
            # torch's thread count is per thread under OpenMP: each worker sets its own share
            self._pool = ThreadPoolExecutor(n, initializer=torch.set_num_threads, initargs=(share,))
            self._pool_shape = (n, share)
        return self._pool

    def _generate_all(self, prompts, continuations, max_new_tokens, logits_processors, top_k, temperature,
                      batch_size) -> list[Completion]:
        # sort by length so each batch wastes little padding; restore the order at the end
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(continuations[i]))
        results: dict[int, Completion] = {}
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            for i, c in zip(idx, self._generate_batch([prompts[i] for i in idx], [continuations[i] for i in idx],
                                                      max_new_tokens, logits_processors, top_k, temperature)):
                results[i] = c
        return [results[i] for i in range(len(prompts))]

    def _generate_batch(self, prompts, continuations, max_new_tokens, logits_processors, top_k, temperature):
        encoded = [self.tok.request_ids(p) + self.tok.encode(c) for p, c in zip(prompts, continuations)]
        width = max(len(e) for e in encoded)
        if width + max_new_tokens > self.n_positions:
            max_new_tokens = self.n_positions - width
            if max_new_tokens <= 0:
                if any(continuations):  # a continuation filled the context: nothing more to say
                    return [Completion("", [] if top_k else None, finished=True) for _ in prompts]
                raise ValueError(f"a request of {width} tokens does not fit the context of {self.n_positions}")
        input_ids, attention = self._left_pad(encoded, width)
        gen = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=None,
            top_p=None,
            logits_processor=LogitsProcessorList(list(logits_processors)),
            pad_token_id=self.pad,
            eos_token_id=self.eos,
            bos_token_id=self.bos,
            # a response is text then EOS, nothing else
            suppress_tokens=sorted({self.pad, self.bos, self.sep} - {self.eos}),
            return_dict_in_generate=True,
            output_scores=top_k > 0,
        )
        new = gen.sequences[:, width:]
        logprobs = None
        if top_k > 0:
            # scores are the processed logits each token was drawn from (what an API exposes)
            lp = torch.stack(gen.scores, dim=1).float().log_softmax(-1)
            logprobs = lp.topk(top_k, dim=-1)
        completions = []
        for i in range(len(encoded)):
            ids = new[i].tolist()
            n = ids.index(self.eos) if self.eos in ids else len(ids)
            tops = None
            if logprobs is not None:
                vals, inds = logprobs.values[i, :n].tolist(), logprobs.indices[i, :n].tolist()
                tops = [[(self._tok_text(t), v) for t, v in zip(ti, vi)] for ti, vi in zip(inds, vals)]
            completions.append(Completion(self.tok.decode(ids[:n]), tops, finished=self.eos in ids))
        return completions

    def _left_pad(self, encoded: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        input_ids = torch.full((len(encoded), width), self.pad, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, e in enumerate(encoded):
            input_ids[i, width - len(e) :] = torch.tensor(e)
            attention[i, width - len(e) :] = 1
        return input_ids, attention

    def _tok_text(self, t: int) -> str:
        names = {self.pad: "<pad>", self.bos: "<bos>", self.sep: "<sep>", self.eos: "<eos>"}
        return names.get(t) or self.tok.decode([t])

    # -- persistence: a directory written atomically (a killed run leaves no half checkpoint)

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp"))
        try:
            self.model.save_pretrained(tmp)
            if isinstance(self.tok, CharTokenizer):
                (tmp / "tokenizer.json").write_text(json.dumps({"chars": self.tok.chars}))
            else:
                self.tok.save(tmp)
            for name, obj in (extra or {}).items():
                (tmp / name).write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> "CharLM":
        """A checkpoint directory: ours (char vocabulary) or any local Hugging Face causal LM."""
        path = Path(path)
        try:
            return cls._load(path)
        except Exception as e:  # missing, truncated, random bytes, malformed: one line naming it
            raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None

    @classmethod
    def _load(cls, path: Path) -> "CharLM":
        from transformers import AutoModelForCausalLM

        spec = json.loads((path / "tokenizer.json").read_text()) if (path / "tokenizer.json").exists() else {}
        if "chars" in spec:
            tok = CharTokenizer(spec["chars"])
        else:
            from transformers import AutoTokenizer

            tok = HFTokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True))
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        model.loss_type = "ForCausalLM"
        return cls(model, tok)
