"""No rows in, no rows out: predict and gate_weights (taught and fast) return arrays of the right
shape for a zero-row frame or zero-row tensors, for every model kind; metrics of no rows still fail."""
from __future__ import annotations

import numpy as np
import pytest

import mmoe_annotated as mm
from tests.conftest import SMALL


@pytest.fixture(scope="module")
def data(split):
    _, test, enc = split
    return test, enc


def _model(kind, enc):
    return mm.build_model(kind, mm.ModelConfig(enc.features, **SMALL))


@pytest.mark.parametrize("kind", sorted(mm.MODELS))
@pytest.mark.parametrize("path", ["taught", "fast"])
def test_a_zero_row_frame_gives_empty_predictions_and_gates(data, kind, path):
    test, enc = data
    model = _model(kind, enc)
    predict, gate_weights = ((mm.predict, mm.gate_weights) if path == "taught"
                             else (mm.fast.predict, mm.fast.gate_weights))
    some, some_gates = predict(model, test.iloc[:7], encoder=enc, return_gates=True)
    preds, gates = predict(model, test.iloc[:0], encoder=enc, return_gates=True)
    assert preds.shape == (0,) + some.shape[1:] and preds.dtype == some.dtype
    assert gates.shape == (0,) + some_gates.shape[1:] and gates.dtype == some_gates.dtype
    assert predict(model, test.iloc[:0], encoder=enc).shape == (0, model.num_tasks)
    assert gate_weights(model, test.iloc[:0], encoder=enc).shape == (0,) + some_gates.shape[1:]


def test_zero_row_tensors_too(data):
    test, enc = data
    model = _model("mmoe", enc)
    x = enc.transform(test).index(slice(0, 0))
    assert mm.predict(model, x).shape == mm.fast.predict(model, x).shape == (0, 2)
    assert isinstance(mm.predict(model, x), np.ndarray)


def test_metrics_of_no_rows_still_fail(data):
    test, enc = data
    for evaluate in (mm.evaluate, mm.fast.evaluate):
        with pytest.raises(ValueError, match="the evaluation set is empty"):
            evaluate(_model("mmoe", enc), test.iloc[:0], encoder=enc)
