"""FeatureEncoder(min_count=...): rare training values map to OOV, so the OOV row is trained."""
import pandas as pd
import pytest

import mmoe_annotated as mm


def test_rare_values_map_to_oov_and_frequent_values_keep_ids():
    train = pd.DataFrame({"author": [7, 7, 7, 8, 8, 9]})
    enc = mm.FeatureEncoder(["author"], min_count=2).fit(train)
    ids = enc.transform(pd.DataFrame({"author": [7, 8, 9, 10]})).ids[:, 0].tolist()
    assert ids[0] >= mm.NUM_RESERVED and ids[1] >= mm.NUM_RESERVED and ids[0] != ids[1]
    assert ids[2] == mm.OOV  # seen once in training: below min_count
    assert ids[3] == mm.OOV  # never seen
    assert enc.features[0].vocab_size == mm.NUM_RESERVED + 2


def test_default_keeps_every_value_like_label_encoder():
    train = pd.DataFrame({"author": [1, 2, 3]})
    enc = mm.FeatureEncoder(["author"]).fit(train)
    assert (enc.transform(train).ids >= mm.NUM_RESERVED).all()


def test_min_count_survives_serialisation():
    train = pd.DataFrame({"author": [1, 1, 2]})
    enc = mm.FeatureEncoder(["author"], min_count=2).fit(train)
    again = mm.FeatureEncoder.from_dict(enc.to_dict())
    assert again.min_count == 2
    assert again.transform(train).ids.tolist() == enc.transform(train).ids.tolist()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_min_count_must_be_a_positive_whole_number(bad):
    with pytest.raises(ValueError, match="min_count"):
        mm.FeatureEncoder(["author"], min_count=bad)
