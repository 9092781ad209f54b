"""Task-loss balancing (mmoe_annotated.losses): fixed weights, uncertainty weighting (Kendall et
al. 2018), its renormalised control and GradNorm (Chen et al. 2018), in fit and fast.fit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.train.losses import (BALANCING, GradNorm, NormalizedUncertaintyWeighting, UncertaintyWeighting,
                                         shared_layer, task_balance)

FEATURES = (mm.SparseFeature("a", 10, 4), mm.DenseFeature("d", 2))


def model_config(**kw):
    base = dict(features=FEATURES, task_names=("click", "watch"), task_types=("binary", "regression"),
                num_experts=3, expert_hidden=(8,), gate_hidden=(), tower_hidden=(4,), init_std=1e-2)
    return mm.ModelConfig(**{**base, **kw})


def data(n=128, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 10, (n, 1), generator=g)
    dense = torch.rand(n, 2, generator=g)
    y = torch.stack([(ids[:, 0] > 4).float(), scale * (dense[:, 0] + 0.1 * torch.randn(n, generator=g))], 1)
    return mm.EncodedFeatures(ids, dense), y


def test_config_checks():
    with pytest.raises(ValueError, match="task_balancing"):
        mm.TrainConfig(task_balancing="equal")
    with pytest.raises(ValueError, match="task_weights"):
        mm.TrainConfig(task_balancing="gradnorm", task_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="gradnorm_alpha"):
        mm.TrainConfig(gradnorm_alpha=-1.0)
    with pytest.raises(ValueError, match="balance_lr"):
        mm.TrainConfig(balance_lr=0.0)


def test_uncertainty_objective_is_the_published_form():
    cfg = mm.TrainConfig(task_balancing="uncertainty")
    u = UncertaintyWeighting(("binary", "regression"), cfg, "cpu")
    with torch.no_grad():
        u.log_vars.copy_(torch.tensor([math.log(0.5), math.log(4.0)]))  # sigma^2 = 0.5 and 4
    L = torch.tensor([0.7, 3.0])
    # Kendall et al. eq. 10: L_cls / sigma_1^2 + L_reg / (2 sigma_2^2) + log sigma_1 + log sigma_2
    expected = 0.7 / 0.5 + 3.0 / (2 * 4.0) + math.log(math.sqrt(0.5)) + math.log(2.0)
    assert float(u(L).detach()) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(u.weights().numpy(), [2.0, 1 / 8], rtol=1e-6)


@pytest.mark.parametrize("balancing", ["fixed", "uncertainty", "uncertainty_normalized"])
def test_the_fast_wings_blocks_add_up_to_the_batch_objective(balancing):
    """The fast wing trains a large batch in blocks, each with its share of the loss: the blocks'
    objectives, and their gradients, add up to the taught objective of the whole batch, with
    uncertainty weighting's log term counted once per batch."""
    from mmoe_annotated.fast.train import BLOCKWISE, _block_objective

    model = mm.build_model("mmoe", model_config())
    cfg = mm.TrainConfig(task_balancing=balancing, task_weights=(2.0, 0.5) if balancing == "fixed" else None)
    balance = task_balance(model, cfg, "cpu")
    assert type(balance) in BLOCKWISE
    if balancing != "fixed":
        with torch.no_grad():
            balance.log_vars.copy_(torch.tensor([math.log(0.5), math.log(4.0)]))
    shares = [torch.tensor([0.2, 1.0]), torch.tensor([0.4, 1.5]), torch.tensor([0.1, 0.5])]  # (T,) per block
    whole = balance(sum(shares))
    blocks = sum(_block_objective(balance, share, first=i == 0) for i, share in enumerate(shares))
    assert float(blocks.detach()) == pytest.approx(float(whole.detach()), rel=1e-6)
    if balancing != "fixed":  # the learned log variances get the batch's gradient
        torch.testing.assert_close(torch.autograd.grad(blocks, balance.log_vars)[0],
                                   torch.autograd.grad(whole, balance.log_vars)[0])
    assert type(task_balance(model, mm.TrainConfig(task_balancing="gradnorm"), "cpu")) not in BLOCKWISE


