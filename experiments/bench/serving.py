"""Serving benchmark, measured side by side in one process (ratios, not timed tests).

    python -m experiments.bench.serving                 # CPU, the shipped teacher
    python -m experiments.bench.serving --device cuda   # the same on a GPU (skipped without one)

1. Gateway exchanges per second (the engine, a whole tick per teacher call, behind the
   `full` defense stack) against naive per-request `model.generate` on the same teacher and
   the same prompts.
2. Defense-stack overhead per exchange: `full` against the empty stack, same traffic.
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


def gateway_rate(teacher, world, cfg, accs, prompts, per_tick: int) -> tuple[float, int]:
    from sim.gateway import Gateway

    gw = Gateway(teacher, world.stack, seed=0, **dict(cfg.gateway))
    for a in accs:
        gw.open_account(a)
    # start a day in, when every account's identity check has cleared (the `identity` friction)
    served, t0 = 0, time.perf_counter()
    for tick, b in enumerate(range(0, len(prompts), per_tick), start=24 * 60 // int(cfg.clock.tick_minutes)):
        batch = [(accs[(b + i) % len(accs)], p) for i, p in enumerate(prompts[b : b + per_tick])]
        served += sum(e.status == "served" for e in gw.serve(tick, batch))
        if (tick + 1) % gw.observe_every == 0:
            gw.observe(tick)
    return served / (time.perf_counter() - t0), served


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
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: the GPU serving benchmark is skipped")
        return
    from teachers import SHIPPED
    from teachers.lm import CharLM

    cfg, full = build("full", args.threads)
    _, none = build("none", args.threads)
    teacher = CharLM.load(SHIPPED)
    teacher.model.to(args.device)
    accs, prompts = traffic(full, args.exchanges, accounts=max(1, args.exchanges // 4))
    max_new = int(cfg.gateway.max_new_tokens)
    teacher.generate(prompts[:8], max_new_tokens=max_new)  # warm-up
    rate_full, served_full = gateway_rate(teacher, full, cfg, accs, prompts, args.per_tick)
    rate_none, served_none = gateway_rate(teacher, none, cfg, accs, prompts, args.per_tick)
    rate_naive = naive_rate(teacher, prompts[: args.naive], max_new)
    print(f"device {args.device}, {torch.get_num_threads()} threads, teacher {teacher.num_parameters():,} parameters, "
          f"max {max_new} new tokens, chain-of-thought questions")
    print(f"gateway, defense=full : {rate_full:9.1f} exchanges/s ({served_full} served of {len(prompts)}, "
          f"{args.per_tick} a tick)")
    print(f"gateway, defense=none : {rate_none:9.1f} exchanges/s ({served_none} served)")
    print(f"naive per-request generate: {rate_naive:6.1f} exchanges/s ({args.naive} requests)")
    print(f"ratio gateway(full) / naive: {rate_full / rate_naive:.1f}x")
    print(f"defense-stack overhead (full - none): {1e3 * (1 / rate_full - 1 / rate_none):.3f} ms per exchange")


if __name__ == "__main__":
    main()
