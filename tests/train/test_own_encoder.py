"""A model takes only its own encoder: fit, predict, evaluate and gate_weights (taught and fast)
refuse an encoder fitted on other rows, with the comparison save_checkpoint makes."""
from __future__ import annotations

import pytest

import mmoe_annotated as mm
from tests.conftest import QUIET, small_model


@pytest.fixture(scope="module")
def pair(split):
    """The model's encoder, and one refit on a tenth of the rows: smaller vocabularies, so every ID
    it makes lies inside the model's tables (the old range check let it through)."""
    train, test, enc = split
    other = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim=4).fit(train.iloc[:400])
    assert other.features != enc.features
    x = other.transform(test)
    sizes = [f.vocab_size for f in enc.features if isinstance(f, mm.SparseFeature)]
    assert all(int(x.ids[:, i].max()) < size for i, size in enumerate(sizes))
    return train, test, enc, other


ONE_EPOCH = mm.TrainConfig(epochs=1, batch_size=256, **QUIET)
CALLS = {
    "fit": lambda m, d, e: mm.fit(m, d, ONE_EPOCH, encoder=e),
    "predict": lambda m, d, e: mm.predict(m, d, encoder=e),
    "evaluate": lambda m, d, e: mm.evaluate(m, d, encoder=e),
    "gate_weights": lambda m, d, e: mm.gate_weights(m, d, encoder=e),
    "fast.fit": lambda m, d, e: mm.fast.fit(m, d, ONE_EPOCH, encoder=e),
    "fast.predict": lambda m, d, e: mm.fast.predict(m, d, encoder=e),
    "fast.evaluate": lambda m, d, e: mm.fast.evaluate(m, d, encoder=e),
    "fast.gate_weights": lambda m, d, e: mm.fast.gate_weights(m, d, encoder=e),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_an_encoder_fitted_on_other_rows_is_refused(pair, name):
    train, test, enc, other = pair
    model = small_model(enc)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"the encoder does not match the model.*'uid': encoder "
                                         r"vocab_size=\d+, emb_dim=4 vs model vocab_size=\d+"):
        CALLS[name](model, train if name.endswith("fit") else test, other)
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())  # nothing trained


@pytest.mark.parametrize("name", ["predict", "fast.predict", "evaluate"])
def test_the_models_own_encoder_still_works(pair, name):
    _, test, enc, _ = pair
    assert CALLS[name](small_model(enc), test, enc) is not None


def test_one_comparison_for_training_and_saving(pair, tmp_path):
    """save_checkpoint and the data's entry make the same comparison and say the same thing."""
    train, test, enc, other = pair
    model = small_model(enc)
    with pytest.raises(ValueError) as saving:
        mm.save_checkpoint(tmp_path / "m.ckpt", model, other)
    with pytest.raises(ValueError) as predicting:
        mm.predict(model, test, encoder=other)
    assert str(saving.value) == str(predicting.value)


def test_other_columns_are_named(pair):
    train, test, enc, _ = pair
    fewer = mm.FeatureEncoder(["uid", "item_id"], mm.DENSE_FEATURES, emb_dim=4).fit(train)
    with pytest.raises(ValueError, match=r"columns: encoder \['uid', 'item_id'"):
        mm.predict(small_model(enc), test, encoder=fewer)
