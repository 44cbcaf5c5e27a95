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
    ap.add_argument("--reps", type=int, default=3, help="alternating runs of each; medians reported")
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

    examples = [recipe.example(spec.build(seed=0).tok, r, s) for r, s in pairs]

    def lightning() -> float:
        a = spec.build(seed=0)
        return train(a.model, examples, recipe, steps=args.steps, batch_size=spec.batch_size, lr=spec.lr,
                     seed=0)["tokens_per_s"]

    def plain() -> float:
        model = spec.build(seed=0).model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
        g = torch.Generator().manual_seed(0)
        loader = torch.utils.data.DataLoader(examples, batch_size=spec.batch_size, shuffle=True, collate_fn=collate,
                                             generator=g)
        tokens, steps, t0 = 0, 0, time.perf_counter()
        while steps < args.steps:
            for batch in loader:
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            labels=batch["labels"])
                opt.zero_grad()
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                tokens += int(batch["attention_mask"].sum())
                steps += 1
                if steps == args.steps:
                    break
        return tokens / (time.perf_counter() - t0)

    # alternating runs, medians: one noisy run on a shared machine moves neither number
    runs = [(lightning(), plain()) for _ in range(args.reps)]
    lightning_tps = sorted(r[0] for r in runs)[len(runs) // 2]
    plain_tps = sorted(r[1] for r in runs)[len(runs) // 2]
    print(f"student {spec.build(seed=0).num_parameters():,} parameters, {args.steps} steps of {spec.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.reps} alternating runs each")
    print(f"students.distill (Lightning): {lightning_tps:9,.0f} tokens/s ({' '.join(f'{r[0]:,.0f}' for r in runs)})")
    print(f"plain PyTorch loop          : {plain_tps:9,.0f} tokens/s ({' '.join(f'{r[1]:,.0f}' for r in runs)})")
    print(f"ratio Lightning / plain: {lightning_tps / plain_tps:.2f}")


if __name__ == "__main__":
    main()
