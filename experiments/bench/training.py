"""Student training throughput, measured side by side in one process (ratios, not timed tests).

    python -m experiments.bench.training [--steps 150 --threads 2 --reps 3]

On the default student shape and a harvest of the teacher's format (explained answers in its
voice, every skill, public and private cells), three numbers:

- **useful tokens/s** of `students.distill.train` (Lightning, the recipe's weighted loss,
  length-bucketed batches): non-padding tokens trained per second;
- against the **matmul bound**: the machine's own fp32 GEMM rate measured here (a 1024³
  product) divided by the student's training FLOPs per token (6 × its weights plus the
  attention scores, at the batch's mean length), the rate at which perfect kernels would
  train it;
- against a **plain PyTorch loop** (AdamW, the same loss, the same batches): what the
  framework costs.

It also prints the share of computed tokens that are padding, bucketed and as random batches,
and, with public replay mixed in as the fine-tuned student trains, the padding and useful
tokens/s of replay matched to each batch's length against replay drawn at random per batch.
"""

from __future__ import annotations

import argparse
import random
import time

import sim  # noqa: F401  (offline switches)
import torch


def gemm_flops(seconds: float = 1.0, n: int = 1024) -> float:
    """The machine's fp32 matmul rate (FLOP/s) on this many threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="alternating runs of each; medians reported")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hydra import compose, initialize_config_dir

    from sim.quiet import quiet
    from sim.runner import ROOT, World
    from sim.tasks import Voice
    from students.distill import Batches, Recipe, clip, collate, sft_loss, train
    from students.scratch import Scratch

    quiet()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("run", overrides=["tasks.eval_per_cell=1"])
    suite = World(cfg).suite
    voice = Voice(**{k: tuple(v) for k, v in cfg.teacher.voice.items()})
    rng = random.Random(0)
    pairs = [(p.request(True), p.response(True, voice, rng)) for p in (suite.sample(rng) for _ in range(4096))]
    spec = Scratch(**{k: cfg.student[k] for k in ("n_layer", "n_embd", "n_head", "n_positions", "batch_size", "lr",
                                                  "replay")})
    recipe, tok = Recipe(), spec.build(seed=0).tok
    examples = [recipe.example(tok, r, s) for r, s in pairs]
    B = spec.batch_size

    def lightning() -> tuple[float, float]:
        a = spec.build(seed=0)
        stats = train(a.model, examples, recipe, steps=args.steps, batch_size=B, lr=spec.lr, seed=0)
        return stats["tokens_per_s"], stats["padding_share"]

    def plain(batches=None) -> float:
        model = spec.build(seed=0).model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=spec.lr)
        batches = batches or iter(Batches(examples, B, seed=0))
        useful, t0 = 0, time.perf_counter()
        for _ in range(args.steps):
            batch = collate(next(batches))
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = sft_loss(logits, batch["labels"], batch["weights"])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            useful += int(batch["attention_mask"].sum())
        return useful / (time.perf_counter() - t0)

    # public replay (a quarter of each batch, as `student=finetune` trains): drawn per pool and
    # matched to the harvest batches by length rank (`Batches`), against the same number drawn
    # at random for each batch
    draw, n_replay = spec.public_data(suite), int(round(B * spec.replay))

    def replayed(rng):
        return clip(recipe.example(tok, *draw(rng)), spec.n_positions)

    def matched():
        return iter(Batches(examples, B - n_replay, seed=0, replay=replayed, n_replay=n_replay))

    def unmatched():
        rng = random.Random("unmatched")
        for b in Batches(examples, B - n_replay, seed=0):
            yield b + [replayed(rng) for _ in range(n_replay)]

    def padding_of(batches, n=200) -> float:
        useful = computed = 0
        for _ in range(n):
            lengths = [len(e["ids"]) for e in next(batches)]
            useful, computed = useful + sum(lengths), computed + max(lengths) * len(lengths)
        return 1 - useful / computed

    # alternating runs, medians: one noisy run on a shared machine moves neither number
    runs = [(*lightning(), plain(), plain(matched()), plain(unmatched())) for _ in range(args.reps)]
    light = sorted(r[0] for r in runs)[len(runs) // 2]
    plain_tps = sorted(r[2] for r in runs)[len(runs) // 2]
    padding = runs[0][1]
    shuffled = list(range(len(examples)))
    random.Random(0).shuffle(shuffled)
    computed = useful = 0
    for i in range(0, len(shuffled) - B + 1, B):
        lengths = [len(examples[j]["ids"]) for j in shuffled[i : i + B]]
        computed, useful = computed + max(lengths) * B, useful + sum(lengths)
    model = spec.build(seed=0).model
    weights = sum(p.numel() for n, p in model.named_parameters() if "wte" not in n and "wpe" not in n)
    weights += model.config.vocab_size * model.config.n_embd  # the tied output projection
    mean_len = sum(len(e["ids"]) for e in examples) / len(examples)
    # per token: 6 FLOPs per weight (forward and backward), and QK^T and AV over the mean length
    per_token = 6 * weights + 6 * 2 * model.config.n_layer * model.config.n_embd * mean_len
    flops = gemm_flops()
    bound = flops / per_token
    print(f"student {spec.build(seed=0).num_parameters():,} parameters, {args.steps} steps of {B}, "
          f"{torch.get_num_threads()} threads, median of {args.reps} alternating runs each")
    print(f"padding: {padding:.1%} of computed tokens in length-bucketed batches, {1 - useful / computed:.1%} "
          f"in random batches ({computed / useful:.2f}x the useful tokens)")
    print(f"students.distill (Lightning): {light:9,.0f} useful tokens/s ({' '.join(f'{r[0]:,.0f}' for r in runs)})")
    print(f"plain PyTorch loop          : {plain_tps:9,.0f} useful tokens/s ({' '.join(f'{r[2]:,.0f}' for r in runs)})")
    print(f"matmul bound                : {bound:9,.0f} tokens/s ({flops / 1e9:.1f} GFLOP/s fp32 GEMM, "
          f"{per_token / 1e6:.2f} MFLOP per token)")
    print(f"ratio Lightning / plain: {light / plain_tps:.2f}; Lightning / matmul bound: {light / bound:.2f}")
    with_matched = sorted(r[3] for r in runs)[len(runs) // 2]
    with_random = sorted(r[4] for r in runs)[len(runs) // 2]
    print(f"with {n_replay} of {B} replayed a batch (plain loop): padding {padding_of(matched()):.1%} matched by "
          f"length, {padding_of(unmatched()):.1%} drawn per batch; {with_matched:,.0f} against {with_random:,.0f} "
          f"useful tokens/s ({with_matched / with_random:.2f}x)")


if __name__ == "__main__":
    main()
