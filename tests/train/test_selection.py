"""Early stopping per task (mmoe_annotated.train.selection), in fit and fast.fit."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.train.selection import EarlyStopping, Stopper, task_models
from tests.conftest import QUIET, small_model


def _cfg(**kw):
    return mm.TrainConfig(batch_size=64, epochs=8, seed=0, **QUIET, **kw)


@pytest.mark.parametrize("bad, match", [
    (dict(metric="accuracy"), "metric"), (dict(tasks="like"), "tasks"), (dict(patience=0), "patience"),
    (dict(min_delta=-1.0), "min_delta"), (dict(restore="first"), "restore")])
def test_bad_settings_are_refused_by_name(bad, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**bad)


def test_restoring_one_best_state_needs_one_task(split):
    train, test, enc = split
    with pytest.raises(ValueError, match="restores one task's best weights"):
        mm.fit(small_model(enc), train, _cfg(early_stopping=EarlyStopping()), encoder=enc, valid=test)
    with pytest.raises(ValueError, match="does not have"):
        mm.fit(small_model(enc), train, _cfg(early_stopping=EarlyStopping(tasks=("clicks",))), encoder=enc,
               valid=test)


def test_early_stopping_needs_validation_rows(split):
    train, _, enc = split
    with pytest.raises(ValueError, match="valid="):
        mm.fit(small_model(enc), train, _cfg(early_stopping=EarlyStopping(tasks=("like",))), encoder=enc)


def test_the_stopper_by_hand():
    model = mm.MMoE(mm.ModelConfig((mm.DenseFeature("x", 1),)))
    stopper = Stopper(EarlyStopping(metric="logloss", patience=2, restore="last"), model)
    seen = []
    for epoch, (f, l) in enumerate([(0.5, 0.3), (0.4, 0.31), (0.45, 0.29), (0.41, 0.35), (0.42, 0.36)], 1):
        seen.append(stopper.update({"valid_finish_logloss": f, "valid_like_logloss": l}, model, epoch))
    assert stopper.best_epoch == {"finish": 2, "like": 3}
    assert seen == [False, False, False, False, True]  # like last improved at 3: 5 - 3 >= 2


def test_fit_stops_restores_the_best_epoch_and_records_it(split):
    train, test, enc = split
    rule = EarlyStopping(metric="logloss", tasks=("finish",), patience=1)
    model = small_model(enc)
    history = mm.fit(model, train, _cfg(lr=0.05, early_stopping=rule), encoder=enc, valid=test)
    frame = history.to_frame()
    best = int(frame["valid_finish_logloss"].idxmin())
    assert history.best_epochs == {"finish": best}
    assert len(history) == best + 1 or len(history) == 8  # stopped one epoch after the best, or at the cap
    restored = mm.evaluate(model, test, encoder=enc)["finish"]["logloss"]
    assert restored == pytest.approx(frame.loc[best, "valid_finish_logloss"], rel=1e-6)


def test_per_task_states_give_one_model_per_task(split):
    train, test, enc = split
    rule = EarlyStopping(metric="auc", patience=2, restore="last", keep_states=True)
    model = small_model(enc)
    history = mm.fit(model, train, _cfg(lr=0.05, early_stopping=rule), encoder=enc, valid=test)
    frame = history.to_frame()
    models = task_models(model, history)
    assert set(models) == {"finish", "like"}
    for t, m in models.items():
        auc = mm.evaluate(m, test, encoder=enc)[t]["auc"]
        assert auc == pytest.approx(frame[f"valid_{t}_auc"].max(), rel=1e-6)
        assert history.best_epochs[t] == int(frame[f"valid_{t}_auc"].idxmax())


def test_fast_fit_stops_where_fit_stops(split):
    train, test, enc = split
    rule = EarlyStopping(metric="logloss", tasks=("like",), patience=1)
    a, b = small_model(enc), small_model(enc)
    ha = mm.fit(a, train, _cfg(lr=0.05, early_stopping=rule), encoder=enc, valid=test)
    hb = mm.fast.fit(b, train, _cfg(lr=0.05, early_stopping=rule), encoder=enc, valid=test)
    assert len(ha) == len(hb) < 8 and ha.best_epochs == hb.best_epochs
    for p, q in zip(a.parameters(), b.parameters()):  # float32 rounding, grown over a few epochs at lr 0.05
        torch.testing.assert_close(p, q, rtol=0, atol=5e-4)


def test_without_a_rule_every_epoch_runs(split):
    train, test, enc = split
    history = mm.fit(small_model(enc), train, replace(_cfg(), epochs=3), encoder=enc, valid=test)
    assert len(history) == 3 and history.best_epochs == {}
