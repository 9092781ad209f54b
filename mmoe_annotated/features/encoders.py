"""Column encoders: one categorical or numeric column to ids or scaled values, fit on training rows.

Explained in chapter 3, "Feature transforms" (``book/03_features.ipynb``). A
:class:`Vocabulary` gives every value seen in training its own id after the reserved ``PAD``,
``OOV`` and ``MISSING``; :class:`HashBuckets` hashes values into a fixed number of ids;
:class:`MinMax` scales a numeric column by its training range. One value keeps one key whatever
the column's dtype (42, 42.0 and "42" are one category). :class:`~mmoe_annotated.features.encoder.FeatureEncoder`
holds one encoder per column.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


__all__ = ["PAD", "OOV", "MISSING", "NUM_RESERVED", "Vocabulary", "HashBuckets", "MinMax"]

PAD, OOV, MISSING = 0, 1, 2
NUM_RESERVED = 3


# ---------------------------------------------------------------------------
# Column encoders
# ---------------------------------------------------------------------------

def _float_keys(arr: np.ndarray) -> np.ndarray:
    """Keys of float64 values: whole numbers as integers ("42", never "42.0"), NaN -> None."""
    keys = np.empty(len(arr), dtype=object)
    missing = np.isnan(arr)
    whole = np.isfinite(arr) & (arr == np.floor(arr))
    small = whole & (np.abs(arr) < 2**63)
    keys[small] = arr[small].astype(np.int64).astype(str)
    keys[whole & ~small] = [str(int(v)) for v in arr[whole & ~small]]  # exact, as Python's int() gives it
    other = ~whole & ~missing  # fractions and infinities
    keys[other] = arr[other].astype(str)
    keys[missing] = None
    return keys


def _as_keys(values: pd.Series) -> pd.Series:
    """Canonical string keys, so that 42, 42.0 and "42" are one category; missing -> None.

    The same value gives the same key whatever holds it: an int, float, nullable ``Int64``
    or ``Float64`` column, an ``object`` column of Python or NumPy numbers, a ``category``
    column (with or without missing values) or a string column. Strings are kept as they
    are ("007" stays "007")."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # key the categories once, then look them up by code
        categories = _as_keys(pd.Series(values.cat.categories)).to_numpy(dtype=object)
        codes = values.cat.codes.to_numpy()
        keys = np.empty(len(codes), dtype=object)
        keys[codes >= 0] = categories[codes[codes >= 0]]
        return pd.Series(keys, index=values.index, dtype=object)
    if pd.api.types.is_float_dtype(values):
        return pd.Series(_float_keys(values.to_numpy(dtype=np.float64, na_value=np.nan)), index=values.index,
                         dtype=object)
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) not in ("integer", "string", "empty"):
        # cells may mix ints, floats and strings: key the floats as floats
        cells = values.to_numpy(dtype=object)
        missing = pd.isna(cells)
        floats = np.fromiter((isinstance(v, (float, np.floating)) for v in cells), dtype=bool,
                             count=len(cells)) & ~missing
        keys = np.empty(len(cells), dtype=object)
        keys[floats] = _float_keys(cells[floats].astype(np.float64))
        keys[~floats & ~missing] = [str(v) for v in cells[~floats & ~missing]]
        return pd.Series(keys, index=values.index, dtype=object)
    return values.astype(str).where(values.notna())


