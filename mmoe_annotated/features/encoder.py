"""Feature transforms: the encoders fit on training data (pandas in, :class:`EncodedFeatures` out).

Explained in chapter 3, "Feature transforms" (``book/03_features.ipynb``).

The tutorial label-encodes each ID column with scikit-learn's ``LabelEncoder`` fit on
*all* rows and scales ``duration_time`` with ``MinMaxScaler`` fit on all rows too. That
leaks test data into the encoders and hides the production problem: an ID that the
training data never showed has no row in the embedding table (``IndexError``). Here:

* encoders are fit on the **training split only**;
* every categorical vocabulary reserves ids ``PAD = 0``, ``OOV = 1`` (any value not seen
  in training) and ``MISSING = 2`` (NaN/None); known values start at 3;
* a column can instead be **hash-encoded** into a fixed number of buckets (no vocabulary
  to store, no OOV, at the price of collisions);
* dense columns are min-max scaled with the training minimum and maximum;
* categorical ids stay ``int64`` and travel apart from the float dense values
  (:class:`~mmoe_annotated.features.inputs.EncodedFeatures`), never round-tripped through float32.

Each column's encoder (:class:`Vocabulary`, :class:`HashBuckets`, :class:`MinMax`) is in
:mod:`mmoe_annotated.features.encoders`; what the model does with the result (the feature specs and the
input layer) is in :mod:`mmoe_annotated.features.inputs`.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .encoders import MISSING, OOV, HashBuckets, MinMax, Vocabulary
from ..data.schema import DataError
from .inputs import DenseFeature, EncodedFeatures, FeatureSpec, SparseFeature

__all__ = ["FeatureEncoder"]
# ---------------------------------------------------------------------------
# The encoder: DataFrame -> EncodedFeatures
# ---------------------------------------------------------------------------

class FeatureEncoder:
    """Fit on the training DataFrame, then turn any DataFrame into :class:`EncodedFeatures`.

    Parameters
    ----------
    sparse, dense:
        Column names of the categorical and the numeric features.
    emb_dim:
        Embedding width ``K`` of every sparse feature (an int), or a dict per column.
    hash_buckets:
        Columns to hash-encode instead of learning a vocabulary: a dict column -> buckets,
        or one int for every sparse column.
    dense_fill:
        What to do with NaN or infinite dense values: ``None`` (default) raises
        :class:`DataError`; a number replaces them with that (raw, pre-scaling) value.
        A finite value so far outside the training range that it overflows float32 once
        scaled always raises :class:`DataError` naming the column and row (never clipped:
        such a value is almost always a unit or parsing error upstream).
    min_count:
        A vocabulary keeps values seen at least this often in training; rarer values map
        to OOV. The default 1 keeps every value, as ``LabelEncoder`` does, which leaves the
        OOV row untrained; 2 or more trains it on the rare values.
    """

    def __init__(self, sparse: Sequence[str] = (), dense: Sequence[str] = (), emb_dim: int | dict = 4,
                 hash_buckets: int | dict | None = None, dense_fill: float | None = None,
                 min_count: int = 1):
        self.sparse = list(sparse)
        self.dense = list(dense)
        if not self.sparse and not self.dense:
            raise ValueError("FeatureEncoder needs at least one sparse or dense column")
        dupes = sorted({c for c in self.sparse + self.dense if (self.sparse + self.dense).count(c) > 1})
        if dupes:
            raise ValueError(f"columns listed more than once: {dupes}")
        if isinstance(emb_dim, dict):
            unknown = set(emb_dim) - set(self.sparse)
            if unknown:
                raise ValueError(f"emb_dim names columns that are not sparse features: {sorted(unknown)}")
            self.emb_dim = {c: int(emb_dim.get(c, 4)) for c in self.sparse}
        else:
            self.emb_dim = {c: int(emb_dim) for c in self.sparse}
        if isinstance(hash_buckets, int):
            hash_buckets = {c: hash_buckets for c in self.sparse}
        self.hash_buckets = dict(hash_buckets or {})
        unknown = set(self.hash_buckets) - set(self.sparse)
        if unknown:
            raise ValueError(f"hash_buckets names columns that are not sparse features: {sorted(unknown)}")
        if dense_fill is not None and not math.isfinite(float(dense_fill)):
            raise ValueError(f"dense_fill must be a finite number or None, got {dense_fill}")
        self.dense_fill = dense_fill
        if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
            raise ValueError(f"min_count must be a whole number >= 1, got {min_count!r}")
        self.min_count = int(min_count)
        self.encoders: dict[str, Vocabulary | HashBuckets] = {}
        self.scalers: dict[str, MinMax] = {}

    # -- fitting -------------------------------------------------------------
    def _require(self, df: pd.DataFrame) -> None:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in self.sparse + self.dense if c not in df.columns]
        if missing:
            raise DataError(f"the frame lacks column(s) {missing} that the encoder uses; "
                            f"it has {list(df.columns)}", column=missing[0])
        twice = [c for c in self.sparse + self.dense if list(df.columns).count(c) > 1]
        if twice:
            raise DataError(f"the frame has more than one column named {twice[0]!r}", column=twice[0])
        for c in self.sparse:  # categories must be single values: a list or dict in a cell is a bug upstream
            if df[c].dtype == object:
                scalar = df[c].map(pd.api.types.is_scalar).to_numpy(dtype=bool)
                if not scalar.all():
                    row = int(np.flatnonzero(~scalar)[0])
                    raise DataError(f"categorical column holds a {type(df[c].iat[row]).__name__} at row {row} "
                                    "(index {!r}); each cell must be one value (a number or a string)"
                                    .format(df.index[row]), column=c)

    def _dense_values(self, df: pd.DataFrame, col: str) -> np.ndarray:
        series = df[col]
        if not (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)):
            raise DataError(f"dense column has dtype {series.dtype}; it must be numeric", column=col)
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            if self.dense_fill is None:
                row = int(np.flatnonzero(bad)[0])
                raise DataError(f"{int(bad.sum())} NaN or infinite value(s), first at row {row} "
                                f"(index {df.index[row]!r}); pass dense_fill= to replace them", column=col)
            values = np.where(bad, float(self.dense_fill), values)
        return values

    def fit(self, df: pd.DataFrame) -> "FeatureEncoder":
        """Learn vocabularies and scaling ranges from ``df`` (the training split
        only)."""
        self._require(df)
        if len(df) == 0:
            raise DataError("cannot fit an encoder on an empty frame")
        self.encoders = {c: (HashBuckets.fit(df[c], self.hash_buckets[c])
                             if c in self.hash_buckets
                             else Vocabulary.fit(df[c], self.min_count))
                         for c in self.sparse}
        self.scalers = {c: MinMax.fit(self._dense_values(df, c)) for c in self.dense}
        for c, scaler in self.scalers.items():
            if not math.isfinite(scaler.high - scaler.low):
                raise DataError(f"the training range [{scaler.low!r}, {scaler.high!r}] "
                                "is too wide to scale: its span overflows float64; clip or "
                                "drop the extreme values", column=c)
        return self

    @property
    def is_fitted(self) -> bool:
        return len(self.encoders) == len(self.sparse) and len(self.scalers) == len(self.dense)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError("the FeatureEncoder is not fitted yet: call .fit(train_df) first")

    # -- using ---------------------------------------------------------------
    @property
    def features(self) -> tuple[FeatureSpec, ...]:
        """Feature specs for the model: one :class:`SparseFeature` per sparse column (vocab
        size includes the reserved ids), then one :class:`DenseFeature` per dense column."""
        self._check_fitted()
        return tuple([SparseFeature(c, self.encoders[c].size, self.emb_dim[c]) for c in self.sparse]
                     + [DenseFeature(c, 1) for c in self.dense])

    def transform(self, df: pd.DataFrame) -> EncodedFeatures:
        """Encode ``df``: unseen categories -> OOV, missing -> MISSING, dense scaled
        with train min/max."""
        self._check_fitted()
        self._require(df)
        ids = None
        if self.sparse:
            columns = [self.encoders[c].transform(df[c]) for c in self.sparse]
            for c, col in zip(self.sparse, columns):
                self._warn_if_mostly_oov(c, col)
            # ids: (B, F)
            ids = torch.from_numpy(np.stack(columns, axis=1) if len(df)
                                   else np.zeros((0, len(self.sparse)), dtype=np.int64))
        dense = None
        if self.dense:
            cols = [self._scaled(df, c) for c in self.dense]
            # dense: (B, N)
            dense = torch.from_numpy(np.stack(cols, axis=1) if len(df)
                                     else np.zeros((0, len(self.dense)), dtype=np.float32))
        return EncodedFeatures(ids, dense)

    def _scaled(self, df: pd.DataFrame, col: str) -> np.ndarray:
        """Scaled float32 values the model reads. A finite value far outside the training range can
        overflow once scaled and cast (inf, then NaN predictions): that raises, naming the row."""
        raw = self._dense_values(df, col)
        with np.errstate(over="ignore"):
            scaled = self.scalers[col].transform(raw).astype(np.float32)
        bad = ~np.isfinite(scaled)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            scaler = self.scalers[col]
            raise DataError(f"{int(bad.sum())} value(s) too large for the model, first at row {row} (index "
                            f"{df.index[row]!r}): {float(raw[row])!r}, min-max scaled with the training range "
                            f"[{scaler.low!r}, {scaler.high!r}], lies beyond float32's range (about 3.4e38); "
                            "clip or drop such values, or refit the encoder on data that holds them",
                            column=col)
        return scaled

    #: A column warns when at least this many of its values are present, more than half fall
    #: to OOV, and that share exceeds the vocabulary's ``expected_oov`` by ``OOV_WARN_MARGIN``.
    OOV_WARN_MIN_ROWS = 20
    OOV_WARN_MARGIN = 0.25

    def _warn_if_mostly_oov(self, col: str, ids: np.ndarray) -> None:
        vocab = self.encoders[col]
        present = int((ids != MISSING).sum())
        if not isinstance(vocab, Vocabulary) or present < self.OOV_WARN_MIN_ROWS:
            return
        share = int((ids == OOV).sum()) / present
        expected = 0.5 if vocab.expected_oov is None else vocab.expected_oov
        if share > 0.5 and share > expected + self.OOV_WARN_MARGIN:
            warnings.warn(f"column {col!r}: {share:.0%} of {present} values are not in the training vocabulary "
                          f"and map to OOV (the training data suggests about {expected:.0%}); check that the "
                          "column holds the same kind of values as in training (type, format, prefix)",
                          RuntimeWarning, stacklevel=3)

    def fit_transform(self, df: pd.DataFrame) -> EncodedFeatures:
        return self.fit(df).transform(df)

    # -- serialisation (JSON-safe; used by checkpoints) ----------------------
    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "sparse": self.sparse, "dense": self.dense, "emb_dim": self.emb_dim,
            "hash_buckets": self.hash_buckets, "dense_fill": self.dense_fill, "min_count": self.min_count,
            "encoders": {c: e.to_dict() for c, e in self.encoders.items()},
            "scalers": {c: s.to_dict() for c, s in self.scalers.items()},
        }

    @classmethod
    def from_dict(cls, state: dict) -> "FeatureEncoder":
        try:
            enc = cls(state["sparse"], state["dense"], emb_dim=dict(state["emb_dim"]) or 4,
                      hash_buckets=state["hash_buckets"], dense_fill=state["dense_fill"],
                      min_count=state.get("min_count", 1))
            for c, e in state["encoders"].items():
                enc.encoders[c] = (Vocabulary(e["values"], e.get("expected_oov")) if e["kind"] == "vocab"
                                   else HashBuckets(e["buckets"]))
            for c, s in state["scalers"].items():
                enc.scalers[c] = MinMax(s["low"], s["high"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a FeatureEncoder state: missing or malformed entry {exc}") from exc
        enc._check_fitted()
        return enc

    def __repr__(self) -> str:
        state = "fitted" if self.is_fitted else "not fitted"
        return f"FeatureEncoder(sparse={self.sparse}, dense={self.dense}, {state})"
