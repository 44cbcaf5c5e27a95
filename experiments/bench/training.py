"""Student training throughput, measured side by side in one process (a ratio, not a timed test).

    python -m experiments.bench.training

The distillation module (`students.distill.train`: Lightning, the recipe's weighted loss)
against a plain PyTorch loop (AdamW, the model's own loss) on the same student shape, the
same exchanges and the same number of steps. A ratio near 1 means the framework costs
nothing measurable.
"""

from __future__ import annotations

import argparse
import random
import time

import sim  # noqa: F401  (offline switches)
import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from sim.quiet import quiet
    from sim.tasks import Suite
    from sim.tasks.arith import Arith
    from sim.tasks.kb import Kb
    from sim.tasks.table import Table
    from sim.tasks.tool import Tool
    from sim.tasks.trace import Trace
    from students.distill import Recipe, collate, train
    from students.scratch import Scratch

    quiet()
    suite = Suite({"arith": Arith(), "trace": Trace(), "tool": Tool(), "table": Table(), "kb": Kb()}, eval_per_cell=1)
    rng = random.Random(0)
    pairs = [(p.request(True), p.response(True)) for p in (suite.sample(rng) for _ in range(4096))]
    spec = Scratch()
    recipe = Recipe()

    a = spec.build(seed=0)
    examples = [recipe.example(a.tok, r, s) for r, s in pairs]
    stats = train(a.model, examples, recipe, steps=args.steps, batch_size=spec.batch_size, lr=spec.lr, seed=0)
    lightning_tps = stats["tokens_per_s"]

    b = spec.build(seed=0)
    model = b.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(examples, batch_size=spec.batch_size, shuffle=True, collate_fn=collate,
                                         generator=g)
    tokens, steps, t0 = 0, 0, time.perf_counter()
    while steps < args.steps:
        for batch in loader:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
            opt.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tokens += int(batch["attention_mask"].sum())
            steps += 1
            if steps == args.steps:
                break
    plain_tps = tokens / (time.perf_counter() - t0)
    print(f"student {a.num_parameters():,} parameters, {args.steps} steps of {spec.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"students.distill (Lightning): {lightning_tps:9,.0f} tokens/s")
    print(f"plain PyTorch loop          : {plain_tps:9,.0f} tokens/s")
    print(f"ratio Lightning / plain: {lightning_tps / plain_tps:.2f}")


if __name__ == "__main__":
    main()
