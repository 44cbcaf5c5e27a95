"""Serving benchmark, measured side by side in one process (ratios, not timed tests).

    python -m experiments.bench.serving                 # CPU, the shipped teacher
    python -m experiments.bench.serving --device cuda   # the same on a GPU (skipped without one)

1. Gateway exchanges per second (the engine, a whole tick per teacher call, behind the
   `full` defense stack) against naive per-request `model.generate` on the same teacher and
   the same prompts.
2. Defense-stack overhead per exchange: `full` against the empty stack, same traffic.
3. The machine's bound on the gateway (a roofline, measured in the same process): every new
   token must read its request's whole K/V cache and do the weights' multiply-adds once, so
   an exchange costs at least max(cache bytes / memory bandwidth, FLOPs / matmul throughput).
   Set against the naive rate, that is the largest ratio this teacher can show on this machine.
"""

from __future__ import annotations

import argparse
import random
import time

import sim  # noqa: F401  (offline switches)
import torch


def build(defense: str, threads: int):
    from hydra import compose, initialize_config_dir

    from sim.runner import ROOT, World

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("run", overrides=[f"defense={defense}", "users=none"])
    torch.set_num_threads(threads)
    return cfg, World(cfg)


def traffic(world, n: int, accounts: int, seed: int = 0):
    """`n` chain-of-thought questions spread over `accounts` paid accounts."""
    from sim.accounts import Network

    net, rng = Network(seed), random.Random(seed)
    accs = [net.account("paid", 0) for _ in range(accounts)]
    prompts = [world.suite.sample(rng).request(True) for _ in range(n)]
    return accs, prompts


