"""A LoRA student: low-rank adapters (peft) on the attacker's frozen base model.

Hu et al. (2021), "LoRA: Low-Rank Adaptation of Large Language Models": each adapted weight
W is used as W + (α/r) B A with A ∈ R^{r×k}, B ∈ R^{d×r} trained and W frozen. `r`, `alpha`
(α) and `target_modules` come from the config; GPT-2's Conv1D layers store W transposed,
hence `fan_in_fan_out=True`. After training the adapters are merged, so evaluation and the
watermark audit run a plain model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from students.finetune import Finetune
from teachers.lm import CharLM

GPT2_MODULES = ("c_attn", "c_proj", "c_fc")


@dataclass
class Lora(Finetune):
    r: int = 8
    alpha: float = 16.0
    target_modules: list[str] = field(default_factory=lambda: ["c_attn", "c_proj", "c_fc"])
    dropout: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        if self.r < 1:
            raise ValueError(f"student.r={self.r} must be >= 1")
        if not self.alpha > 0:
            raise ValueError(f"student.alpha={self.alpha} must be > 0")
        bad = [m for m in self.target_modules if m not in GPT2_MODULES]
        if bad or not self.target_modules:
            raise ValueError(f"student.target_modules={list(self.target_modules)} must be a non-empty subset of "
                             f"{list(GPT2_MODULES)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"student.dropout={self.dropout} must be in [0, 1)")

    def prepare(self, student: CharLM) -> CharLM:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=self.r, lora_alpha=self.alpha, target_modules=list(self.target_modules),
                            lora_dropout=self.dropout, fan_in_fan_out=True, bias="none")
        return CharLM(get_peft_model(student.model, config), student.tok)

    def finish(self, student: CharLM) -> CharLM:
        model = student.model.merge_and_unload()
        model.loss_type = "ForCausalLM"
        return CharLM(model, student.tok)
