"""Property-based tests (hypothesis): whatever bytes or rows a reader hands the loader, the
only exception is DataError; whatever strings an encoder meets, it returns a valid id."""
from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmoe_annotated as mm

SETTINGS = settings(max_examples=120, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# One real-looking row to mutate: the first line of the ByteRec sample, written out here.
GOOD = ["37448", "115", "567569", "44888", "42", "0", "0", "0", "1699", "43981", "53085738314", "9"]


def _load(data: bytes, on_bad_lines: str = "error"):
    """Write ``data`` to a fresh file and load it; the file is removed afterwards."""
    fd, path = tempfile.mkstemp(suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mm.load_byterec(path, on_bad_lines=on_bad_lines)
    finally:
        os.unlink(path)


def _check_frame(df: pd.DataFrame) -> None:
    """What load_byterec promises about any frame it returns."""
    assert list(df.columns) == list(mm.COLUMNS)
    assert len(df) > 0
    for c in mm.COLUMNS:
        assert df[c].dtype == (np.float64 if c == "duration_time" else np.int64), c
    assert df["finish"].isin([0, 1]).all() and df["like"].isin([0, 1]).all()
    assert np.isfinite(df["duration_time"]).all() and (df["duration_time"] >= 0).all()


@SETTINGS
@given(data=st.binary(max_size=400), mode=st.sampled_from(["error", "skip"]))
def test_random_bytes_only_raise_data_error(data, mode):
    try:
        df = _load(data, mode)
    except mm.DataError as exc:
        assert str(exc)  # every DataError says something
        return
    _check_frame(df)


# Fields: mostly plausible values, with the odd things real files hold.
FIELD = st.one_of(
    st.integers(-5, 10**12).map(str),
    st.sampled_from(["", " ", "-1", "0", "1", "2", "1.5", "nan", "NaN", "inf", "-inf", "1e400", "1e3",
                     "abc", "uid", "\"3\"", "0x10", "1_000", "١٢", "True", "\u00a0", "\r", "\x0b", "#"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(exclude_characters="\n"), max_size=6),  # "\n" would make two rows
)
ROW = st.lists(FIELD, min_size=10, max_size=14)
ENDING = st.sampled_from(["\n", "\r\n"])


@SETTINGS
@given(rows=st.lists(st.one_of(ROW, st.just(GOOD)), min_size=1, max_size=8), ending=ENDING,
       mode=st.sampled_from(["error", "skip"]))
def test_random_rows_only_raise_data_error(rows, ending, mode):
    text = ending.join("\t".join(r) for r in rows) + ending
    try:
        df = _load(text.encode("utf-8", "surrogatepass"), mode)
    except mm.DataError as exc:
        assert str(exc)
        return
    _check_frame(df)
    if mode == "skip":
        # Nothing silently lost: kept rows plus reported bad lines account for every line.
        reported = {n for n, _ in df.attrs["bad_lines"]}
        assert len(df) + len(reported) == len(rows)


@SETTINGS
@given(rows=st.lists(st.just(GOOD), min_size=1, max_size=5), ending=ENDING,
       blank_tail=st.sampled_from(["", "\n", "\n\n", "\r\n"]))
def test_valid_rows_always_load(rows, ending, blank_tail):
    df = _load((ending.join("\t".join(r) for r in rows) + ending + blank_tail).encode())
    _check_frame(df)
    assert len(df) == len(rows)
    assert df["uid"].tolist() == [int(GOOD[0])] * len(rows)


# ---------------------------------------------------------------------------
# Encoders: any string -> a valid id
# ---------------------------------------------------------------------------

ANY_TEXT = st.text(alphabet=st.characters(categories=None), max_size=12)  # any code point, surrogates too
VALUES = st.lists(st.one_of(ANY_TEXT, st.none(), st.integers(-10**18, 10**18), st.sampled_from(["", "\ud800x"])),
                  min_size=1, max_size=30)


@SETTINGS
@given(train=VALUES, test=VALUES)
def test_vocabulary_maps_any_value_to_a_valid_id(train, test):
    vocab = mm.Vocabulary.fit(pd.Series(train, dtype=object))
    ids = vocab.transform(pd.Series(test, dtype=object))
    assert ids.dtype == np.int64 and ids.shape == (len(test),)
    assert ((ids >= 0) & (ids < vocab.size)).all()
    assert (ids != mm.PAD).all()  # PAD is never produced by encoding
    missing = np.array([v is None for v in test])
    assert (ids[missing] == mm.MISSING).all()
    seen = {str(v) for v in train if v is not None}
    unseen = np.array([v is not None and str(v) not in seen for v in test])
    assert (ids[unseen] == mm.OOV).all()
    assert (ids[~missing & ~unseen] >= mm.NUM_RESERVED).all()


@SETTINGS
@given(values=VALUES, buckets=st.integers(1, 50))
def test_hash_buckets_map_any_value_to_a_valid_id(values, buckets):
    enc = mm.HashBuckets(buckets)
    ids = enc.transform(pd.Series(values, dtype=object))
    assert ((ids >= 0) & (ids < enc.size)).all()
    missing = np.array([v is None for v in values])
    assert (ids[missing] == mm.MISSING).all() and (ids[~missing] >= mm.NUM_RESERVED).all()
    # Stable: the same value gets the same bucket in a second call.
    assert (enc.transform(pd.Series(values, dtype=object)) == ids).all()


@SETTINGS
@given(train=VALUES, test=VALUES, hashed=st.booleans(), min_count=st.integers(1, 3))
def test_feature_encoder_ids_fit_the_model_input(train, test, hashed, min_count):
    enc = mm.FeatureEncoder(["c"], hash_buckets=7 if hashed else None, min_count=min_count)
    enc.fit(pd.DataFrame({"c": pd.Series(train, dtype=object)}))
    ids = enc.transform(pd.DataFrame({"c": pd.Series(test, dtype=object)})).ids
    (feature,) = enc.features
    assert ids.shape == (len(test), 1)
    assert int(ids.min()) >= 0 and int(ids.max()) < feature.vocab_size