def gateway_rate(teacher, world, cfg, accs, prompts, per_tick: int) -> tuple[float, list]:
    """Served exchanges per second, and the served exchanges."""
    from sim.gateway import Gateway

    gw = Gateway(teacher, world.stack, seed=0, **dict(cfg.gateway))
    for a in accs:
        gw.open_account(a)
    # start a day in, when every account's identity check has cleared (the `identity` friction)
    served, t0 = [], time.perf_counter()
    for tick, b in enumerate(range(0, len(prompts), per_tick), start=24 * 60 // int(cfg.clock.tick_minutes)):
        batch = [(accs[(b + i) % len(accs)], p) for i, p in enumerate(prompts[b : b + per_tick])]
        served += [e for e in gw.serve(tick, batch) if e.status == "served"]
        if (tick + 1) % gw.observe_every == 0:
            gw.observe(tick)
    return len(served) / (time.perf_counter() - t0), served


def token_lengths(teacher, served) -> list[tuple[int, int]]:
    """(prompt tokens, new tokens) of each served exchange; the EOS is a generated token too."""
    return [(len(teacher.tok.request_ids(e.request.prompt)), len(teacher.tok.encode(e.raw.text)) + e.raw.finished)
            for e in served]


def roofline(teacher, lengths) -> dict:
    """The fastest this machine could serve these exchanges: per new token, the K/V cache of
    its context is read once (2 x layers x width x 4 bytes per position) and each weight
    matrix is applied once (2 FLOPs per weight). Bandwidth from a large copy, throughput from
    a matmul of the teacher's widest shape at a tick's batch, both measured here."""
    cfg = teacher.model.config
    per_position = 2 * cfg.n_layer * cfg.n_embd * 4
    cache_bytes = sum(per_position * (p * r + r * (r - 1) / 2) for p, r in lengths) / len(lengths)
    weights = sum(m.weight.numel() for m in teacher.model.modules() if type(m).__name__ == "Conv1D")
    flops = 2 * (weights + cfg.n_embd * cfg.vocab_size) * sum(r for _, r in lengths) / len(lengths)
    src = torch.ones(64 * 2**20 // 4)  # 64 MiB: twice the L3 cache
    dst = torch.empty_like(src)
    dst.copy_(src)
    t0 = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    bandwidth = 10 * 2 * src.numel() * 4 / (time.perf_counter() - t0)  # bytes read + written
    a, w = torch.randn(512, cfg.n_embd), torch.randn(cfg.n_embd, 4 * cfg.n_embd)
    a @ w
    t0 = time.perf_counter()
    for _ in range(50):
        a @ w
    matmul = 50 * 2 * a.shape[0] * w.numel() / (time.perf_counter() - t0)
    return {"cache_bytes": cache_bytes, "flops": flops, "bandwidth": bandwidth, "matmul": matmul,
            "rate": 1 / max(cache_bytes / bandwidth, flops / matmul)}


def naive_rate(teacher, prompts, max_new_tokens: int) -> float:
    """One `model.generate` call per request, as a per-request API server would."""
    model, tok = teacher.model, teacher.tok
    t0 = time.perf_counter()
    for p in prompts:
        ids = torch.tensor([tok.request_ids(p)], device=model.device)
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                       do_sample=False, pad_token_id=teacher.pad, eos_token_id=teacher.eos,
                       suppress_tokens=[teacher.pad, teacher.bos, teacher.sep])
    return len(prompts) / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exchanges", type=int, default=2048, help="served through the gateway")
    ap.add_argument("--naive", type=int, default=64, help="served one generate call each")
    ap.add_argument("--per-tick", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3, help="runs of each arm, taking turns; medians reported")
    ap.add_argument("--slots", type=int, default=0, help="continuous batching over this many rows (0: static)")
    ap.add_argument("--workers", type=int, default=None,
                    help="engine batches decoded on this many threads at once (default: one per thread)")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: the GPU serving benchmark is skipped")
        return
    from teachers import SHIPPED
    from teachers.lm import CharLM

    cfg, full = build("full", args.threads)
    _, none = build("none", args.threads)
    teacher = CharLM.load(SHIPPED)
    teacher.slots, teacher.workers = args.slots, args.workers
    teacher.model.to(args.device)
    accs, prompts = traffic(full, args.exchanges, accounts=max(1, args.exchanges // 4))
    max_new = int(cfg.gateway.max_new_tokens)
    teacher.generate(prompts[:8], max_new_tokens=max_new)  # warm-up
    # full, none and naive take turns, `reps` times each, and each reports its median: one
    # noisy run (another process, a frequency change) then moves neither the ratio nor the
    # overhead, and a slow drift of the machine moves all three arms alike
    fulls, nones, naives = [], [], []
    for _ in range(args.reps):
        fulls.append(gateway_rate(teacher, full, cfg, accs, prompts, args.per_tick))
        nones.append(gateway_rate(teacher, none, cfg, accs, prompts, args.per_tick))
        naives.append(naive_rate(teacher, prompts[: args.naive], max_new))
    rate_full, served_full = sorted(fulls, key=lambda r: r[0])[len(fulls) // 2]
    rate_none, served_none = sorted(nones, key=lambda r: r[0])[len(nones) // 2]
    rate_naive = sorted(naives)[len(naives) // 2]
    lengths = token_lengths(teacher, served_full)
    bound = roofline(teacher, lengths) if args.device == "cpu" else None
    print(f"device {args.device}, {torch.get_num_threads()} threads ({teacher.n_workers} engine workers), "
          f"teacher {teacher.num_parameters():,} parameters, "
          f"max {max_new} new tokens, chain-of-thought questions")
    print(f"gateway, defense=full : {rate_full:9.1f} exchanges/s ({len(served_full)} served of {len(prompts)}, "
          f"{args.per_tick} a tick; median of {' '.join(f'{r[0]:.1f}' for r in fulls)})")
    print(f"gateway, defense=none : {rate_none:9.1f} exchanges/s ({len(served_none)} served; median of "
          f"{' '.join(f'{r[0]:.1f}' for r in nones)})")
    print(f"naive per-request generate: {rate_naive:6.1f} exchanges/s ({args.naive} requests; median of "
          f"{' '.join(f'{r:.1f}' for r in naives)})")
    print(f"ratio gateway(full) / naive: {rate_full / rate_naive:.1f}x")
    print(f"defense-stack overhead (full - none): {1e3 * (1 / rate_full - 1 / rate_none):.3f} ms per exchange")
    if bound:
        p, r = (sum(x) / len(lengths) for x in zip(*lengths))
        print(f"roofline: {p:.0f} prompt + {r:.0f} new tokens an exchange read {bound['cache_bytes'] / 1e6:.2f} MB of "
              f"K/V cache and do {bound['flops'] / 1e6:.1f} MFLOP of weights; at {bound['bandwidth'] / 1e9:.1f} GB/s "
              f"copy bandwidth and {bound['matmul'] / 1e9:.0f} GFLOP/s matmul: at most {bound['rate']:.0f} exchanges/s")
        print(f"ratio bound / naive: {bound['rate'] / rate_naive:.1f}x; the gateway runs at "
              f"{rate_full / bound['rate']:.0%} of the bound")


if __name__ == "__main__":
    main()
