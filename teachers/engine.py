"""A batched serving engine for the built-in GPT-2 teacher: one tick's requests in one call.

What Hugging Face `generate` spends per step on a small model is Python: cache objects,
processor plumbing, stopping criteria, for a few microseconds of arithmetic. This engine runs
the same GPT-2 computation (the model's own weights, the same position ids and masks) as a
tight decode loop:

- a KV cache pre-allocated for the whole batch ([layers, batch, heads, prompt + new, head
  dim]), written in place; mixed prompt lengths by left padding;
- rows that finished (EOS) leave the batch: once a tenth of the rows have finished
  (`compact_below=0.9`, checked every `compact_every` steps) the filled part of the cache and
  the buffers are copied for the live rows only, so finished requests stop costing work
  (every step in batches of 128 served 1.6x the rate of every 8 steps in batches of 256, with
  two batches at once on 2 cores; compacting at a tenth finished rather than a quarter, 370
  against 345 questions/s, 512 questions a call, medians of four alternating runs, once the
  copy was of the filled prefix only);
- logits processors with the Hugging Face contract (`processor(input_ids, scores)`), the
  suppressed special ids, greedy or sampled decoding (temperature), and per-token top-k
  log-probabilities of the processed scores, as an API exposes them;
- a decode step of its own (`decode`): 2-D activations, biases added inside the GEMMs as
  HF's `Conv1D` adds them (`forward` too), residuals added in place, parameters looked up
  once, gelu_new in its sigmoid form, attention through the engine's chosen kernel. At a
  worker's batch of 128 every operation is tens of microseconds, so the count of operations
  and the memory they touch decide the step. With this, the compaction above and a
  prompt's last block run for its last position only (`forward`), against the engine of
  commit c0e9650, on the same 256 questions on one thread, in one process (malloc keeping
  freed blocks for both, `keep_freed_memory`): 255 against 188 questions/s, medians of four
  alternating runs, the same tokens;
- device-agnostic (CPU or CUDA); `compile=True` wraps the steps in `torch.compile` (on CPU it
  measured 6x slower than eager, 24 against 146 questions/s after 46 s of compiling: the
  shapes change every step);
- on CUDA, `cuda_graphs=True` captures the decode loop of a batch shape once (`StaticDecode`:
  one graph per step, each attending over only the cache prefix filled so far) and replays it
  for every later batch of that shape: a replayed graph launches the whole step at once,
  without Python. On an H200 at batch 16,384, with the same Triton decode kernel, that took
  23,385 to 26,094 exchanges/s (`python -m experiments.bench.serving_gpu`): at such batches
  reading the cache, not launching kernels, is most of a step. The captured loop
  keeps every row to the end (no compaction) and runs neither Python logits processors nor
  sampling, which fall back to the eager loop.

Greedy decoding gives the same tokens as `model.generate` up to floating-point ties (a test
checks it on the held-out set). Sampled decoding is reproducible from its seed but draws its
own random numbers, so it does not reproduce `generate`'s samples.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import math

import torch
import torch.nn.functional as F


def matmul_attention(q, k, v, mask=None):
    """One new token's attention as two batched matmuls: q [B, H, 1, D] over k, v [B, H, n, D]
    (`mask` [B, 1, 1, n], True = may attend), softmax in float32."""
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        s = s.masked_fill_(~mask, -math.inf)
    return s.float().softmax(-1).to(v.dtype) @ v


def prompt_inputs(attention_mask):
    """Position ids [B, W] and the prefill mask [B, 1, W, W] (True = may attend) of a
    left-padded batch of prompts."""
    W = attention_mask.shape[1]
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    causal = torch.ones(W, W, dtype=torch.bool, device=attention_mask.device).tril()
    # a fully padded query row would attend to nothing: let it see itself (its output is unused)
    eye = torch.eye(W, dtype=torch.bool, device=attention_mask.device)
    return pos, ((causal[None] & attention_mask[:, None, :]) | eye[None])[:, None]


def choose(scores, temperature: float, generator, top_k: int):
    """The next token of each row from its processed scores (float32): the argmax, or a sample
    at `temperature`; with `top_k`, the top-k log-probabilities of the scores it was drawn from."""
    if temperature > 0:
        scores = scores / temperature
        nxt = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
    else:
        nxt = scores.argmax(-1)
    return nxt, (scores.log_softmax(-1).topk(top_k, dim=-1) if top_k else None)


def keep_freed_memory(mmap_below: int = 64 << 20, trim_above: int = 256 << 20) -> bool:
    """Let glibc's malloc keep freed blocks for reuse instead of handing them back to the kernel.

    By default glibc maps a block of more than 128 KB (a threshold that rises to 32 MB) with
    mmap and unmaps it when freed, and trims a heap's free top: the next batch's KV cache and
    activations are fresh pages, each a fault that the kernel zeroes. Measured on 2 cores, one
    512-question `generate` call took 28,000-137,000 minor faults; with blocks below
    `mmap_below` taken from the heap and up to `trim_above` of free heap kept, ~200. (The usual
    CPU advice for PyTorch, preloading jemalloc or tcmalloc, does the same from outside.)
    Process-wide; a no-op returning False where the C library has no `mallopt` (macOS, musl)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (AttributeError, OSError, TypeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_below)) and bool(mallopt(M_TRIM_THRESHOLD, trim_above))


