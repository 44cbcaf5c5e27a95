"""The watermark on the shipped teacher, measured: false positives, power, and its cost.

    python -m experiments.bench.watermark [--texts 10000 --threads 2]

On fresh explained questions (every skill, public and private cells), the teacher answers
once without and once with the watermark of `configs/defense/watermark.yaml` (greedy, as the
gateway serves by default). It prints:

- the **clean false-positive rate**: the share of unwatermarked texts, each scored alone,
  whose exact binomial p-value is at most α (1e-3 and 1e-2), beside the normal
  approximation's at the same α;
- the **power per text** at the same thresholds, and how the pooled z of watermarked text
  grows with the number T of scored tokens (z / √T should stay roughly constant);
- the **utility cost**: held-out accuracy of the explained teacher without and with it.
"""

from __future__ import annotations

import argparse
import random
import time

import sim  # noqa: F401  (offline switches)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch
    from hydra import compose, initialize_config_dir

    import teachers
    from sim import metrics
    from sim.quiet import quiet
    from sim.runner import ROOT, World, build

    torch.set_num_threads(args.threads)
    quiet()
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("run", overrides=["defense=watermark"])
    world = World(cfg)
    wm = build(cfg.defense.watermark)
    teacher, card = teachers.load(world.teacher_spec, world.suite, ROOT / ".cache" / "teachers", log=lambda *a: None)
    rng = random.Random(f"watermark-bench-{args.seed}")
    prompts = [world.suite.sample(rng).request(True) for _ in range(args.texts)]
    max_new = world.teacher_spec.max_new_tokens
    t = time.perf_counter()
    clean = [o.text for o in teacher.generate(prompts, max_new_tokens=max_new)]
    marked = [o.text for o in teacher.generate(prompts, max_new_tokens=max_new, logits_processors=wm.logits_processors())]
    seconds = time.perf_counter() - t
    print(f"teacher {card['hash']}, {args.texts:,} explained questions, {wm.green.gamma=}, delta={wm.delta}, h={wm.h}, "
          f"entropy={wm.entropy} bits, scope={wm.scope}; generated twice in {seconds:.0f} s\n")

    def alone(texts):
        return [wm.detect([x], [p]) for x, p in zip(texts, prompts)]

    c, m = alone(clean), alone(marked)
    print("| texts scored alone | tokens/text | p_exact <= 1e-3 | p_exact <= 1e-2 | normal p <= 1e-3 | normal p <= 1e-2 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in (("clean (false positives)", c), ("watermarked (power)", m)):
        n = len(rows)
        tok = sum(r["tokens"] for r in rows) / n
        share = [sum(r[k] <= a for r in rows if r[k] == r[k]) / n for k in ("p_exact",) for a in (1e-3, 1e-2)]
        normal = [sum(r["p"] <= a for r in rows if r["p"] == r["p"]) / n for a in (1e-3, 1e-2)]
        print(f"| {name} | {tok:.1f} | {share[0]:.2e} | {share[1]:.2e} | {normal[0]:.2e} | {normal[1]:.2e} |")
    print("\n| watermarked texts pooled | scored tokens T | z | z / sqrt(T) | p_exact | clean z |")
    print("|---:|---:|---:|---:|---:|---:|")
    k = 1
    while k <= len(prompts):
        a, b = wm.detect(marked[:k], prompts[:k]), wm.detect(clean[:k], prompts[:k])
        print(f"| {k} | {a['tokens']} | {a['z']:.2f} | {a['z'] / a['tokens'] ** 0.5:.3f} | {a['p_exact']:.1e} | {b['z']:.2f} |")
        k *= 4
    # the utility cost: the explained teacher graded on the held-out set, without and with it
    plain = metrics.evaluate(teacher, world.suite, max_new_tokens=max_new)
    with_wm = metrics.evaluate(teacher, world.suite, max_new_tokens=max_new, logits_processors=wm.logits_processors())
    a0, a1 = metrics.mean(r["correct"] for r in plain), metrics.mean(r["correct"] for r in with_wm)
    print(f"\nheld-out accuracy ({len(plain)} problems): {a0:.4f} without, {a1:.4f} with the watermark "
          f"({100 * (a1 - a0):+.2f} points)")


if __name__ == "__main__":
    main()
