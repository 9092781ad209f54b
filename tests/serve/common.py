"""What the serving tests share: the embedded data, a model of each kind trained briefly on it, and
rows with values the encoder never saw."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

import mmoe_annotated as mm

#: The parity tests' rows: the embedded data, as the issue of exported parity states it.
ROWS = 10_000
SMALL = dict(expert_hidden=(64, 32), gate_hidden=(16,), tower_hidden=(16,))


def data(rows: int = ROWS):
    """``(df, train, enc)``: ``rows`` rows of the embedded data and an encoder fit on the first 80 %,
    so that the last 20 % hold IDs it never saw."""
    df = mm.load_example(rows)
    train, _ = mm.split_by_row(df, 0.8)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim=4).fit(train)
    return df, train, enc


def trained(kind: str, train: pd.DataFrame, enc: mm.FeatureEncoder) -> mm.MultiTaskModel:
    """A model of ``kind`` after one epoch: its predictions spread, unlike a fresh model's."""
    model = mm.build_model(kind, mm.ModelConfig(enc.features, **SMALL))
    mm.fit(model, train, mm.TrainConfig(batch_size=256, epochs=1, progress=False), encoder=enc)
    return model.eval()


def unseen(df: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """``n`` rows whose IDs no encoder fit on the embedded data has seen, and missing values."""
    odd = df.head(n).copy()
    odd["uid"] = -7  # a user never seen
    odd["item_id"] = 987_654_321
    odd["author_id"] = "not-an-author"  # a string where training saw integers
    odd["music_id"] = np.where(np.arange(n) % 2 == 0, np.nan, odd["music_id"])  # missing
    return odd.reset_index(drop=True)


def json_rows(df: pd.DataFrame) -> list[dict]:
    """Rows as a client sends them: plain JSON values (NaN -> null)."""
    return json.loads(df.to_json(orient="records"))
