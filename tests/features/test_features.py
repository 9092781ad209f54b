"""The feature pipeline: reserved ids, OOV, hashing, train-only scaling, int64 ids, serialisation."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import mmoe_annotated as mm


def frame(**cols) -> pd.DataFrame:
    return pd.DataFrame(cols)


def test_reserved_ids():
    assert (mm.PAD, mm.OOV, mm.MISSING, mm.NUM_RESERVED) == (0, 1, 2, 3)
    train = frame(c=[10, 20, 20, 30, 20, 10])
    voc = mm.Vocabulary.fit(train["c"])
    assert voc.size == 3 + 3
    ids = voc.transform(frame(c=[20, 10, 30])["c"])
    assert ids.dtype == np.int64
    # known values start after the reserved ids; most frequent first
    assert ids.tolist() == [3, 4, 5]
    # unseen -> OOV, missing -> MISSING, never PAD, never an IndexError
    mixed = pd.Series([20.0, 999.0, np.nan, 10.0])
    assert voc.transform(mixed).tolist() == [3, mm.OOV, mm.MISSING, 4]


def test_unseen_categories_go_to_oov_through_the_model():
    train = frame(a=[1, 2, 3, 1], b=[5, 5, 6, 6], d=[0.0, 1.0, 2.0, 3.0])
    test = frame(a=[1, 77, None], b=[6, 5, 12345678901], d=[1.0, 5.0, -1.0])
    enc = mm.FeatureEncoder(["a", "b"], ["d"]).fit(train)
    x = enc.transform(test)
    a_of_1 = int(enc.transform(frame(a=[1], b=[5], d=[0.0])).ids[0, 0])
    assert a_of_1 >= mm.NUM_RESERVED
    assert x.ids[0, 0] == a_of_1
    assert x.ids[1, 0] == mm.OOV and x.ids[2, 0] == mm.MISSING and x.ids[2, 1] == mm.OOV
    assert x.ids[0, 1] != x.ids[1, 1] and min(x.ids[0, 1], x.ids[1, 1]) >= mm.NUM_RESERVED
    model = mm.MMoE(mm.ModelConfig(enc.features, expert_hidden=(8,), gate_hidden=(), tower_hidden=(4,)))
    preds = mm.predict(model, test, encoder=enc)  # no IndexError
    assert preds.shape == (3, 2) and np.isfinite(preds).all()


def test_vocabulary_order_most_frequent_then_first_appearance():
    column = pd.Series([9, 4, 7, 4, 8, 7, 5, 4])  # 4 x3; 7 x2; then 9, 8, 5 once each, in that order
    voc = mm.Vocabulary.fit(column)
    assert voc.values == ["4", "7", "9", "8", "5"]
    ids = voc.transform(pd.Series([4, 7, 9, 8, 5]))
    assert ids.tolist() == [3, 4, 5, 6, 7]


def test_equal_values_of_different_types_are_one_category():
    voc = mm.Vocabulary.fit(pd.Series([42, 7]))
    assert voc.transform(pd.Series([42.0, 7.0])).tolist() == voc.transform(pd.Series(["42", "7"])).tolist()
    assert sorted(voc.transform(pd.Series([42.0, 7.0])).tolist()) == [3, 4]
    assert voc.transform(pd.Series([42.5])).tolist() == [mm.OOV]


def test_hash_encoding_in_range_and_missing():
    hb = mm.HashBuckets(16)
    values = pd.Series(np.arange(1000))
    ids = hb.transform(values)
    assert ids.dtype == np.int64
    assert ids.min() >= mm.NUM_RESERVED and ids.max() < mm.NUM_RESERVED + 16
    assert len(np.unique(ids)) == 16  # 1000 values fill all 16 buckets
    assert hb.size == 19
    assert hb.transform(pd.Series([1.0, np.nan])).tolist()[1] == mm.MISSING
    # same value, same bucket, whatever its type
    assert hb.transform(pd.Series([5, 6])).tolist() == hb.transform(pd.Series(["5", "6"])).tolist()
    with pytest.raises(ValueError, match="buckets"):
        mm.HashBuckets(0)


_HASH_SNIPPET = ("import pandas as pd, mmoe_annotated as mm; "
                 "print(mm.HashBuckets(1000).transform(pd.Series(['a', 'bb', 'ccc', '123', 'x y'])).tolist())")


def test_hash_encoding_is_stable_across_processes():
    # Python's own str hash is salted per process (PYTHONHASHSEED); the encoder's must not be.
    seed = "1" if os.environ.get("PYTHONHASHSEED") == "12345" else "12345"
    env = dict(os.environ, PYTHONHASHSEED=seed)
    result = subprocess.run([sys.executable, "-c", _HASH_SNIPPET], env=env, capture_output=True,
                            text=True, check=True, timeout=300)
    here = str(mm.HashBuckets(1000).transform(pd.Series(["a", "bb", "ccc", "123", "x y"])).tolist())
    assert result.stdout.strip() == here


def test_encoder_hash_buckets_option():
    train = frame(a=list(range(50)), b=[1, 2] * 25)
    enc = mm.FeatureEncoder(["a", "b"], hash_buckets={"a": 8}).fit(train)
    sizes = {f.name: f.vocab_size for f in enc.features}
    assert sizes == {"a": 3 + 8, "b": 3 + 2}
    x = enc.transform(frame(a=[10_000, 3], b=[1, 99]))
    assert x.ids[0, 0] >= mm.NUM_RESERVED  # hashed: never OOV
    assert x.ids[1, 1] == mm.OOV
    assert x.dense is None
    enc_all = mm.FeatureEncoder(["a", "b"], hash_buckets=4).fit(train)
    assert all(f.vocab_size == 7 for f in enc_all.features)


def test_min_max_fit_on_train_only():
    train = frame(c=[1, 2, 3], d=[10.0, 20.0, 30.0])
    test = frame(c=[1, 2, 3], d=[0.0, 20.0, 50.0])
    enc = mm.FeatureEncoder(["c"], ["d"]).fit(train)
    assert (enc.scalers["d"].low, enc.scalers["d"].high) == (10.0, 30.0)
    x = enc.transform(test)
    # scaled with the *training* range: test values outside it fall outside [0, 1]
    np.testing.assert_allclose(x.dense[:, 0].numpy(), [-0.5, 0.5, 2.0])
    np.testing.assert_allclose(enc.transform(train).dense[:, 0].numpy(), [0.0, 0.5, 1.0])
    # a constant training column maps to 0 rather than dividing by zero
    const = mm.FeatureEncoder(dense=["d"]).fit(frame(d=[4.0, 4.0]))
    assert const.transform(frame(d=[4.0, 9.0])).dense[:, 0].tolist() == [0.0, 0.0]


def test_ids_stay_int64_apart_from_float_dense():
    big = 2**24  # float32 cannot tell big and big + 1 apart
    train = frame(c=[big, big + 1, big + 2], d=[0.5, 1.5, 2.5])
    enc = mm.FeatureEncoder(["c"], ["d"]).fit(train)
    x = enc.transform(train)
    assert isinstance(x, mm.EncodedFeatures)
    assert x.ids.dtype == torch.int64 and x.ids.shape == (3, 1)
    assert x.dense.dtype == torch.float32 and x.dense.shape == (3, 1)
    assert len(set(x.ids[:, 0].tolist())) == 3  # three distinct categories survive
    assert np.float32(big) == np.float32(big + 1)  # ... which a float32 round trip would merge
    assert len(x) == 3
    sub = x.index(slice(1, 3))
    assert sub.ids.shape == (2, 1) and sub.dense.shape == (2, 1)


def test_encoder_on_the_real_sample(byterec_sample):
    train, test = mm.split_by_row(byterec_sample, 0.8)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim=4).fit(train)
    x = enc.transform(test)
    assert x.ids.shape == (40, 8) and x.dense.shape == (40, 1)
    for f, spec in enumerate(enc.features[:8]):
        assert spec.vocab_size == mm.NUM_RESERVED + train[spec.name].nunique()
        assert int(x.ids[:, f].max()) < spec.vocab_size
    # most uids and items of the last 40 rows were never seen in the first 160
    item = mm.SPARSE_FEATURES.index("item_id")
    assert (x.ids[:, item] == mm.OOV).sum() == (~test["item_id"].isin(set(train["item_id"]))).sum() > 0


def test_to_dict_from_dict_round_trip():
    df = mm.make_byterec(n_rows=400, seed=2)
    train, test = mm.split_by_row(df)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim={"uid": 4},
                            hash_buckets={"device": 32}, dense_fill=0.0).fit(train)
    state = json.loads(json.dumps(enc.to_dict()))  # JSON-safe
    back = mm.FeatureEncoder.from_dict(state)
    assert back.features == enc.features
    a, b = enc.transform(test), back.transform(test)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.dense, b.dense)
    with pytest.raises(ValueError, match="not a FeatureEncoder state"):
        mm.FeatureEncoder.from_dict({"sparse": ["a"]})


def test_clear_errors():
    enc = mm.FeatureEncoder(["a"], ["d"])
    with pytest.raises(RuntimeError, match="not fitted"):
        enc.transform(frame(a=[1], d=[1.0]))
    with pytest.raises(mm.DataError, match="lacks column") as info:
        enc.fit(frame(a=[1]))
    assert info.value.column == "d"
    with pytest.raises(mm.DataError, match="NaN or infinite") as info:
        enc.fit(frame(a=[1, 2], d=[1.0, np.nan]))
    assert info.value.column == "d"
    filled = mm.FeatureEncoder(["a"], ["d"], dense_fill=0.0).fit(frame(a=[1, 2], d=[2.0, np.nan]))
    assert filled.scalers["d"].low == 0.0
    with pytest.raises(ValueError, match="more than once"):
        mm.FeatureEncoder(["a", "a"])
    with pytest.raises(ValueError, match="at least one"):
        mm.FeatureEncoder()
    with pytest.raises(mm.DataError, match="empty"):
        mm.FeatureEncoder(["a"]).fit(frame(a=[]))
    with pytest.raises(mm.DataError, match="numeric"):
        mm.FeatureEncoder(dense=["d"]).fit(frame(d=["x", "y"]))


def test_input_layer_one_table_with_offsets():
    feats = [mm.SparseFeature("a", 5, 3), mm.SparseFeature("b", 7, 3), mm.DenseFeature("d", 2)]
    layer = mm.InputLayer(feats, init_std=0.1)
    assert layer.table.weight.shape == (12, 3)
    assert layer.offsets.tolist() == [0, 5]
    assert layer.output_dim == mm.input_dim(feats) == 2 * 3 + 2
    ids = torch.tensor([[0, 0], [4, 6], [2, 3]])
    dense = torch.randn(3, 2)
    w = layer.table.weight
    expected = torch.cat([w[ids[:, 0]], w[5 + ids[:, 1]], dense], dim=1)  # (B, I)
    assert torch.equal(layer(ids, dense), expected)
    assert layer.embed(ids).shape == (3, 2, 3)
    with pytest.raises(ValueError, match="feature 'b'.*\\[0, 7\\)"):
        layer.check(torch.tensor([[0, 7]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="shape"):
        layer.check(torch.tensor([[0, 1, 2]]), torch.zeros(1, 2))
    with pytest.raises(TypeError, match="int64"):
        layer.check(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="batch size"):
        layer.check(torch.tensor([[0, 1]]), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="emb_dim"):
        mm.InputLayer([mm.SparseFeature("a", 5, 3), mm.SparseFeature("b", 5, 4)])


def test_feature_spec_validation():
    with pytest.raises(ValueError, match="vocab_size"):
        mm.SparseFeature("a", 0)
    with pytest.raises(ValueError, match="emb_dim"):
        mm.SparseFeature("a", 3, 0)
    with pytest.raises(ValueError, match="dim"):
        mm.DenseFeature("d", 0)