def test_uncertainty_log_variances_reach_their_optimum():
    """For constant losses the minimiser is sigma_k^2 = 2 c_k L_k: 2 L for binary, L for regression."""
    cfg = mm.TrainConfig(task_balancing="uncertainty", optimizer="adam", balance_lr=0.05)
    u = UncertaintyWeighting(("binary", "regression"), cfg, "cpu")
    L = torch.tensor([0.3, 5.0])
    for _ in range(2000):
        u(L).backward()
        u.step()
    np.testing.assert_allclose(torch.exp(u.log_vars).detach().numpy(), [0.6, 5.0], rtol=1e-3)


def test_gradnorm_gradient_is_the_papers():
    """Our closed form of dL_grad/dw equals autograd through the paper's L_grad (eq. 2), built with
    a second-order graph, with the target held constant."""
    model = mm.build_model("mmoe", model_config())
    cfg = mm.TrainConfig(task_balancing="gradnorm", gradnorm_alpha=1.5)
    gn = GradNorm(model, cfg, "cpu")
    x, y = data()
    with torch.no_grad():
        gn.w.copy_(torch.tensor([0.6, 1.4]))
    gn.initial = torch.tensor([0.9, 2.0])
    losses = mm.task_losses(model(x.ids, x.dense).logits, y, model.config.task_types)
    ours = gn.grad_of_weights(losses)
    W, rows = shared_layer(model)
    G = torch.stack([torch.autograd.grad(gn.w[k] * losses[k], W, retain_graph=True, create_graph=True)[0][rows].norm()
                     for k in range(2)])
    ratio = losses.detach() / gn.initial
    target = (G.mean() * (ratio / ratio.mean()) ** 1.5).detach()
    reference = torch.autograd.grad((G - target).abs().sum(), gn.w)[0]
    torch.testing.assert_close(ours, reference)
    assert (ours.abs() > 0).all()


@pytest.mark.parametrize("kind", ["shared_bottom", "mmoe", "ple"])
def test_gradnorm_shared_layer(kind):
    model = mm.build_model(kind, model_config())
    W, rows = shared_layer(model)
    assert any(W is p for p in model.parameters())
    if kind == "ple":  # the last level's shared experts only
        assert W.shape[0] == 2 * 1 + 1 and len(range(W.shape[0])[rows]) == 1
    else:
        assert rows == slice(None)


def test_gradnorm_down_weights_a_task_with_large_gradients():
    """A regression target scaled 30x has a much larger loss and gradient: GradNorm gives it the
    smaller weight; the weights always sum to T."""
    x, y = data(scale=30.0)
    cfg = mm.TrainConfig(epochs=4, batch_size=32, optimizer="adam", task_balancing="gradnorm", balance_lr=0.02,
                         progress=False)
    model = mm.build_model("mmoe", model_config())
    history = mm.fit(model, (x, y), cfg)
    w = history.to_frame()[["train_click_weight", "train_watch_weight"]].to_numpy()
    np.testing.assert_allclose(w.sum(1), 2.0, rtol=1e-5)
    assert w[-1, 1] < w[0, 1] < 1.0 and w[-1, 1] < 0.8  # falls epoch after epoch


@pytest.mark.parametrize("balancing", ["uncertainty", "uncertainty_normalized", "gradnorm"])
@pytest.mark.parametrize("kind", ["mmoe", "ple"])
def test_fit_and_fast_fit_agree(balancing, kind):
    x, y = data(scale=10.0)
    cfg = mm.TrainConfig(epochs=3, batch_size=40, optimizer="adam", task_balancing=balancing, progress=False,
                         embedding_l2=1e-4)
    a, b = mm.build_model(kind, model_config()), mm.build_model(kind, model_config())
    ha = mm.fit(a, (x, y), cfg)
    hb = mm.fast.fit(b, (x, y), cfg, block_rows=16)  # blocks: uncertainty (both) adds up, GradNorm takes the batch
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    cols = ["train_click_weight", "train_watch_weight"]
    np.testing.assert_allclose(ha.to_frame()[cols].to_numpy(), hb.to_frame()[cols].to_numpy(), rtol=1e-4)
    w = ha.to_frame()[cols].to_numpy()
    start = {"uncertainty": [1.0, 0.5], "uncertainty_normalized": [4 / 3, 2 / 3], "gradnorm": [1.0, 1.0]}[balancing]
    # the weights learned (Adam moves both log variances about alike: the renormalised ratio, less)
    assert np.abs(w[-1] - start).max() > (1e-5 if balancing == "uncertainty_normalized" else 1e-3)


