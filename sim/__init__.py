"""distill-arena's simulated world. Importing it makes the process offline by default:
nothing here downloads weights or data, and a hub lookup would only cost retries."""

import os

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                     ("TRANSFORMERS_OFFLINE", "1"), ("WANDB_MODE", "offline")):
    os.environ.setdefault(_key, _value)  # the user's own setting wins

from omegaconf import OmegaConf  # noqa: E402

# `${mul:1000,${attacker.counter.vote_k}}`: a budget that scales with another choice (k votes
# per prompt cost k queries), so a sweep compares equal numbers of distinct prompts
if not OmegaConf.has_resolver("mul"):
    OmegaConf.register_new_resolver("mul", lambda a, b: a * b)

def __getattr__(name):  # `sim.run` without importing torch for every `import sim`
    if name == "run":
        from sim.runner import run

        return run
    raise AttributeError(name)
