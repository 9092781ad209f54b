"""The benchmark's data: generated and encoded once, by the parent process, for every worker.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``).

Shape letters: ``M`` rows, ``F`` sparse fields, ``N`` dense width, ``T`` tasks.
"""
from __future__ import annotations

import json
import os

import numpy as np
from sklearn.metrics import roc_auc_score

from ..data.byterec import split_by_row
from ..data.example import ByteRecSizes, make_byterec
from ..data.schema import DENSE_FEATURES, SPARSE_FEATURES, TASKS
from ..features.encoder import FeatureEncoder
from ..features.encoders import NUM_RESERVED
from .spec import TABLES

__all__ = ["catalog_sizes", "prepare_data", "load_data", "auc_per_task"]


def catalog_sizes() -> dict[str, int]:
    """Each sparse column's id space in the generated data, by column name:
    :meth:`ByteRecSizes.like_real`, about 20k users, 100k items, 50k authors, 20k music ids,
    400 cities, 2k devices and 5 channels, the vocabularies of the real data."""
    s = ByteRecSizes.like_real()
    return {"uid": s.users, "user_city": s.cities, "item_id": s.items, "author_id": s.authors,
            "item_city": s.cities, "channel": s.channels, "music_id": s.music, "device": s.devices}


def prepare_data(rows: int, path: str | os.PathLike, seed: int = 0, tables: str = "catalog") -> dict:
    """Generate ``rows`` ByteRec-format rows with realistic vocabularies, split 80/20 by row
    order, fit the encoder on the training rows, and save ids, dense values and labels of
    **all** rows (train first) to ``path`` (``.npz``). Returns the metadata.

    ``tables`` sizes the embedding tables both implementations build:

    * ``"catalog"`` (default): every id the data can hold gets a row (:func:`catalog_sizes`,
      plus the reserved ids), as a production table is provisioned for the whole catalog. 200,000
      generated rows show only part of it (the training rows hold about 48k of the 100k items,
      16k of the 50k authors, 4k of the 20k music ids); the ids are the same in both modes.
    * ``"fitted"``: only the ids the training rows show (what ``FeatureEncoder`` alone gives).

    The choice matters for speed, not for the ids or the model: DeepCTR-Torch's L2 on the
    embeddings, its dense embedding gradient and its Adagrad step cover every row of every
    table each step, while ours touch only the rows a batch looks up."""
    if tables not in TABLES:
        raise ValueError(f"tables must be one of {TABLES}, got {tables!r}")
    frame = make_byterec(int(rows), seed=seed, sizes=ByteRecSizes.like_real())
    train, _ = split_by_row(frame, 0.8)
    encoder = FeatureEncoder(SPARSE_FEATURES, DENSE_FEATURES).fit(train)
    encoded = encoder.transform(frame)
    labels = frame[list(TASKS)].to_numpy(dtype=np.float32)  # (M, T)
    fitted = [f.vocab_size for f in encoder.features if hasattr(f, "vocab_size")]
    if tables == "catalog":
        catalog = catalog_sizes()
        sizes = [max(v, NUM_RESERVED + catalog[name]) for name, v in zip(SPARSE_FEATURES, fitted)]
    else:
        sizes = fitted
    meta = {"rows": int(rows), "train_rows": len(train), "test_rows": len(frame) - len(train), "seed": seed,
            "sparse": list(SPARSE_FEATURES), "dense": list(DENSE_FEATURES), "tasks": list(TASKS),
            "tables": tables, "vocab_sizes": sizes, "fitted_vocab_sizes": fitted,
            "positive_rate": dict(zip(TASKS, labels.mean(0).round(4).tolist()))}
    np.savez(path, ids=encoded.ids.numpy(), dense=encoded.dense.numpy(), labels=labels,
             meta=np.array(json.dumps(meta)))
    return meta


def load_data(path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path) as z:
        return json.loads(str(z["meta"])), z["ids"], z["dense"], z["labels"]


def auc_per_task(labels: np.ndarray, preds: np.ndarray, tasks) -> dict[str, float]:
    return {t: float(roc_auc_score(labels[:, i], preds[:, i])) for i, t in enumerate(tasks)}
