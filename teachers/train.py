"""Supervised training of a CharLM on (request, response) exchanges, as a LightningModule.

The teacher is trained this way on the skill suite; students reuse the module on a harvest.
The loss is next-token cross-entropy on the response tokens only: the request is context.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from teachers.vocab import CharTokenizer, collate


class CausalLMModule(L.LightningModule):
    def __init__(self, model, lr: float, max_steps: int, warmup_steps: int = 100, weight_decay: float = 0.01):
        super().__init__()
        self.model, self.lr, self.max_steps = model, lr, max_steps
        self.warmup_steps, self.weight_decay = min(warmup_steps, max_steps // 10 + 1), weight_decay
        self.tokens_seen = 0

    def training_step(self, batch, batch_idx):
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        self.tokens_seen += int(batch["attention_mask"].sum())
        self.log("train/loss", out.loss, prog_bar=True, on_step=True, batch_size=batch["input_ids"].shape[0])
        return out.loss

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
            betas=(0.9, 0.95),
        )

        def schedule(step: int) -> float:  # linear warm-up, cosine decay to 10%
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            t = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule), "interval": "step"}}


class StreamDataset(IterableDataset):
    """An endless seeded stream of batches of exchanges from `draw(rng) -> (request, response)`.

    Draws `pool` batches at a time, sorts them by length and cuts them into batches, so a
    batch pads to its own length rather than to the longest problem of the suite (about 2x
    fewer tokens computed for the same exchanges)."""

    def __init__(self, draw: Callable[[random.Random], tuple[str, str]], seed: int, tokenizer: CharTokenizer,
                 batch_size: int, pool: int = 16):
        self.draw, self.seed, self.tok, self.batch_size, self.pool = draw, seed, tokenizer, batch_size, pool

    def __iter__(self) -> Iterator:
        rng = random.Random(f"stream-{self.seed}")
        while True:
            pairs = sorted((self.tok.pair_ids(*self.draw(rng)) for _ in range(self.batch_size * self.pool)),
                           key=lambda x: len(x[0]))
            batches = [pairs[i : i + self.batch_size] for i in range(0, len(pairs), self.batch_size)]
            rng.shuffle(batches)
            yield from batches


def fit(model, data, *, steps: int, batch_size: int, lr: float, seed: int, logger=False, shuffle: bool = False,
        progress: bool = False, callbacks=(), module: CausalLMModule | None = None, collate_fn=collate) -> dict:
    """Train `model` for `steps` optimizer steps on `data` (a dataset of token-id pairs).

    `module` is the LightningModule that wraps `model` (a student's recipe loss) and
    `collate_fn` builds its batches; by default the plain next-token loss on token-id pairs.
    Deterministic on CPU for a given seed. Returns throughput statistics."""
    L.seed_everything(seed, workers=True, verbose=False)
    gen = torch.Generator().manual_seed(seed)
    if isinstance(data, StreamDataset):  # yields whole batches already
        loader = DataLoader(data, batch_size=None, collate_fn=collate_fn, num_workers=0)
    else:
        loader = DataLoader(data, batch_size=batch_size, collate_fn=collate_fn, shuffle=shuffle,
                            generator=gen if shuffle else None, num_workers=0)
    if module is None:
        module = CausalLMModule(model, lr=lr, max_steps=steps)
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=-1,
        accelerator="cpu" if not torch.cuda.is_available() else "auto",
        devices=1,
        deterministic=True,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(50, steps // 10)),
        gradient_clip_val=1.0,
        callbacks=list(callbacks),
    )
    model.train()
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    model.eval()
    seconds = time.perf_counter() - t0
    loss = trainer.callback_metrics.get("train/loss")
    return {
        "steps": steps,
        "tokens": module.tokens_seen,
        "seconds": seconds,
        "tokens_per_s": module.tokens_seen / max(seconds, 1e-9),
        "final_loss": float(loss) if loss is not None else float("nan"),
    }
