"""Training: it learns, task weights and L2 act as documented, metrics are honest, predict has the right shape."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.train.losses import regularization

from tests.conftest import QUIET, SMALL, small_model  # the split fixture comes from conftest too


def test_learns_on_the_embedded_data(split):
    """After a short fit, held-out AUC is clearly above chance (0.5) for both tasks."""
    train, test, enc = split
    model = mm.MMoE(mm.ModelConfig(enc.features))  # the tutorial's defaults
    before = mm.evaluate(model, test, encoder=enc)
    history = mm.fit(model, train, mm.TrainConfig(batch_size=64, epochs=3, **QUIET), encoder=enc, valid=test)
    after = mm.evaluate(model, test, encoder=enc)
    assert after["finish"]["auc"] > 0.65, after
    assert after["like"]["auc"] > 0.55, after
    assert after["finish"]["auc"] > before["finish"]["auc"] + 0.1
    frame = history.to_frame()
    assert list(frame.index) == [1, 2, 3]
    assert frame["train_loss"].iloc[-1] < frame["train_loss"].iloc[0]
    assert frame["valid_finish_auc"].iloc[-1] == pytest.approx(after["finish"]["auc"])
    assert {"train_finish_loss", "train_like_loss", "valid_like_logloss", "seconds"} <= set(frame.columns)
    assert len(history) == 3 and len(history["train_loss"]) == 3


def test_task_weights_change_the_loss(split):
    train, _, enc = split
    train = train.iloc[:640]
    cfg = dict(batch_size=64, epochs=2, **QUIET)
    h = mm.fit(small_model(enc), train, mm.TrainConfig(task_weights=(2.0, 0.5), **cfg), encoder=enc)
    for r in h.records:  # the reported loss is the weighted sum of the per-task losses
        assert r["train_loss"] == pytest.approx(2.0 * r["train_finish_loss"] + 0.5 * r["train_like_loss"], rel=1e-5)
    # a zero weight switches a task off: its tower gets no gradient and never moves
    model = small_model(enc)
    like_tower = model.towers.out[1].detach().clone()
    finish_tower = model.towers.out[0].detach().clone()
    mm.fit(model, train, mm.TrainConfig(task_weights=(1.0, 0.0), embedding_l2=0.0, **cfg), encoder=enc)
    assert torch.equal(model.towers.out[1], like_tower)
    assert not torch.equal(model.towers.out[0], finish_tower)
    # and different weights give a different model
    a, b = small_model(enc), small_model(enc)
    mm.fit(a, train, mm.TrainConfig(task_weights=(1.0, 1.0), **cfg), encoder=enc)
    mm.fit(b, train, mm.TrainConfig(task_weights=(1.0, 5.0), **cfg), encoder=enc)
    assert not np.allclose(mm.predict(a, train, encoder=enc), mm.predict(b, train, encoder=enc))
    with pytest.raises(ValueError, match="task_weights has 3 entries"):
        mm.fit(small_model(enc), train, mm.TrainConfig(task_weights=(1, 1, 1), **cfg), encoder=enc)


def test_weight_l2_uses_parameter_roles(split):
    _, test, enc = split
    model = small_model(enc)
    for p in model.parameters():  # non-trivial values everywhere
        torch.nn.init.normal_(p, std=0.3)
    ids = enc.transform(test.iloc[:16]).ids
    roles = model.parameter_roles()
    cfg = mm.TrainConfig(weight_l2=0.01, embedding_l2=0.0)
    expected = 0.01 * sum(w.square().sum() for w in roles["weights"])
    torch.testing.assert_close(regularization(model, cfg, ids), expected)
    # every weight matrix (experts, gate MLPs and output maps, tower MLPs and outputs) is in, biases and the table are out
    weight_ids = {id(p) for p in roles["weights"]}
    for module in (model.experts, model.gates.mlp, model.towers.mlp):
        assert all(id(w) in weight_ids for w in module.weights)
        assert not any(id(b) in weight_ids for b in module.biases)
    assert id(model.gates.out) in weight_ids and id(model.towers.out) in weight_ids
    assert id(model.inputs.table.weight) not in weight_ids and id(model.towers.bias) not in weight_ids
    # the gradient of the penalty alone reaches weights, never biases
    model.zero_grad()
    regularization(model, cfg, ids).backward()
    assert all(p.grad is None or not p.grad.any() for p in roles["biases"] + roles["embedding"])
    assert all(p.grad is not None and p.grad.any() for p in roles["weights"])


def test_embedding_l2_modes(split):
    _, test, enc = split
    model = small_model(enc)
    ids = enc.transform(test.iloc[:16]).ids
    table = model.inputs.table.weight
    reg = regularization(model, mm.TrainConfig(embedding_l2=1e-3, embedding_l2_mode="table"), ids)
    torch.testing.assert_close(reg, 1e-3 * table.square().sum())
    rows = model.inputs.embed(ids).square().sum()
    reg = regularization(model, mm.TrainConfig(embedding_l2=1e-3, loss_reduction="sum"), ids)
    torch.testing.assert_close(reg, 1e-3 * rows)
    reg = regularization(model, mm.TrainConfig(embedding_l2=1e-3, loss_reduction="mean"), ids)
    torch.testing.assert_close(reg, 1e-3 * rows / 16)
    assert regularization(model, mm.TrainConfig(embedding_l2=0.0), ids).item() == 0.0


def test_evaluate_single_class_split_gives_nan_and_a_warning(split):
    train, test, enc = split
    model = small_model(enc)
    no_likes = test[test["like"] == 0].iloc[:50]
    with pytest.warns(RuntimeWarning, match="'like'.*only one class"):
        metrics = mm.evaluate(model, no_likes, encoder=enc)
    assert np.isnan(metrics["like"]["auc"])
    assert np.isfinite(metrics["like"]["logloss"])
    assert 0.0 <= metrics["finish"]["auc"] <= 1.0
    # the metrics are scikit-learn's over the whole split
    from sklearn.metrics import log_loss, roc_auc_score
    p = mm.predict(model, test, encoder=enc)
    m = mm.evaluate(model, test, encoder=enc)
    assert m["finish"]["auc"] == pytest.approx(roc_auc_score(test["finish"], p[:, 0]), abs=1e-6)
    assert m["like"]["logloss"] == pytest.approx(log_loss(test["like"], p[:, 1]), abs=1e-5)


@pytest.mark.parametrize("kind", ["mmoe", "omoe", "shared_bottom"])
def test_predict_shapes(split, kind):
    _, test, enc = split
    model = mm.build_model(kind, mm.ModelConfig(enc.features, num_experts=4, **SMALL))
    M = 37
    frame = test.iloc[:M]
    p = mm.predict(model, frame, encoder=enc)
    assert isinstance(p, np.ndarray) and p.shape == (M, 2) and ((p > 0) & (p < 1)).all()
    p2, g = mm.predict(model, frame, encoder=enc, return_gates=True, batch_size=5)  # several batches
    np.testing.assert_allclose(p2, p, rtol=1e-6)
    assert g.shape == (M, 2, 1 if kind == "shared_bottom" else 4)
    np.testing.assert_allclose(g.sum(-1), 1.0, rtol=1e-6)
    one = mm.predict(model, frame.iloc[:1], encoder=enc)  # batch size 1
    assert one.shape == (1, 2)
    np.testing.assert_allclose(one[0], p[0], rtol=1e-5)
    x = enc.transform(frame)
    np.testing.assert_allclose(mm.predict(model, x), p, rtol=1e-6)  # EncodedFeatures in, same numbers
    assert mm.gate_weights(model, frame, encoder=enc).shape == g.shape


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")  # torch's own note
@pytest.mark.parametrize("optimizer", ["adagrad", "adam", "sgd"])
def test_sparse_embeddings(split, optimizer):
    train, test, enc = split
    train = train.iloc[:256]
    model = small_model(enc, sparse_embeddings=True)
    table = model.inputs.table.weight
    before = table.detach().clone()
    mm.fit(model, train, mm.TrainConfig(optimizer=optimizer, batch_size=32, epochs=1, **QUIET), encoder=enc)
    ids = enc.transform(train).ids + model.inputs.offsets  # rows of the one table that were looked up
    used = torch.zeros(table.shape[0], dtype=torch.bool)
    used[ids.flatten()] = True
    changed = (table.detach() != before).any(dim=1)
    assert changed[used].any()
    assert not changed[~used].any()  # sparse: rows never looked up are never touched
    assert np.isfinite(mm.predict(model, test, encoder=enc)).all()
    with pytest.raises(ValueError, match="dense gradients"):
        mm.fit(model, train, mm.TrainConfig(embedding_l2_mode="table", **QUIET), encoder=enc)


def test_dense_table_mode_touches_every_row(split):
    """DeepCTR-Torch's whole-table L2 moves rows that the batch never looked up."""
    train, _, enc = split
    model = small_model(enc)
    before = model.inputs.table.weight.detach().clone()
    mm.fit(model, train.iloc[:64], mm.TrainConfig(embedding_l2=1e-2, embedding_l2_mode="table", batch_size=64,
                                                  epochs=1, **QUIET), encoder=enc)
    assert (model.inputs.table.weight.detach() != before).any(dim=1).all()