class Engine:
    DECODE_ATTENTION = ("auto", "matmul", "sdpa", "triton")

    def __init__(self, model, compile: bool = False, compact_every: int = 1, cuda_graphs: bool = False,
                 decode_attention: str = "auto", slots: int = 0, compact_below: float = 0.9):
        cfg = model.config
        if getattr(cfg, "model_type", "") != "gpt2":
            raise ValueError(f"the serving engine runs GPT-2 models, not {cfg.model_type!r}")
        if cfg.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"the serving engine implements gelu_new, not {cfg.activation_function!r}")
        t = model.transformer
        self.model, self.t = model, t
        self.n_head, self.eps = cfg.n_head, cfg.layer_norm_epsilon
        self.n_layer, self.n_embd, self.n_positions = cfg.n_layer, cfg.n_embd, cfg.n_positions
        self.head_dim = self.n_embd // self.n_head
        self.compact_every = compact_every
        if not 0 < compact_below <= 1:
            raise ValueError(f"compact_below={compact_below} must be in (0, 1]")
        self.compact_below = compact_below  # compact once at most this share of the rows is live
        if slots < 0:
            raise ValueError(f"slots={slots} must be >= 0 (0: one static batch per call)")
        self.slots = slots
        self._step = torch.compile(self.step, dynamic=True) if compile else self.step
        self._decode = torch.compile(self.decode, dynamic=True) if compile else self.decode
        if decode_attention not in self.DECODE_ATTENTION:
            raise ValueError(f"decode_attention={decode_attention!r}: choose one of {self.DECODE_ATTENTION}")
        self.cuda_graphs = cuda_graphs
        self._attend_one = getattr(self, f"_attend_{decode_attention}")
        self._triton = importlib.util.find_spec("triton") is not None  # looked up once, not per step
        self._static = None  # the last batch shape's captured decode: one shape's cache at a time
        # each block's parameters as plain tensors for `decode`, looked up once rather than
        # through module attributes every step (the model's own tensors, not copies)
        self._blocks = [((b.ln_1.weight, b.ln_1.bias), b.attn.c_attn.weight, b.attn.c_attn.bias,
                         b.attn.c_proj.weight, b.attn.c_proj.bias, (b.ln_2.weight, b.ln_2.bias),
                         b.mlp.c_fc.weight, b.mlp.c_fc.bias, b.mlp.c_proj.weight, b.mlp.c_proj.bias)
                        for b in t.h]
        self._ln_f = (t.ln_f.weight, t.ln_f.bias)
        if t.wte.weight.device.type == "cpu":
            keep_freed_memory()

    # -- the GPT-2 computation (HF `GPT2Block`: pre-LN attention and MLP, tied head)

    def _ln(self, x, ln):
        return F.layer_norm(x, (self.n_embd,), ln.weight, ln.bias, self.eps)

    def _heads(self, x):  # [B, T, E] -> [B, H, T, D]
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.head_dim).transpose(1, 2)

    def forward(self, ids, pos, cache_k, cache_v, start, mask, end: int | None = None):
        """Tokens `ids` [B, T] at positions `pos` [B, T], written to the cache at
        [start, start + T); attention over the cache [0, start + T) under `mask`
        [B, 1, T, start + T] (True = may attend). Returns the last position's logits.
        `start` may instead be a tensor [B] of each row's own cache slot for its one token
        (continuous batching), with attention over [0, `end`)."""
        h = self.t.wte(ids) + self.t.wpe(pos)
        per_row = isinstance(start, torch.Tensor)
        if not per_row:
            end = start + ids.shape[1]
        rows = torch.arange(ids.shape[0], device=ids.device) if per_row else None
        for i, block in enumerate(self.t.h):
            q, k, v = self._linear(self._ln(h, block.ln_1), block.attn.c_attn).split(self.n_embd, dim=2)
            if per_row:
                cache_k[i, rows, :, start] = self._heads(k)[:, :, 0]
                cache_v[i, rows, :, start] = self._heads(v)[:, :, 0]
            else:
                cache_k[i, :, :, start:end] = self._heads(k)
                cache_v[i, :, :, start:end] = self._heads(v)
            if i == self.n_layer - 1 and h.shape[1] > 1:
                # a prompt's last block: every position's K/V is kept (above), but only the last
                # position's output is read (the logits), so attention, projection and MLP run
                # for it alone: a fifth of a prefill's weight products
                h, q = h[:, -1:], q[:, -1:]
                mask = None if mask is None else mask[:, :, -1:]
            o = self._attend(self._heads(q), cache_k[i, :, :, :end], cache_v[i, :, :, :end], mask)
            h = h + self._linear(o.transpose(1, 2).reshape(h.shape), block.attn.c_proj)
            m = self._gelu(self._linear(self._ln(h, block.ln_2), block.mlp.c_fc))
            h = h + self._linear(m, block.mlp.c_proj)
        h = self._ln(h[:, -1], self.t.ln_f)
        return h @ self.t.wte.weight.T

    @staticmethod
    def _linear(x, conv):
        """HF's `Conv1D` as HF computes it: the bias added inside the GEMM (`addmm`), not in a
        pass of its own."""
        return torch.addmm(conv.bias, x.reshape(-1, x.shape[-1]), conv.weight).view(*x.shape[:-1], -1)

    @staticmethod
    def _gelu(x):
        """gelu_new, in place on a fresh activation. 0.5 x (1 + tanh z) = x sigmoid(2z), with
        z = sqrt(2/pi) (x + 0.044715 x^3): on CPU torch's tanh costs about three times its
        sigmoid (3.3 against 1.0 ns an element, AVX2, one thread), so the five passes of this
        form (1.6 ns) beat the one of `F.gelu(approximate="tanh")` in isolation; the results
        differ by float rounding (4.8e-7 at most on a [128, 512] normal sample). Inside the
        step the two measured alike (365 against 351 questions/s with two workers, 185 against
        191 on one thread, medians of four alternating runs). CUDA's fused kernel wins there."""
        if x.is_cuda:
            return F.gelu(x, approximate="tanh")
        c = 2 * math.sqrt(2 / math.pi)
        return (x * x).mul_(0.044715 * c).add_(c).mul_(x).sigmoid_().mul_(x)

    def _attend(self, q, k, v, mask):
        """`mask` None: no padding anywhere, causal over a prompt (flash attention on CUDA)."""
        if q.shape[2] > 1:  # the prompt: a fused kernel over the whole square
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self._attend_one(q, k, v, mask)

    # One new token. The fused SDPA kernels tile 64-128 query rows for the one real row: at a
    # GPU's large batches that wasted arithmetic bounds them. On CPU, two batched matmuls beat
    # their per-row set-up; on CUDA the Triton kernel reads the cache once and does nothing else.

    def _attend_matmul(self, q, k, v, mask):
        return matmul_attention(q, k, v, mask)

    def _attend_auto(self, q, k, v, mask):
        return (self._attend_triton if q.is_cuda and self._triton else self._attend_matmul)(q, k, v, mask)

    def _attend_sdpa(self, q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def _attend_triton(self, q, k, v, mask):
        from teachers.decode_attention import decode_attention

        return decode_attention(q, k, v, None if mask is None else mask[:, 0, 0])

    def step(self, ids, pos, cache_k, cache_v, start, mask, end: int | None = None):
        return self.forward(ids, pos, cache_k, cache_v, start, mask, end)

    def decode(self, ids, pos, cache_k, cache_v, start: int, mask):
        """`forward` for one new token per row ([B] ids at [B] positions, written to cache slot
        `start`, attending under `mask` [B, 1, 1, start + 1]), on 2-D activations with the
        fewest tensor operations: at a worker's batch each one is tens of microseconds, and a
        step of one row, all dispatch, still costs about a millisecond. Two workers, 512
        questions a call, medians of six alternating runs, the same tokens: 449 questions/s
        here, 437 with every step through `forward`, and 460 with the attention written out
        inline against an additive padding bias (not kept: a second copy of `matmul_attention`
        and of the choice of kernel, for 2%)."""
        B, H, D = ids.shape[0], self.n_head, self.head_dim
        h = self.t.wte.weight[ids] + self.t.wpe.weight[pos]
        for i, (ln_1, w_attn, b_attn, w_proj, b_proj, ln_2, w_fc, b_fc, w_out, b_out) in enumerate(self._blocks):
            qkv = torch.addmm(b_attn, F.layer_norm(h, (self.n_embd,), *ln_1, self.eps), w_attn).view(B, 3, H, D)
            k, v = cache_k[i], cache_v[i]
            k[:, :, start] = qkv[:, 1]
            v[:, :, start] = qkv[:, 2]
            o = self._attend_one(qkv[:, 0, :, None], k[:, :, : start + 1], v[:, :, : start + 1], mask)
            h = torch.addmm(b_proj, o.reshape(B, self.n_embd), w_proj).add_(h)
            m = self._gelu(torch.addmm(b_fc, F.layer_norm(h, (self.n_embd,), *ln_2, self.eps), w_fc))
            h = torch.addmm(b_out, m, w_out).add_(h)
        return F.layer_norm(h, (self.n_embd,), *self._ln_f, self.eps) @ self.t.wte.weight.T

    # -- decoding

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int, eos: int,
                 suppress=(), logits_processors=(), temperature: float = 0.0, top_k: int = 0,
                 generator: torch.Generator | None = None):
        """Decode a left-padded batch. Returns the new token ids [B, max_new_tokens] (after a
        row's first EOS: filler) and, with `top_k`, (log-probs, ids) [B, max_new_tokens, k]."""
        device = self.t.wte.weight.device
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device).bool()
        B, W = input_ids.shape
        N = W + max_new_tokens
        if N > self.n_positions:
            raise ValueError(f"{W} prompt + {max_new_tokens} new tokens exceed the context of {self.n_positions}")
        if self.cuda_graphs and device.type == "cuda" and not logits_processors and temperature == 0:
            key = (B, W, max_new_tokens, eos, tuple(suppress), top_k, bool(attention_mask.all()))
            if self._static is None or self._static.key != key:
                self._static = None  # free the old shape's cache before allocating the new one
                self._static = StaticDecode(self, *key, device=device, capture=True)
            return self._static.run(input_ids, attention_mask)
        if self.slots and B > self.slots and not logits_processors:
            return self._continuous(input_ids, attention_mask, max_new_tokens, eos, suppress, temperature, top_k,
                                    generator)
        dtype = self.t.wte.weight.dtype
        # empty, not zeros: the prefill writes slots [0, W) of every row (padding included) and
        # step t writes slot W + t before attention reads [0, W + t], so nothing unwritten is read
        cache_k = torch.empty(self.n_layer, B, self.n_head, N, self.head_dim, dtype=dtype, device=device)
        cache_v = torch.empty_like(cache_k)
        # the tokens so far, for the logits processors (which read the whole sequence)
        tokens = torch.cat([input_ids, input_ids.new_full((B, max_new_tokens), eos)], 1) if logits_processors else None
        keys = torch.zeros(B, N, dtype=torch.bool, device=device)  # which cache slots hold real tokens
        keys[:, :W] = attention_mask
        pos, mask = prompt_inputs(attention_mask)
        logits = self._step(input_ids, pos, cache_k, cache_v, 0, mask)
        next_pos = pos[:, -1] + 1
        rows = torch.arange(B, device=device)  # original row of each live row
        out = torch.full((B, max_new_tokens), eos, dtype=torch.long, device=device)
        top_vals = torch.zeros(B, max_new_tokens, max(top_k, 1), device=device)
        top_inds = torch.zeros(B, max_new_tokens, max(top_k, 1), dtype=torch.long, device=device)
        bias = self._suppress_bias(suppress, eos, device)
        for t in range(max_new_tokens):
            scores = logits.float() + bias
            for proc in logits_processors:
                scores = proc(tokens[:, : W + t], scores)
            nxt, top = choose(scores, temperature, generator, top_k)
            if top_k:
                top_vals[rows, t], top_inds[rows, t] = top
            out[rows, t] = nxt
            if tokens is not None:
                tokens[:, W + t] = nxt
            keys[:, W + t] = True
            live = nxt != eos
            n_live = int(live.sum())
            if t + 1 == max_new_tokens or n_live == 0:
                break
            # drop finished rows once enough have finished (`compact_below`): copying the cache
            # costs about as much as a few steps of the rows it removes
            if (t + 1) % self.compact_every == 0 and n_live <= self.compact_below * len(live):
                idx = live.nonzero().squeeze(1)
                rows, keys, next_pos, nxt = rows[idx], keys[idx], next_pos[idx], nxt[idx]
                tokens = None if tokens is None else tokens[idx]
                cache_k, cache_v = (self._keep(c, idx, W + t) for c in (cache_k, cache_v))
            logits = self._decode(nxt, next_pos, cache_k, cache_v, W + t, keys[:, None, None, : W + t + 1])
            next_pos = next_pos + 1
        return out, ((top_vals, top_inds) if top_k else None)

    @staticmethod
    def _keep(cache, idx, filled: int):
        """The cache of rows `idx` only: the `filled` slots written so far are copied, the
        rest left unwritten (a later step writes a slot before reading it)."""
        out = cache.new_empty(cache.shape[0], len(idx), *cache.shape[2:])
        torch.index_select(cache[:, :, :, :filled], 1, idx, out=out[:, :, :, :filled])
        return out

    def _suppress_bias(self, suppress, eos: int, device):
        """The suppressed ids (never EOS) as an additive bias on the scores: -inf or 0."""
        bias = torch.zeros(self.t.wte.weight.shape[0], device=device)
        bias[[s for s in suppress if s != eos]] = -math.inf
        return bias

    def _continuous(self, input_ids, attention_mask, max_new_tokens, eos, suppress, temperature, top_k, generator):
        """Continuous batching: `slots` rows decode at once; a row that finishes hands its
        slot to the next waiting request, so short answers never wait for the batch's longest
        one. Each slot writes its K/V at its own position; attention reads up to the furthest
        slot under each slot's key mask. Requests are admitted (one prefill for all the slots
        freed) once an eighth of the slots are free; after the last admission the slots drain
        and finished ones are compacted away as in `generate`."""
        device, dtype = input_ids.device, self.t.wte.weight.dtype
        B, W = input_ids.shape
        N, S = W + max_new_tokens, self.slots
        # zeros, not empty: a masked key has weight 0, and 0 x NaN from uninitialised memory is NaN
        cache_k = torch.zeros(self.n_layer, S, self.n_head, N, self.head_dim, dtype=dtype, device=device)
        cache_v = torch.zeros_like(cache_k)
        keys = torch.zeros(S, N, dtype=torch.bool, device=device)
        keys[:, 0] = True  # an empty slot attends to something (its output is unused)
        row = torch.zeros(S, dtype=torch.long, device=device)  # the request each slot holds
        made = torch.zeros(S, dtype=torch.long, device=device)  # tokens generated by that request
        next_pos = torch.zeros(S, dtype=torch.long, device=device)
        logits = torch.zeros(S, self.t.wte.weight.shape[0], dtype=dtype, device=device)
        active = torch.zeros(S, dtype=torch.bool, device=device)
        out = torch.full((B, max_new_tokens), eos, dtype=torch.long, device=device)
        top_vals = torch.zeros(B, max_new_tokens, max(top_k, 1), device=device)
        top_inds = torch.zeros(B, max_new_tokens, max(top_k, 1), dtype=torch.long, device=device)
        bias = self._suppress_bias(suppress, eos, device)
        admitted = 0

        def admit(free):
            nonlocal admitted
            free = free[: B - admitted]
            n = len(free)
            ids, am = input_ids[admitted : admitted + n], attention_mask[admitted : admitted + n]
            pos, mask = prompt_inputs(am)
            ck = torch.empty(self.n_layer, n, self.n_head, W, self.head_dim, dtype=dtype, device=device)
            cv = torch.empty_like(ck)
            logits[free] = self._step(ids, pos, ck, cv, 0, mask)
            cache_k[:, free, :, :W], cache_v[:, free, :, :W] = ck, cv
            keys[free] = False
            keys[free, :W] = am
            row[free] = torch.arange(admitted, admitted + n, device=device)
            made[free], next_pos[free], active[free] = 0, pos[:, -1] + 1, True
            admitted += n

        admit(torch.arange(S, device=device))
        while bool(active.any()):
            a = active.nonzero().squeeze(1)
            scores = logits[a].float() + bias
            nxt, top = choose(scores, temperature, generator, top_k)
            r, t = row[a], made[a]
            if top_k:
                top_vals[r, t], top_inds[r, t] = top
            out[r, t] = nxt
            made[a] += 1
            going = (nxt != eos) & (made[a] < max_new_tokens)
            active[a[~going]] = False
            cont = a[going]
            if len(cont):
                write = torch.full((len(row),), N - 1, dtype=torch.long, device=device)  # idle slots: the last cell
                write[cont] = W + made[cont] - 1
                keys[cont, write[cont]] = True
                ids = torch.full((len(row),), eos, dtype=torch.long, device=device)
                ids[cont] = nxt[going]
                end = W + int(made[active].max())
                step = self._step(ids[:, None], next_pos[:, None], cache_k, cache_v, write,
                                  keys[:, None, None, :end], end=end)
                logits[cont] = step[cont]
                next_pos[cont] += 1
            free = (~active).nonzero().squeeze(1)
            if admitted < B and len(free) >= max(1, min(len(row) // 8, B - admitted)):
                admit(free)
            elif admitted == B and 0 < len(cont) <= self.compact_below * len(row):
                # draining: drop the finished slots
                keep = active.nonzero().squeeze(1)
                cache_k, cache_v = cache_k.index_select(1, keep), cache_v.index_select(1, keep)
                keys, row, made, next_pos, logits, active = (x[keep] for x in (keys, row, made, next_pos, logits, active))
        return out, ((top_vals, top_inds) if top_k else None)


class StaticDecode:
    """Greedy decoding of one batch shape in static buffers, so that each step can be captured
    as a CUDA graph and replayed (`capture=True`, CUDA only) or run eagerly (`capture=False`:
    the same computation anywhere, which is how the tests check it on CPU).

    Step t's graph feeds token t-1 at its position and attends over the cache slots [0, W + t):
    the filled prefix only, where one graph for all steps would read the whole padded cache
    every step. Graphs share one memory pool and are replayed in the order they were captured.
    A batch without padding (`dense`) needs no mask: the prompt's attention uses the flash
    kernel and the decode steps skip the masking. Every row runs to the last step; after a row's EOS its tokens are filler, as in
    `Engine.generate`. Decoding stops early, checked every `check_every` steps, once every row
    has finished.
    """

    check_every = 16

    def __init__(self, engine: Engine, B: int, W: int, T: int, eos: int, suppress: tuple, top_k: int, dense: bool,
                 *, device, capture: bool):
        if capture and torch.device(device).type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        e = self.e = engine
        self.key = (B, W, T, eos, tuple(suppress), top_k, dense)
        self.W, self.T, self.eos, self.top_k, self.dense = W, T, eos, top_k, dense
        dtype = e.t.wte.weight.dtype
        kw = dict(device=device)
        self.ids = torch.zeros(B, W, dtype=torch.long, **kw)
        self.am = torch.ones(B, W, dtype=torch.bool, **kw)
        self.cache_k = torch.zeros(e.n_layer, B, e.n_head, W + T, e.head_dim, dtype=dtype, **kw)
        self.cache_v = torch.zeros_like(self.cache_k)
        self.keys = torch.zeros(B, W + T, dtype=torch.bool, **kw)
        self.nxt = torch.zeros(B, dtype=torch.long, **kw)
        self.pos = torch.zeros(B, dtype=torch.long, **kw)
        self.done = torch.zeros(B, dtype=torch.bool, **kw)
        self.out = torch.full((B, T), eos, dtype=torch.long, **kw)
        self.top_vals = torch.zeros(B, T, max(top_k, 1), **kw)
        self.top_inds = torch.zeros(B, T, max(top_k, 1), dtype=torch.long, **kw)
        # suppressed ids as an additive bias: a fixed tensor, nothing copied from the host per step
        self.bias = e._suppress_bias(suppress, eos, device)
        self.graphs = None
        if capture:
            self._capture()

    @torch.no_grad()
    def _capture(self):
        # run every step once first, on a side stream: lazy kernel and workspace set-up must not
        # happen inside a capture
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._prefill()
            for t in range(1, self.T):
                self._decode(t)
        torch.cuda.current_stream().wait_stream(side)
        pool, self.graphs = torch.cuda.graph_pool_handle(), []
        for t in range(1, self.T):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                self._decode(t)
            self.graphs.append(g)

    def _select(self, t: int, logits):
        scores = logits.float() + self.bias
        nxt = scores.argmax(-1)
        if self.top_k:
            self.top_vals[:, t], self.top_inds[:, t] = scores.log_softmax(-1).topk(self.top_k, dim=-1)
        self.out[:, t] = nxt
        self.nxt.copy_(nxt)
        self.done |= nxt == self.eos
        if not self.dense:
            self.keys[:, self.W + t] = True

    def _prefill(self):
        W, am = self.W, self.am
        pos, mask = prompt_inputs(am)
        if self.dense:
            mask = None  # no padding: the flash kernel's own causal mask
        else:
            self.keys.zero_()
            self.keys[:, :W] = am
        logits = self.e.forward(self.ids, pos, self.cache_k, self.cache_v, 0, mask)
        self.pos.copy_(pos[:, -1] + 1)
        self.out.fill_(self.eos)
        self.top_vals.zero_()
        self.done.zero_()
        self._select(0, logits)

    def _decode(self, t: int):
        end = self.W + t
        mask = None if self.dense else self.keys[:, None, None, :end]
        logits = self.e.forward(self.nxt[:, None], self.pos[:, None], self.cache_k, self.cache_v, end - 1, mask)
        self.pos += 1
        self._select(t, logits)

    @torch.no_grad()
    def run(self, input_ids, attention_mask):
        """Decode one batch of this shape: (new token ids [B, T], (log-probs, ids) or None)."""
        self.ids.copy_(input_ids)
        self.am.copy_(attention_mask)
        self._prefill()
        for t in range(1, self.T):
            if self.graphs is None:
                self._decode(t)
            else:
                self.graphs[t - 1].replay()
            if t % self.check_every == 0 and bool(self.done.all()):
                break
        tops = (self.top_vals.clone(), self.top_inds.clone()) if self.top_k else None
        return self.out.clone(), tops
