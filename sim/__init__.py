"""distill-arena's simulated world. Importing it makes the process offline by default:
nothing here downloads weights or data, and a hub lookup would only cost retries."""

import os

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                     ("TRANSFORMERS_OFFLINE", "1"), ("WANDB_MODE", "offline")):
    os.environ.setdefault(_key, _value)  # the user's own setting wins



def __getattr__(name):  # `sim.run` without importing torch for every `import sim`
    if name == "run":
        from sim.runner import run

        return run
    raise AttributeError(name)