def test_fixed_weights_unchanged():
    model = mm.build_model("mmoe", model_config())
    bal = task_balance(model, mm.TrainConfig(task_weights=(2.0, 0.5)), "cpu")
    assert float(bal(torch.tensor([1.0, 4.0]))) == pytest.approx(4.0)
    assert "train_click_weight" not in mm.fit(model, data(), mm.TrainConfig(epochs=1, progress=False)).to_frame()


# ---------------------------------------------------------------------------
# Uncertainty weighting renormalised: the same noise scales, weights that sum to T
# ---------------------------------------------------------------------------

def test_normalized_uncertainty_is_listed_and_built():
    assert "uncertainty_normalized" in BALANCING
    model = mm.build_model("mmoe", model_config())
    balance = task_balance(model, mm.TrainConfig(task_balancing="uncertainty_normalized"), "cpu")
    assert type(balance) is NormalizedUncertaintyWeighting


def test_normalized_uncertainty_weights_sum_to_the_number_of_tasks():
    """The network's gradient is that of sum_k w_k L_k with w = T v / sum(v), v uncertainty
    weighting's weights: the same ratios between the tasks, the scale of the plain sum."""
    cfg = mm.TrainConfig(task_balancing="uncertainty_normalized")
    n = NormalizedUncertaintyWeighting(("binary", "regression"), cfg, "cpu")
    plain = UncertaintyWeighting(("binary", "regression"), cfg, "cpu")
    for u in (n, plain):
        with torch.no_grad():
            u.log_vars.copy_(torch.tensor([math.log(0.05), math.log(4.0)]))  # v = (20, 1/8)
    v = plain.weights()
    assert float(n.weights().sum()) == pytest.approx(2.0)
    torch.testing.assert_close(n.weights(), 2 * v / v.sum())
    assert float(plain.weights().sum()) > 20  # the plain weights: a tenfold larger effective learning rate
    losses = torch.tensor([0.1, 3.0], requires_grad=True)
    grad = torch.autograd.grad(n(losses), losses)[0]  # what reaches the network: the renormalised weights
    torch.testing.assert_close(grad, n.weights())
    torch.testing.assert_close(torch.autograd.grad(plain(losses), losses)[0], v)


def test_normalized_uncertainty_learns_the_log_variances_as_uncertainty_weighting():
    """Given the same losses, step after step, the log variances of both follow the same updates."""
    cfg = mm.TrainConfig(task_balancing="uncertainty", optimizer="adam", balance_lr=0.05)
    plain = UncertaintyWeighting(("binary", "regression"), cfg, "cpu")
    normed = NormalizedUncertaintyWeighting(("binary", "regression"), cfg, "cpu")
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        L = torch.rand(2, generator=g) * torch.tensor([0.5, 6.0]) + 0.05  # the same batch losses for both
        for u in (plain, normed):
            u(L.clone().requires_grad_()).backward()
            u.step()
    torch.testing.assert_close(normed.log_vars, plain.log_vars, rtol=0, atol=1e-6)
    assert not torch.allclose(plain.log_vars, torch.zeros(2))  # they moved
    np.testing.assert_allclose(float(normed.weights().sum()), 2.0, rtol=1e-6)


def test_normalized_uncertainty_in_fit_keeps_its_weights_summing_to_t():
    x, y = data(scale=10.0)
    cfg = mm.TrainConfig(epochs=3, batch_size=32, optimizer="adam", task_balancing="uncertainty_normalized",
                         balance_lr=0.05, progress=False)
    frame = mm.fit(mm.build_model("mmoe", model_config()), (x, y), cfg).to_frame()
    w = frame[["train_click_weight", "train_watch_weight"]].to_numpy()
    np.testing.assert_allclose(w.sum(1), 2.0, rtol=1e-5)
    assert w[-1, 1] < 2 / 3  # the regression task's large loss: a larger noise scale, a smaller weight
