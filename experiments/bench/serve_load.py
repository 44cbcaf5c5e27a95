"""The OpenAI-compatible endpoint under load, against the in-process gateway, in one process.

    python -m experiments.bench.serve_load [--requests 512 --clients 1 8 64 256 --threads 2]

The shipped teacher behind `defense=full` (open signup, one key per client, limits raised so
that the stack decides but does not refuse: this measures serving, not the defenses' verdicts).
For each number of concurrent clients it sends `--requests` explained questions over loopback
HTTP and prints throughput (requests/s) and p50/p99 latency; beside it, the same prompts
served by the gateway in-process, in batches of the same size, and the ratio of the two.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import threading
import time

import sim  # noqa: F401  (offline switches)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64, 256])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import httpx
    import torch
    import uvicorn
    from hydra import compose, initialize_config_dir

    from experiments.serve import Server, build_app
    from sim.records import ROOT
    from sim.quiet import quiet

    torch.set_num_threads(args.threads)
    quiet()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("serve", overrides=["defense=full", "serve.open_signup=true", f"serve.port={port}",
                                          "defense.rate_limit.per_minute={account:1000,ip:100000,subnet:100000,payment:1000,cluster:100000}",
                                          "defense.rate_limit.per_day={account:100000,ip:10000000,subnet:10000000,payment:100000,cluster:10000000}",
                                          "defense.info_budget.bits=1e9", "defense.identity.levels.free.false_reject=0.0", "serve.tick_seconds=60",
                                          "serve.batch_seconds=0.01"])
    server = Server(cfg, ROOT / "runs" / "bench_serve")
    server.load()
    rng = random.Random(0)
    prompts = [server.world.suite.sample(rng).request(True) for _ in range(args.requests)]

    uv = uvicorn.Server(uvicorn.Config(build_app(server), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=uv.run, daemon=True).start()
    while not uv.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"

    async def load(n_clients: int) -> tuple[float, list[float]]:
        todo = list(enumerate(prompts))
        lat: list[float] = []

        async def worker(c: int, http):
            while todo:
                _, p = todo.pop()
                t = time.perf_counter()
                r = await http.post(url, json={"messages": [{"role": "user", "content": p}]},
                                    headers={"Authorization": f"Bearer sk-bench-{n_clients}-{c}"})
                r.raise_for_status()
                lat.append(time.perf_counter() - t)

        limits = httpx.Limits(max_connections=n_clients + 8, max_keepalive_connections=n_clients + 8)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(c, http) for c in range(n_clients)))
            return len(prompts) / (time.perf_counter() - t0), lat

    def in_process(batch: int) -> float:
        gw = server.gateway
        accounts = [k.account for k in server.keys.values()][:batch] or [None]
        t0 = time.perf_counter()
        for i in range(0, len(prompts), batch):
            chunk = prompts[i:i + batch]
            gw.serve(gw.ctx.tick, [(accounts[j % len(accounts)], p) for j, p in enumerate(chunk)])
        return len(prompts) / (time.perf_counter() - t0)

    print(f"teacher {server.card['hash']}, defense=full, {args.requests} explained questions, {args.threads} threads\n")
    print("| clients | HTTP req/s | p50 latency s | p99 latency s | in-process req/s (same batch) | ratio |")
    print("|--:|--:|--:|--:|--:|--:|")
    for n in args.clients:
        qps, lat = asyncio.run(load(n))
        with server.lock:
            base = in_process(n)
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"| {n} | {qps:.1f} | {statistics.median(lat):.3f} | {p99:.3f} | {base:.1f} | {qps / base:.2f} |", flush=True)
    uv.should_exit = True


if __name__ == "__main__":
    main()
