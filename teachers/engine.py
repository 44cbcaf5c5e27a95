"""A batched serving engine for the built-in GPT-2 teacher: one tick's requests in one call.

What Hugging Face `generate` spends per step on a small model is Python: cache objects,
processor plumbing, stopping criteria, for a few microseconds of arithmetic. This engine runs
the same GPT-2 computation (the model's own weights, the same position ids and masks) as a
tight decode loop:

- a KV cache pre-allocated for the whole batch ([layers, batch, heads, prompt + new, head
  dim]), written in place; mixed prompt lengths by left padding;
- compaction: rows that finished (EOS) leave the batch, so they stop costing work. Checked
  every step; once at most `compact_below` of the rows are live, the filled part of the cache
  and the buffers are copied for the live rows only. The copy costs about as much as a few
  steps of the rows it removes, so it waits for a share of the rows rather than following
  every EOS;
- continuous batching (`slots`): a finished row hands its slot to the next waiting request;
- logits processors with the Hugging Face contract (`processor(input_ids, scores)`), the
  suppressed special ids, greedy or sampled decoding (temperature), and per-token top-k
  log-probabilities of the processed scores, as an API exposes them;
- the GPT-2 block written once (`_block`), for a prompt, a decode step, continuous batching
  and the captured CUDA-graph loop alike, with the fewest tensor operations: at a worker's
  batch every operation is tens of microseconds, so the count of operations and the memory
  they touch decide the step. 2-D activations, biases added inside the GEMMs as HF's
  `Conv1D` adds them, residuals added in place, parameters looked up once, gelu_new in its
  sigmoid form on CPU, attention through the engine's chosen kernel; a prompt's last block
  runs for its last position only, the one whose logits are read;
- device-agnostic (CPU or CUDA). On CUDA, `cuda_graphs=True` captures the decode loop of a
  batch shape once (`StaticDecode`: one graph per step, each attending over only the cache
  prefix filled so far) and replays it for every later batch of that shape: a replayed graph
  launches the whole step at once, without Python, and at large batches reading the cache,
  not launching kernels, is most of a step. The captured loop keeps every row to the end (no
  compaction) and runs neither Python logits processors nor sampling, which fall back to the
  eager loop.

The measurements behind these choices are in docs/performance.md ("The serving engine").

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
    activations are fresh pages, each a fault that the kernel zeroes. With blocks below
    `mmap_below` taken from the heap and up to `trim_above` of free heap kept, a call reuses
    the pages of the one before and takes almost no faults. (The usual CPU advice for PyTorch,
    preloading jemalloc or tcmalloc, does the same from outside.)
    Process-wide; a no-op returning False where the C library has no `mallopt` (macOS, musl)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (AttributeError, OSError, TypeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_below)) and bool(mallopt(M_TRIM_THRESHOLD, trim_above))


class Engine:
    DECODE_ATTENTION = ("auto", "matmul", "sdpa", "triton")

    def __init__(self, model, *, cuda_graphs: bool = False, decode_attention: str = "auto", slots: int = 0,
                 compact_below: float = 0.9):
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
        if not 0 < compact_below <= 1:
            raise ValueError(f"compact_below={compact_below} must be in (0, 1]")
        self.compact_below = compact_below  # compact once at most this share of the rows is live
        if slots < 0:
            raise ValueError(f"slots={slots} must be >= 0 (0: one static batch per call)")
        self.slots = slots
        if decode_attention not in self.DECODE_ATTENTION:
            raise ValueError(f"decode_attention={decode_attention!r}: choose one of {self.DECODE_ATTENTION}")
        self.cuda_graphs = cuda_graphs
        self._attend_one = getattr(self, f"_attend_{decode_attention}")
        self._triton = importlib.util.find_spec("triton") is not None  # looked up once, not per step
        self._static = None  # the last batch shape's captured decode: one shape's cache at a time
        # each block's parameters as plain tensors, looked up once rather than through module
        # attributes every step (the model's own tensors, not copies)
        self._blocks = [((b.ln_1.weight, b.ln_1.bias), b.attn.c_attn.weight, b.attn.c_attn.bias,
                         b.attn.c_proj.weight, b.attn.c_proj.bias, (b.ln_2.weight, b.ln_2.bias),
                         b.mlp.c_fc.weight, b.mlp.c_fc.bias, b.mlp.c_proj.weight, b.mlp.c_proj.bias)
                        for b in t.h]
        self._ln_f = (t.ln_f.weight, t.ln_f.bias)
        if t.wte.weight.device.type == "cpu":
            keep_freed_memory()

    # -- the GPT-2 computation (HF `GPT2Block`: pre-LN attention and MLP, tied head)

    def forward(self, ids, pos, cache_k, cache_v, start, mask, end: int | None = None):
        """Tokens `ids` [B, T] at positions `pos` [B, T], their keys and values written to the
        cache at [start, start + T); attention over the cache [0, start + T) under `mask`
        [B, 1, T, start + T] (True = may attend; None: no padding anywhere, causal). Returns
        the last position's logits [B, vocab]. `start` may instead be a tensor [B] of each
        row's own cache slot for its one token (continuous batching), with attention over
        [0, `end`). Every path runs through here: a prompt (T > 1), a decode step (T = 1) and
        the loop that CUDA graphs capture."""
        B, T = ids.shape
        h = (self.t.wte.weight[ids] + self.t.wpe.weight[pos]).view(B * T, self.n_embd)
        rows = torch.arange(B, device=ids.device) if isinstance(start, torch.Tensor) else None
        if rows is None:
            end = start + T
        for i in range(self.n_layer):
            h = self._block(i, h, B, T, cache_k[i], cache_v[i], start, rows, end, mask,
                            last=T > 1 and i == self.n_layer - 1)
        return F.layer_norm(h, (self.n_embd,), *self._ln_f, self.eps) @ self.t.wte.weight.T

    def _block(self, i, h, B: int, T: int, cache_k, cache_v, start, rows, end: int, mask, last: bool):
        """Block `i` on the activations h [B * T, E] of T positions in each of B rows (2-D, so
        each weight product is one `addmm`, its bias added inside the GEMM as HF's `Conv1D`
        adds it). The positions' keys and values go to this layer's cache `cache_k`, `cache_v`
        [B, H, N, D]: at [start, start + T) of every row, or, with `rows`, each row's one token
        at its own slot `start[row]`. Attention reads the cache [0, end) under `mask`.

        `last`: a prompt's last block. Every position's keys and values are kept, but only the
        last position's output is read (the logits), so attention, projection and MLP run for
        it alone and h [B, E] comes back, else h [B * T, E]."""
        ln_1, w_attn, b_attn, w_proj, b_proj, ln_2, w_fc, b_fc, w_out, b_out = self._blocks[i]
        E = self.n_embd
        qkv = torch.addmm(b_attn, F.layer_norm(h, (E,), *ln_1, self.eps), w_attn)
        q, k, v = qkv.view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # each [B, H, T, D]
        if rows is None:
            cache_k[:, :, start : start + T] = k
            cache_v[:, :, start : start + T] = v
        else:
            cache_k[rows, :, start] = k[:, :, 0]
            cache_v[rows, :, start] = v[:, :, 0]
        if last:
            h, q, T = h.view(B, T, E)[:, -1], q[:, :, -1:], 1
            mask = None if mask is None else mask[:, :, -1:]
        o = self._attend(q, cache_k[:, :, :end], cache_v[:, :, :end], mask)
        h = torch.addmm(b_proj, o.transpose(1, 2).reshape(B * T, E), w_proj).add_(h)
        m = self._gelu(torch.addmm(b_fc, F.layer_norm(h, (E,), *ln_2, self.eps), w_fc))
        return torch.addmm(b_out, m, w_out).add_(h)

    @staticmethod
    def _gelu(x):
        """gelu_new (HF's tanh approximation), in place on a fresh activation. On CPU in its
        sigmoid form, 0.5 x (1 + tanh z) = x sigmoid(2z) with z = sqrt(2/pi) (x + 0.044715 x^3),
        because there torch's tanh costs about three times its sigmoid: these five passes cost
        less than the one of `F.gelu(approximate="tanh")`, and the two differ by float rounding
        only. On CUDA that one fused pass is the cheaper."""
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
        logits = self.forward(input_ids, pos, cache_k, cache_v, 0, mask)
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
            if n_live <= self.compact_below * len(live):
                idx = live.nonzero().squeeze(1)
                rows, keys, next_pos, nxt = rows[idx], keys[idx], next_pos[idx], nxt[idx]
                tokens = None if tokens is None else tokens[idx]
                cache_k, cache_v = (self._keep(c, idx, W + t) for c in (cache_k, cache_v))
            logits = self.forward(nxt[:, None], next_pos[:, None], cache_k, cache_v, W + t,
                                  keys[:, None, None, : W + t + 1])
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
            logits[free] = self.forward(ids, pos, ck, cv, 0, mask)
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
                step = self.forward(ids[:, None], next_pos[:, None], cache_k, cache_v, write,
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
    kernel and the decode steps skip the masking. Every row runs to the last step; after a
    row's EOS its tokens are filler, as in `Engine.generate`. Decoding stops early, checked
    every `check_every` steps, once every row has finished.
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
