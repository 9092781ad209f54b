"""Calibration: ECE by hand, scikit-learn's maps reproduced from their JSON, a calibrated input left
unchanged, order kept, and a fitted calibrator that only transforms."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

import mmoe_annotated as mm


def test_ece_by_hand():
    # bin [0.1, 0.2): predicted 0.1 twice, observed 1 of 2 -> gap 0.4, weight 2/4
    # bin [0.9, 1.0]: predicted 0.9 twice, observed 2 of 2 -> gap 0.1, weight 2/4
    y, p = [1, 0, 1, 1], [0.1, 0.1, 0.9, 0.9]
    assert mm.expected_calibration_error(y, p, bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    table = mm.reliability(y, p, bins=10)
    assert table["rows"].tolist() == [2, 2] and table["observed"].tolist() == [0.5, 1.0]


def test_ece_rejects_bad_input():
    with pytest.raises(ValueError, match="0 or 1"):
        mm.expected_calibration_error([2, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mm.expected_calibration_error([1, 0], [1.5, 0.2])


def _calibrated():
    """Each probability 0.1 .. 0.9 on 10 rows, exactly that share of them positive."""
    p = np.repeat(np.arange(1, 10) / 10, 10)
    y = np.concatenate([[1] * k + [0] * (10 - k) for k in range(1, 10)]).astype(float)
    return p, y


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_a_calibrated_input_stays_unchanged(method):
    p, y = _calibrated()
    assert mm.expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)
    cal = mm.Calibrator(method).fit(p[:, None], y[:, None], ["finish"])
    assert np.allclose(cal.transform(p[:, None])[:, 0], p, atol=1e-4)


def _skewed(seed=0, m=5000):
    rng = np.random.default_rng(seed)
    true = rng.beta(1, 4, m)
    y = (rng.random(m) < true).astype(float)
    p = np.clip(true ** 0.6, 0, 1)  # over-confident: every probability too high
    return p, y


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibration_lowers_ece_and_keeps_the_order(method):
    p, y = _skewed()
    p2, y2 = _skewed(1)  # other rows of the same kind: the map is fitted on the first only
    cal = mm.Calibrator(method).fit(p[:, None], y[:, None], ["like"])
    q = cal.transform(p2[:, None])[:, 0]
    assert mm.expected_calibration_error(y2, q) < mm.expected_calibration_error(y2, p2) / 2
    order = np.argsort(p2)
    assert (np.diff(q[order]) >= -1e-12).all()  # non-decreasing: a user's order never flips
    assert cal.rows == len(p)


def test_isotonic_equals_sklearns_prediction():
    p, y = _skewed()
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    cal = mm.Calibrator("isotonic").fit(p[:, None], y[:, None], ["like"])
    new = np.linspace(-0.1, 1.1, 301).clip(0, 1)
    assert np.allclose(cal.transform(new[:, None])[:, 0], ref.predict(new), atol=1e-12)


def test_calibrator_round_trips_through_json_and_transforms_without_refitting():
    p, y = _skewed()
    preds, labels = np.stack([p, p ** 2], 1), np.stack([y, y], 1)
    cal = mm.Calibrator("platt").fit(preds, labels, ["finish", "like"])
    again = mm.Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    other = np.random.default_rng(5).random((50, 2))
    assert np.array_equal(again.transform(other), cal.transform(other))
    before = cal.to_dict()
    cal.transform(other)
    assert cal.to_dict() == before


def test_regression_task_passes_through_and_unfitted_is_refused():
    p, y = _skewed()
    preds = np.stack([p, 3.0 * p], 1)
    cal = mm.Calibrator("isotonic").fit(preds, np.stack([y, 3 * p], 1), ["finish", "watch"], ["binary", "regression"])
    assert np.array_equal(cal.transform(preds)[:, 1], preds[:, 1])
    with pytest.raises(RuntimeError, match="not fitted"):
        mm.Calibrator().transform(preds)
    with pytest.raises(ValueError, match="method"):
        mm.Calibrator("temperature")
    with pytest.raises(ValueError, match="one class"):
        mm.Calibrator().fit(p[:, None], np.zeros((len(p), 1)), ["like"])


def test_predict_keeps_the_models_own_probabilities():
    df = mm.load_example(n_rows=400, seed=1)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES).fit(df)
    model = mm.MMoE(mm.ModelConfig(enc.features, expert_hidden=(8,), tower_hidden=(4,), seed=0))
    before = mm.predict(model, df, encoder=enc)
    mm.Calibrator("platt").fit(before, df[list(mm.TASKS)].to_numpy(), mm.TASKS)
    assert np.array_equal(mm.predict(model, df, encoder=enc), before)


def test_plot_reliability_draws_each_curve():
    import matplotlib

    matplotlib.use("Agg")
    p, y = _skewed()
    ax = mm.plot_reliability({"model": (y, p)})
    assert len(ax.lines) == 2 and "ECE" in ax.get_legend().get_texts()[1].get_text()
