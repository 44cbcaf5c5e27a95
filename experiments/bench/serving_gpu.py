"""GPU serving benchmark: exchanges per second of 64 new tokens from a 10M-parameter teacher,
every method measured side by side in one process (skipped cleanly without CUDA).

    python -m experiments.bench.serving_gpu
    python -m experiments.bench.serving_gpu --batch 16384 32768 --dtype bfloat16

The teacher is the built-in GPT-2 architecture at a 6-layer, 384-wide shape (10.7M parameters,
the character vocabulary, 128 positions), randomly initialised from a fixed seed: every
exchange is a 64-token prompt and exactly 64 new tokens (no stop token: EOS is suppressed, as
`min_new_tokens` does for `generate`), so throughput does not depend on what the weights say.
Rows:

- naive: one `model.generate` call per request (batch 1);
- `generate` at batch 2048, Hugging Face's own batched decoding with its KV cache;
- the engine (`teachers.engine`), eager loop;
- the engine with `cuda_graphs=True`: one captured graph per decode step, each reading only
  the filled prefix of the cache; for dense (unpadded) prompts and for mixed prompt lengths
  (left padding, 32 to 64 tokens, masked attention);
- each engine row with the decode step's attention as batched matmuls, as the Triton kernel of
  `teachers.decode_attention`, or as the fused SDPA kernels.

The decode step of a model this small is bound by reading its KV cache, so each graphed row
also prints the bytes of cache it read per second against the device-to-device copy bandwidth
measured here. Besides torch and transformers it needs only the `teachers` package and
omegaconf (which `sim.tasks` imports), so it runs on a bare GPU image with one wheel carried.
"""

from __future__ import annotations

import argparse
import time

import torch


def timed(fn, repeat: int = 1) -> float:
    """Seconds per call, after the caller's warm-up."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def copy_bandwidth(device) -> float:
    """Bytes read plus written per second by a device-to-device copy of 2 GiB."""
    x = torch.empty(2**30, dtype=torch.int16, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    s = timed(lambda: y.copy_(x), repeat=10)
    return 2 * x.numel() * x.element_size() / s


def prompts(B: int, W: int, vocab: int, device, min_len: int | None = None, seed: int = 0):
    """Random 64-token prompts over the ordinary characters; with `min_len`, lengths drawn
    from [min_len, W] and left-padded."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (B, W), generator=g)
    am = torch.ones(B, W, dtype=torch.bool)
    if min_len is not None:
        lengths = torch.randint(min_len, W + 1, (B,), generator=g)
        am = torch.arange(W)[None] >= (W - lengths)[:, None]
        ids = ids.masked_fill(~am, 0)
    return ids.to(device), am.to(device)


def sweep(B: int, config, N: int, n: int, device) -> None:
    """The Triton decode kernel alone on one layer's cache views, each (block, warps) choice."""
    import teachers.decode_attention as da
    from teachers.engine import matmul_attention

    H, D = config.n_head, config.n_embd // config.n_head
    cache = torch.randn(2, B, H, N, D, dtype=torch.bfloat16, device=device)
    q = torch.randn(B, 1, 3 * H * D, dtype=torch.bfloat16, device=device)[..., : H * D].view(B, 1, H, D).transpose(1, 2)
    k, v = cache[0, :, :, :n], cache[1, :, :, :n]
    ref = matmul_attention(q, k, v)
    read = 2 * B * H * n * D * 2
    results = []
    for block in (16, 32, 64, 128):
        for warps in (1, 2, 4, 8):
            out = da.decode_attention(q, k, v, block=block, num_warps=warps)
            err = (out.float() - ref.float()).abs().max().item()
            s = timed(lambda: da.decode_attention(q, k, v, block=block, num_warps=warps), repeat=20)
            results.append((read / s, block, warps))
            print(f"  triton decode kernel, block {block:3d}, {warps} warps: {read / s / 1e12:5.2f} TB/s of cache read "
                  f"({s * 1e6:7.1f} us, {n} keys, batch {B}); max error {err:.1e}")
    _, da.BLOCK, da.NUM_WARPS = max(results)
    s = timed(lambda: matmul_attention(q, k, v), repeat=20)
    print(f"  matmul decode attention: {read / s / 1e12:5.2f} TB/s; using block {da.BLOCK}, {da.NUM_WARPS} warps")


