"""The embedded (synthetic) ByteRec dataset: seeded, in the ByteRec schema, realistic where it claims to be."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mmoe_annotated as mm


@pytest.fixture(scope="module")
def example() -> pd.DataFrame:
    return mm.load_example()  # the book's default: 20,000 rows, seed 0


def test_seeded_and_deterministic():
    a = mm.make_byterec(n_rows=2000, seed=3)
    b = mm.make_byterec(n_rows=2000, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = mm.make_byterec(n_rows=2000, seed=4)
    assert not a.equals(c)
    # load_example is make_byterec with the default sizes, and says where it came from.
    pd.testing.assert_frame_equal(mm.load_example(n_rows=500, seed=7), mm.make_byterec(n_rows=500, seed=7))
    assert "make_byterec" in mm.load_example(n_rows=10).attrs["source"]


def test_docstrings_say_synthetic():
    for fn in (mm.load_example, mm.make_byterec):
        assert "synthetic" in fn.__doc__.lower()


def test_schema(example):
    assert tuple(example.columns) == mm.COLUMNS
    assert len(example) == 20_000
    for c in mm.COLUMNS:
        expected = np.float64 if c == "duration_time" else np.int64
        assert example[c].dtype == expected, c
    for t in mm.TASKS:
        assert set(np.unique(example[t])) == {0, 1}
    assert (example["duration_time"] > 0).all()
    assert example["time"].is_monotonic_increasing  # rows are in time order, so split_by_row splits by time
    # Missing IDs are written as -1, as in the real files.
    assert (example["user_city"] == -1).any() and (example["music_id"] == -1).any()
    assert not example.isna().any().any()


def test_like_much_rarer_than_finish(example):
    finish, like = example["finish"].mean(), example["like"].mean()
    assert 0.25 < finish < 0.55
    assert 0.01 < like < 0.10
    assert like < finish / 4
    # related tasks: liking is more likely after a finish
    rates = example.groupby("finish")["like"].mean()
    assert rates[1] > 2 * rates[0]


def test_zipf_like_long_tail(example):
    for col in ("uid", "item_id", "author_id"):
        counts = example[col].value_counts()  # descending
        top = counts.iloc[: max(1, len(counts) // 100)].sum() / len(example)
        assert top > 0.15, f"{col}: the top 1% of IDs should hold far more than 1% of rows, got {top:.3f}"
        assert (counts == 1).mean() > 0.05, f"{col}: a long tail has many IDs seen once"
        # frequency falls with rank roughly like a power law: log-log slope clearly negative
        ranks = np.arange(1, len(counts) + 1)
        slope = np.polyfit(np.log(ranks), np.log(counts.to_numpy()), 1)[0]
        assert slope < -0.5, f"{col}: rank-frequency slope {slope:.2f}"


def test_later_rows_hold_unseen_ids(example):
    train, test = mm.split_by_row(example, 0.8)
    unseen_items = (~test["item_id"].isin(set(train["item_id"]))).mean()
    assert unseen_items > 0.05, unseen_items
    # New items arrive over time, so a split by time meets more unseen items than a
    # random split of the same sizes would (the long tail alone gives some).
    shuffled = example.sample(frac=1.0, random_state=0)
    r_train, r_test = mm.split_by_row(shuffled, 0.8)
    unseen_random = (~r_test["item_id"].isin(set(r_train["item_id"]))).mean()
    assert unseen_items > 1.3 * unseen_random, (unseen_items, unseen_random)
    # And the encoder fit on train maps them to OOV instead of failing.
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES).fit(train)
    ids = enc.transform(test).ids[:, mm.SPARSE_FEATURES.index("item_id")]
    assert (ids == mm.OOV).float().mean().item() == pytest.approx(unseen_items)


def test_round_trip_write_load(tmp_path):
    df = mm.make_byterec(n_rows=300, seed=1)
    path = mm.write_byterec(df, tmp_path / "gen.txt")
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) == 300
    assert all(line.count("\t") == len(mm.COLUMNS) - 1 for line in lines)
    back = mm.load_byterec(path)
    pd.testing.assert_frame_equal(back, df, check_exact=True)


def test_sample_and_generator_share_the_format(byterec_sample):
    """The real sample loads with the same schema and dtypes as the generated data."""
    gen = mm.make_byterec(n_rows=50)
    assert tuple(byterec_sample.columns) == tuple(gen.columns)
    assert (byterec_sample.dtypes == gen.dtypes).all()
    assert len(byterec_sample) == 200


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_rows"):
        mm.make_byterec(n_rows=0)
    with pytest.raises(ValueError, match="train_fraction"):
        mm.split_by_row(mm.make_byterec(10), 1.0)


def test_like_real_sizes_are_larger():
    small, real = mm.ByteRecSizes(), mm.ByteRecSizes.like_real()
    assert real.items > small.items and real.users > small.users
    df = mm.make_byterec(n_rows=1000, seed=0, sizes=real)
    assert df["item_id"].nunique() > mm.make_byterec(n_rows=1000, seed=0)["item_id"].nunique() * 0.9