def test_mixed_binary_and_regression_training():
    df = mm.load_example(n_rows=600, seed=1)
    df["watch"] = df["duration_time"] * df["finish"]  # a regression target
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES).fit(df)
    model = mm.MMoE(mm.ModelConfig(enc.features, task_names=("finish", "watch"),
                                   task_types=("binary", "regression"), **SMALL))
    h = mm.fit(model, df, mm.TrainConfig(batch_size=64, epochs=3, lr=0.05, **QUIET), encoder=enc)
    assert h["train_watch_loss"][-1] < h["train_watch_loss"][0]
    m = mm.evaluate(model, df, encoder=enc)
    assert set(m["finish"]) == {"auc", "logloss"} and set(m["watch"]) == {"mse"}
    # per-task losses: BCE with logits for binary, squared error for regression
    logits = torch.tensor([[0.3, 2.0], [-1.0, 0.5]])
    y = torch.tensor([[1.0, 1.5], [0.0, 0.0]])
    losses = mm.task_losses(logits, y, ("binary", "regression"), "sum")
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0], reduction="sum")
    torch.testing.assert_close(losses, torch.stack([bce, torch.tensor(0.25 + 0.25)]))
    torch.testing.assert_close(mm.task_losses(logits, y, ("binary", "regression"), "mean"), losses / 2)