class Vocabulary:
    """Value -> id map learned on training data. Unseen values map to ``OOV``, missing
    to ``MISSING``.

    ``expected_oov`` is the share of new rows expected to fall to OOV, estimated from
    the training column (Good-Turing: rows whose value occurs once stand for values not
    seen yet, plus rows of values rarer than ``min_count``).
    :meth:`FeatureEncoder.transform` warns when far more than that falls to OOV: usually
    a column whose format changed."""

    kind = "vocab"

    def __init__(self, values: Sequence[str] = (), expected_oov: float | None = None):
        self.values = list(values)
        self._index = pd.Index(self.values, dtype=object)
        if not self._index.is_unique:
            raise ValueError("vocabulary values must be unique "
                             "(a damaged encoder state?)")
        if expected_oov is not None and not (isinstance(expected_oov, (int, float))
                                             and 0 <= expected_oov <= 1):
            raise ValueError("expected_oov must be a share in [0, 1] or None, got "
                             f"{expected_oov!r}")
        self.expected_oov = None if expected_oov is None else float(expected_oov)

    @classmethod
    def fit(cls, column: pd.Series, min_count: int = 1) -> "Vocabulary":
        """Values seen at least ``min_count`` times get their own id; rarer ones map to
        OOV, so the OOV row is trained on real rows and is a sensible vector for unseen
        values."""
        keys = _as_keys(column).dropna()
        # Most frequent first, ties by first appearance: ids are stable and readable.
        # (Explicitly: value_counts breaks ties differently across pandas versions.)
        codes, uniques = pd.factorize(keys, sort=False)  # uniques by first appearance
        counts = np.bincount(codes, minlength=len(uniques))
        order = np.lexsort((np.arange(len(uniques)), -counts))
        values = np.asarray(uniques, dtype=object)[order]
        return cls.from_counts([str(v) for v in values], counts[order], min_count)

    @classmethod
    def from_counts(cls, values: Sequence[str], counts: np.ndarray,
                    min_count: int = 1) -> "Vocabulary":
        """The vocabulary of ``values`` (keys, most frequent first) seen ``counts``
        times each: :meth:`fit`'s result, for counts gathered elsewhere (a stream,
        several processes)."""
        n = np.asarray(counts)
        rows = max(int(n.sum()), 1)
        rare = int(n[n < min_count].sum() if min_count > 1 else 0)
        expected = min(1.0, (int(n[n == 1].sum()) + rare) / rows)
        return cls([v for v, c in zip(values, n) if c >= min_count],
                   expected_oov=round(expected, 6))

    @property
    def size(self) -> int:
        return NUM_RESERVED + len(self.values)

    def transform(self, column: pd.Series) -> np.ndarray:
        keys = _as_keys(column)
        pos = self._index.get_indexer(keys.fillna("").to_numpy(dtype=object))
        ids = np.where(pos >= 0, pos + NUM_RESERVED, OOV).astype(np.int64)
        ids[keys.isna().to_numpy()] = MISSING
        return ids

    def to_dict(self) -> dict:
        return {"kind": self.kind, "values": self.values,
                "expected_oov": self.expected_oov}


class HashBuckets:
    """Hash encoding into ``buckets`` ids with a hash that is stable across processes.

    No vocabulary is stored and no value is out of vocabulary; distinct values can
    collide in one bucket."""

    kind = "hash"

    def __init__(self, buckets: int):
        if int(buckets) < 1:
            raise ValueError(f"hash buckets must be >= 1, got {buckets}")
        self.buckets = int(buckets)

    @classmethod
    def fit(cls, column: pd.Series, buckets: int) -> "HashBuckets":
        return cls(buckets)

    @property
    def size(self) -> int:
        return NUM_RESERVED + self.buckets

    def transform(self, column: pd.Series) -> np.ndarray:
        keys = _as_keys(column)
        missing = keys.isna().to_numpy()
        values = keys.fillna("").to_numpy(dtype=object)
        try:
            hashed = pd.util.hash_array(values, categorize=False)
        except UnicodeEncodeError:
            # lone surrogates cannot be UTF-8 encoded: hash their escaped form
            values = np.array([v.encode("utf-8", "backslashreplace").decode("utf-8")
                               for v in values], dtype=object)
            hashed = pd.util.hash_array(values, categorize=False)
        ids = (hashed % np.uint64(self.buckets)).astype(np.int64) + NUM_RESERVED
        ids[missing] = MISSING
        return ids

    def to_dict(self) -> dict:
        return {"kind": self.kind, "buckets": self.buckets}


class MinMax:
    """Min-max scaling to [0, 1] with the training minimum and maximum (a constant
    column maps to 0)."""

    def __init__(self, low: float, high: float):
        self.low, self.high = float(low), float(high)

    @classmethod
    def fit(cls, column: np.ndarray) -> "MinMax":
        return cls(np.min(column), np.max(column))

    def transform(self, column: np.ndarray) -> np.ndarray:
        span = self.high - self.low
        # far outside the training range overflows: the caller checks
        with np.errstate(over="ignore"):
            return (column - self.low) / span if span > 0 else np.zeros_like(column)

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high}