def profile(model, B, W, T, V, suppress, device) -> None:
    """The CUDA kernels of the eager static loop (triton decode), by total time."""
    from torch.profiler import ProfilerActivity, profile as prof

    from teachers.engine import Engine, StaticDecode

    ids, am = prompts(B, W, V, device)
    dec = StaticDecode(Engine(model, decode_attention="triton"), B, W, T, -1, suppress, 0, True, device=device,
                       capture=False)
    dec.run(ids, am)
    with prof(activities=[ProfilerActivity.CUDA]) as p:
        dec.run(ids, am)
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[16384], help="engine batch sizes")
    ap.add_argument("--hf-batch", type=int, default=2048)
    ap.add_argument("--naive", type=int, default=8, help="requests served one generate call each")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--attention", nargs="+", default=["matmul", "triton", "sdpa"], help="decode attentions to time")
    ap.add_argument("--sweep", action="store_true", help="time the Triton kernel's block and warp choices first "
                    "and use the fastest")
    ap.add_argument("--profile", action="store_true", help="print the CUDA kernels of a few decode steps")
    ap.add_argument("--graphs-only", action="store_true", help="only the engine with CUDA graphs (no generate or "
                    "eager rows)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU serving benchmark is skipped")
        return

    from teachers.engine import Engine, StaticDecode
    from teachers.vocab import BOS, EOS, PAD, SEP, build_gpt

    device, W, T = torch.device("cuda"), args.prompt, args.new
    torch.manual_seed(0)
    model = build_gpt(n_layer=6, n_embd=384, n_head=6, n_positions=W + T).to(device, getattr(torch, args.dtype)).eval()
    V = model.config.vocab_size
    n_params = sum(p.numel() for p in model.parameters())
    bw = copy_bandwidth(device)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.dtype}; teacher GPT-2 6 x 384, "
          f"{n_params:,} parameters; {W}-token prompts, {T} new tokens each; copy bandwidth {bw / 1e12:.2f} TB/s")
    rows = []

    def report(name, B, seconds, note=""):
        rate = B / seconds
        rows.append((name, rate))
        print(f"{name:54s} {rate:10,.0f} exchanges/s  (batch {B}, {seconds * 1e3:8.1f} ms){note}", flush=True)

    suppress = (PAD, BOS, SEP, EOS)  # EOS too: every exchange is exactly T new tokens
    hf = dict(max_new_tokens=T, min_new_tokens=T, do_sample=False, pad_token_id=PAD, eos_token_id=EOS,
              suppress_tokens=[PAD, BOS, SEP])
    with torch.no_grad():
        if not args.graphs_only:
            ids, am = prompts(max(args.naive, 8), W, V, device)
            model.generate(input_ids=ids[:1], attention_mask=am[:1].long(), **hf)  # warm-up
            s = timed(lambda: [model.generate(input_ids=ids[i : i + 1], attention_mask=am[i : i + 1].long(), **hf)
                               for i in range(args.naive)])
            report("naive per-request generate (batch 1)", args.naive, s)

            ids, am = prompts(args.hf_batch, W, V, device)
            model.generate(input_ids=ids[:64], attention_mask=am[:64].long(), **hf)
            s = timed(lambda: model.generate(input_ids=ids, attention_mask=am.long(), **hf))
            report(f"HF generate, batch {args.hf_batch}", args.hf_batch, s)
            n = min(256, args.hf_batch)
            hf_out = model.generate(input_ids=ids[:n], attention_mask=am[:n].long(), **hf)[:, W:]

            engine = Engine(model)
            eng_out = engine.generate(ids[:n], am[:n], max_new_tokens=T, eos=-1, suppress=suppress)[0]
            agree = (eng_out == hf_out).all(-1).float().mean().item()
            print(f"engine (eager) tokens equal to HF generate's on {agree:.0%} of {n} exchanges (bf16 kernels differ "
                  f"in rounding; greedy decoding diverges at near-ties)")
            B = args.batch[0]
            ids, am = prompts(B, W, V, device)
            for att in [a for a in args.attention if a != "sdpa"]:
                engine = Engine(model, decode_attention=att)
                engine.generate(ids[:64], am[:64], max_new_tokens=T, eos=-1, suppress=suppress)
                s = timed(lambda: engine.generate(ids, am, max_new_tokens=T, eos=-1, suppress=suppress))
                report(f"engine, eager loop, {att} decode", B, s)
                del engine
                torch.cuda.empty_cache()

        # the decode step's attention as matmuls (the engine's default), as the Triton kernel
        # (teachers.decode_attention), and as the fused SDPA kernels
        if args.sweep:
            sweep(args.batch[0], model.config, W + T, W + T * 3 // 4, device)
        runs = [(args.batch[0], mixed, att) for att in args.attention for mixed in (False, True)]
        runs += [(B, mixed, "triton") for B in args.batch[1:] for mixed in (False, True)]
        first = {}
        for B, mixed, att in runs:
            graphed = Engine(model, cuda_graphs=True, decode_attention=att)
            ids, am = prompts(B, W, V, device, min_len=W // 2 if mixed else None, seed=B)
            name = f"engine + CUDA graphs, {att} decode, {'mixed lengths' if mixed else 'dense'}"
            try:
                t0 = time.perf_counter()
                graphed.generate(ids, am, max_new_tokens=T, eos=-1, suppress=suppress)  # captures
                capture = time.perf_counter() - t0
                s = timed(lambda: graphed.generate(ids, am, max_new_tokens=T, eos=-1, suppress=suppress), repeat=3)
            except torch.OutOfMemoryError:
                print(f"{name}, batch {B}: out of memory")
                del graphed
                torch.cuda.empty_cache()
                continue
            # bytes of K and V each step reads: layers x 2 x batch x filled prefix x width
            L, E, esz = model.config.n_layer, model.config.n_embd, model.transformer.wte.weight.element_size()
            read = sum(L * 2 * B * (W + t) * E * esz for t in range(1, T))
            report(name, B, s, f"  cache read {read / s / 1e12:.2f} TB/s; capture {capture:.1f} s")
            if B == args.batch[0]:
                out = graphed.generate(ids, am, max_new_tokens=T, eos=-1, suppress=suppress)[0]
                graphed._static = None
                eager = StaticDecode(graphed, B, W, T, -1, suppress, 0, not mixed, device=device,
                                     capture=False).run(ids, am)[0]
                ref_att, ref = first.setdefault(mixed, (att, out))
                same = (out == ref).all(-1).float().mean().item()
                print(f"  graph replay gives the eager static loop's tokens: {bool(torch.equal(out, eager))}; "
                      f"same tokens as the {ref_att} decode on {same:.1%} of exchanges")
                del eager, out
            del graphed
            torch.cuda.empty_cache()
        if args.profile:
            profile(model, args.batch[0], W, T, V, suppress, device)
    best = max(r for _, r in rows)
    if not args.graphs_only:
        print(f"best engine / naive per-request generate: {best / rows[0][1]:,.0f}x; best / HF generate batch "
              f"{args.hf_batch}: {best / rows[1][1]:.1f}x")
    print(f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