def test_batch_size_one_and_seeded_runs(split):
    train, test, enc = split
    train = train.iloc[:40]
    cfg = mm.TrainConfig(batch_size=1, epochs=1, **QUIET)
    a, b = small_model(enc, dropout=0.1), small_model(enc, dropout=0.1)
    torch.manual_seed(0)
    mm.fit(a, train, cfg, encoder=enc)
    torch.manual_seed(0)
    mm.fit(b, train, cfg, encoder=enc)
    np.testing.assert_array_equal(mm.predict(a, test, encoder=enc), mm.predict(b, test, encoder=enc))


def test_fit_input_errors(split):
    train, _, enc = split
    model = small_model(enc)
    with pytest.raises(ValueError, match="encoder="):
        mm.fit(model, train, mm.TrainConfig(**QUIET))
    with pytest.raises(ValueError, match="lacks label column"):
        mm.fit(model, train.drop(columns=["like"]), mm.TrainConfig(**QUIET), encoder=enc)
    x = enc.transform(train.iloc[:10])
    with pytest.raises(ValueError, match="binary task 'finish' has label 2"):
        mm.fit(model, (x, np.array([[2, 0]] * 10)), mm.TrainConfig(**QUIET))
    with pytest.raises(ValueError, match="10 rows of features but 9 rows of labels"):
        mm.fit(model, (x, np.zeros((9, 2))), mm.TrainConfig(**QUIET))
    with pytest.raises(ValueError, match="embedding_l2_mode"):
        mm.TrainConfig(embedding_l2_mode="all")
    with pytest.raises(ValueError, match="optimizer"):
        mm.TrainConfig(optimizer="lion")


