"""ESMM: the config it accepts, the CTCVR logit, the entire-space loss (pCTR and pCTCVR, never pCVR
directly), the three predictions, training, checkpoints and the fast wing's fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmoe_annotated as mm
from mmoe_annotated.model.esmm import ctcvr_logit
from mmoe_annotated.train.funnel import FUNNEL, predict_funnel
from mmoe_annotated.train.losses import task_losses
from tests.conftest import QUIET, randomize_

FUNNEL_TASKS = dict(task_names=("ctr", "ctcvr"), tower_hidden=(16, 8))


@pytest.fixture(scope="module")
def funnel_data():
    df = mm.load_example(n_rows=1200, seed=2)
    df["ctr"] = df["finish"].astype(float)  # ByteRec's funnel: a like needs a finish
    df["ctcvr"] = (df["finish"] * df["like"]).astype(float)
    train, test = mm.split_by_row(df, 0.75)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim=4).fit(train)
    return train, test, enc


def esmm(enc, **kw) -> mm.ESMM:
    return mm.build_model("esmm", mm.ModelConfig(enc.features, **{**FUNNEL_TASKS, **kw}))


def test_esmm_is_a_registered_kind_and_checks_its_config(funnel_data):
    _, _, enc = funnel_data
    assert mm.MODELS["esmm"] is mm.ESMM and type(esmm(enc)) is mm.ESMM
    with pytest.raises(ValueError, match="ESMM models the funnel with two binary tasks"):
        esmm(enc, task_names=("ctr",), task_types=("binary",))
    with pytest.raises(ValueError, match="two binary tasks.*'regression'"):
        esmm(enc, task_types=("binary", "regression"))
    model = esmm(enc)
    assert model.experts is None and model.gates is None  # towers over the shared embeddings only
    roles = model.parameter_roles()
    assert sum(p.numel() for ps in roles.values() for p in ps) == sum(p.numel() for p in model.parameters())


def test_ctcvr_logit_is_the_logit_of_the_product_and_stable():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2000, generator=g, dtype=torch.float64) * 4 for _ in range(2))
    expected = torch.logit(torch.sigmoid(a) * torch.sigmoid(b))
    torch.testing.assert_close(ctcvr_logit(a, b), expected, rtol=1e-9, atol=1e-9)
    extreme = torch.tensor([100.0, 100.0, -100.0, 30.0, -30.0], requires_grad=True)
    other = torch.tensor([100.0, -100.0, 100.0, 30.0, -30.0], requires_grad=True)
    z = ctcvr_logit(extreme, other)  # float32, where sigmoid(30) rounds to 1 and log(1 - p) would be -inf
    assert torch.isfinite(z).all()
    assert z[0].item() == pytest.approx(100 - np.log(2), abs=1e-4)  # p = sigmoid(100)^2: logit = 100 - log 2
    z.sum().backward()
    assert torch.isfinite(extreme.grad).all() and torch.isfinite(other.grad).all()


def test_the_loss_is_bce_on_pctr_and_pctcvr_and_pcvr_learns_only_through_the_product(funnel_data):
    train, _, enc = funnel_data
    model = esmm(enc)
    randomize_(model)
    x = enc.transform(train.iloc[:64])
    y = torch.tensor(train[["ctr", "ctcvr"]].to_numpy()[:64], dtype=torch.float32)
    out = model(x.ids, x.dense)
    three = model.funnel(x.ids, x.dense).double()
    p_ctr, p_cvr = torch.sigmoid(three[:, 0]), torch.sigmoid(three[:, 1])
    by_hand = torch.stack([F.binary_cross_entropy(p_ctr, y[:, 0].double()),
                           F.binary_cross_entropy(p_ctr * p_cvr, y[:, 1].double())])  # the paper's two terms
    losses = task_losses(out.logits, y, model.config.task_types)
    torch.testing.assert_close(losses.double(), by_hand, rtol=1e-5, atol=1e-6)
    # the CVR tower (stack 1) gets no gradient from the CTR loss: only the product trains it
    losses[0].backward()
    assert all(torch.all(w.grad[1] == 0) for w in model.towers.mlp.weights)
    assert torch.all(model.towers.out.grad[1] == 0) and model.towers.bias.grad[1] == 0
    assert any(torch.any(w.grad[0] != 0) for w in model.towers.mlp.weights)


def test_predictions_for_ctr_cvr_and_ctcvr(funnel_data):
    train, test, enc = funnel_data
    model = esmm(enc)
    history = mm.fit(model, train, mm.TrainConfig(epochs=3, batch_size=64, **QUIET), encoder=enc, valid=test)
    assert np.isfinite(history["train_loss"]).all()
    three = predict_funnel(model, test, encoder=enc)
    two = mm.predict(model, test, encoder=enc)
    assert FUNNEL == ("ctr", "cvr", "ctcvr") and three.shape == (len(test), 3)
    np.testing.assert_allclose(three[:, 2], three[:, 0] * three[:, 1], rtol=1e-5)  # pCTCVR = pCTR * pCVR
    np.testing.assert_allclose(two, three[:, [0, 2]], rtol=1e-5, atol=1e-7)  # the tasks are CTR and CTCVR
    assert (three[:, 2] <= three[:, 0] + 1e-7).all()  # the funnel never widens
    metrics = mm.evaluate(model, test, encoder=enc)
    assert set(metrics) == {"ctr", "ctcvr"} and metrics["ctr"]["auc"] > 0.55  # it learned the click
    with pytest.raises(TypeError, match="predict_funnel needs an ESMM"):
        predict_funnel(mm.MMoE(mm.ModelConfig(enc.features)), test, encoder=enc)


def test_checkpoint_round_trip(tmp_path, funnel_data):
    train, test, enc = funnel_data
    model = esmm(enc)
    mm.fit(model, train, mm.TrainConfig(epochs=1, **QUIET), encoder=enc)
    loaded = mm.load_checkpoint(mm.save_checkpoint(tmp_path / "esmm.ckpt", model, enc))
    assert loaded.kind == "esmm" and type(loaded.model) is mm.ESMM
    assert np.array_equal(predict_funnel(loaded.model, test, encoder=loaded.encoder),
                          predict_funnel(model, test, encoder=enc))


def test_the_fast_wing_falls_back_to_forward_with_the_same_numbers(funnel_data):
    train, test, enc = funnel_data
    model = esmm(enc)
    randomize_(model)
    assert mm.fast.fused.supports(model) == "ESMM has its own forward"  # so the wing runs model.forward
    fast, fast_gates = mm.fast.predict(model, test, encoder=enc, return_gates=True)
    taught, taught_gates = mm.predict(model, test, encoder=enc, return_gates=True)
    assert np.array_equal(fast, taught) and np.array_equal(fast_gates, taught_gates)
    taught, quick = esmm(enc), esmm(enc)
    cfg = mm.TrainConfig(epochs=2, batch_size=64, **QUIET)
    mm.fit(taught, train, cfg, encoder=enc)
    mm.fast.fit(quick, train, cfg, encoder=enc, block_rows=24)
    for (n, p), q in zip(taught.named_parameters(), quick.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=lambda m: f"{n}: {m}")


def test_masked_conversion_labels_and_gradnorm_train(funnel_data):
    """ESMM trains with learned task weights (GradNorm on the shared table) and with missing labels."""
    train, test, enc = funnel_data
    masked = train.copy()
    masked.loc[masked["ctr"] == 0, "ctcvr"] = np.nan  # no label where the funnel was not entered
    model = esmm(enc)
    mm.fit(model, masked, mm.TrainConfig(epochs=1, task_balancing="gradnorm", **QUIET), encoder=enc)
    assert np.isfinite(mm.predict(model, test, encoder=enc)).all()