# ---------------------------------------------------------------------------
# Nothing broken trains or predicts silently (both paths)
# ---------------------------------------------------------------------------

FITS = pytest.mark.parametrize("fit", [mm.fit, mm.fast.fit], ids=["taught", "fast"])
PREDICTS = pytest.mark.parametrize("predict,evaluate", [(mm.predict, mm.evaluate), (mm.fast.predict, mm.fast.evaluate)],
                                   ids=["taught", "fast"])


@FITS
def test_fit_stops_at_the_step_whose_update_broke_the_weights(split, fit):
    train, _, enc = split
    model = small_model(enc)
    # summed over 32 rows, the output bias's gradient is large enough for step 1 to overflow it
    cfg = mm.TrainConfig(optimizer="sgd", lr=1e38, loss_reduction="sum", batch_size=32, epochs=2, **QUIET)
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 2: the training objective is (nan|inf); the weights "
                                                 r"\[.*'towers.bias'.*\] stopped being finite in the update before this step"):
        fit(model, train.iloc[:200], cfg, encoder=enc)
    huge = small_model(enc)  # finite weights so large that the forward pass overflows
    with torch.no_grad():
        huge.towers.out.fill_(3e38)
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1: .* the weights are finite \(the largest is 3e\+38\)"):
        fit(huge, train.iloc[:200], mm.TrainConfig(batch_size=32, **QUIET), encoder=enc)


@FITS
def test_fit_checks_the_weights_after_the_last_update(split, fit):
    train, _, enc = split
    model = small_model(enc)
    cfg = mm.TrainConfig(optimizer="sgd", lr=1e38, loss_reduction="sum", batch_size=64, epochs=1, **QUIET)  # one step
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1: the update left non-finite weights in \["):
        fit(model, train.iloc[:64], cfg, encoder=enc)


@FITS
def test_fit_names_broken_starting_weights_at_the_first_step(split, fit):
    train, _, enc = split
    model = small_model(enc)
    with torch.no_grad():
        model.towers.bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 1: .*\['towers.bias'\]"):
        fit(model, train.iloc[:200], mm.TrainConfig(batch_size=32, **QUIET), encoder=enc)


@PREDICTS
def test_prediction_never_returns_nan_silently(split, predict, evaluate):
    _, test, enc = split
    model = small_model(enc)
    with torch.no_grad():
        model.experts.weights[0][1, 0, 0] = float("inf")  # one broken weight: NaN in every row that uses it
    for call in (lambda: predict(model, test, encoder=enc), lambda: evaluate(model, test, encoder=enc),
                 lambda: predict(model, test, encoder=enc, batch_size=64, return_gates=True)):
        with pytest.raises(FloatingPointError, match=r"rows have non-finite outputs .*'experts.weights.0'"):
            call()


@FITS
def test_an_empty_validation_set_is_refused_before_training(split, fit, monkeypatch):
    train, test, enc = split
    model = small_model(enc)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=r"valid= is empty"):
        fit(model, train.iloc[:200], mm.TrainConfig(batch_size=32, **QUIET), encoder=enc, valid=test.iloc[:0])
    with pytest.raises(ValueError, match=r"valid"):
        fit(model, train.iloc[:200], mm.TrainConfig(batch_size=32, **QUIET), encoder=enc,
            valid=test.drop(columns=["like"]).iloc[:10])
    assert calls == []  # no step ran
