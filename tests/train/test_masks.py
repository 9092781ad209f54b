"""Missing labels and task masks: a NaN label is missing for its task.

The loss of a task averages (or sums) over its labelled rows, a masked row sends exactly zero
gradient to that task's tower, a batch with no label of a task gives no NaN, evaluation scores
each task on its labelled rows and says how many, and training (taught and fast, in blocks)
accepts such data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.train.losses import labelled_rows, task_losses
from tests.conftest import QUIET, randomize_, small_model


def masked_labels(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n, 2), generator=g).float()  # (B, T)
    missing = torch.zeros(n, 2, dtype=torch.bool)
    missing[::3, 1] = True  # every third row lacks task 1's label
    y[missing] = float("nan")
    return y, missing


@pytest.mark.parametrize("types", [("binary", "binary"), ("binary", "regression")])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_a_task_loss_covers_its_labelled_rows_only(types, reduction):
    y, missing = masked_labels()
    logits = torch.randn(len(y), 2, generator=torch.Generator().manual_seed(1))
    losses = task_losses(logits, y, types, reduction)
    keep = ~missing[:, 1]
    expected_0 = task_losses(logits[:, :1], y[:, :1], types[:1], reduction)
    expected_1 = task_losses(logits[keep, 1:], y[keep, 1:], types[1:], reduction)
    torch.testing.assert_close(losses, torch.cat([expected_0, expected_1]), rtol=1e-6, atol=0)
    assert labelled_rows(y).tolist() == [40.0, 26.0]


def test_without_missing_labels_the_loss_is_the_plain_one_bit_for_bit():
    y = torch.randint(0, 2, (32, 2)).float()
    logits = torch.randn(32, 2)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    assert torch.equal(task_losses(logits, y, ("binary", "binary")), plain.mean(0))
    assert torch.equal(task_losses(logits, y, ("binary", "binary"), "sum"), plain.sum(0))


def test_a_masked_row_sends_exactly_zero_gradient_to_the_tasks_tower(split):
    _, _, enc = split
    model = small_model(enc)
    randomize_(model)  # large weights: every entry of every gradient matters
    train = split[0].iloc[:48]
    x = enc.transform(train)
    y, missing = masked_labels(48)
    out = model(x.ids, x.dense)
    out.logits.retain_grad()
    task_losses(out.logits, y, model.config.task_types, "sum")[1].backward()
    grad = out.logits.grad  # (B, T)
    assert torch.all(grad[missing[:, 1], 1] == 0) and torch.all(grad[~missing[:, 1], 1] != 0)
    assert torch.all(grad[:, 0] == 0)  # task 1's loss reaches no other task's logit
    tower_grads = [p.grad.clone() for p in model.towers.parameters()]
    # the masked rows' labels and inputs do not matter: change both, and task 1's tower gradient stays
    model.zero_grad()
    keep = ~missing[:, 1]
    out = model(x.ids[keep], x.dense[keep])
    task_losses(out.logits, y[keep], model.config.task_types, "sum")[1].backward()
    for p, g in zip(model.towers.parameters(), tower_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)


def test_a_batch_without_any_label_of_a_task_gives_zero_loss_and_no_nan():
    logits = torch.randn(8, 2, requires_grad=True)
    y = torch.randint(0, 2, (8, 2)).float()
    y[:, 1] = float("nan")
    for reduction in ("mean", "sum"):
        losses = task_losses(logits, y, ("binary", "binary"), reduction)
        assert losses[1].item() == 0.0 and torch.isfinite(losses).all()
        (grad,) = torch.autograd.grad(losses.sum(), logits)
        assert torch.isfinite(grad).all() and torch.all(grad[:, 1] == 0)


def test_evaluate_scores_each_task_on_its_labelled_rows_and_counts_them(split):
    train, test, enc = split
    model = small_model(enc)
    mm.fit(model, train.iloc[:400], mm.TrainConfig(epochs=1, **QUIET), encoder=enc)
    masked = test.copy()
    masked["like"] = masked["like"].astype(float)
    gone = np.arange(len(masked)) % 4 == 0
    masked.loc[gone, "like"] = np.nan
    metrics = mm.evaluate(model, masked, encoder=enc)
    subset = mm.evaluate(model, test[~gone], encoder=enc)
    full = mm.evaluate(model, test, encoder=enc)
    assert metrics["like"]["labelled"] == int((~gone).sum()) and "labelled" not in metrics["finish"]
    assert metrics["like"]["auc"] == pytest.approx(subset["like"]["auc"], abs=1e-12)
    assert metrics["like"]["logloss"] == pytest.approx(subset["like"]["logloss"], abs=1e-9)
    assert metrics["finish"] == full["finish"]  # the other task keeps every row
    masked["like"] = np.nan
    with pytest.warns(RuntimeWarning, match="no row of the evaluation split has a label"):
        none = mm.evaluate(model, masked, encoder=enc)
    assert np.isnan(none["like"]["auc"]) and none["like"]["labelled"] == 0


def test_fit_with_missing_labels_fast_in_blocks_equals_taught(split):
    """A DataFrame with NaN labels trains in the taught loop and in the fast wing's blocks to the
    same weights; the masked rows never reach the like tower's loss."""
    train, _, enc = split
    train = train.iloc[:200].copy()
    train["like"] = train["like"].astype(float)
    train.loc[train.index[::2], "like"] = np.nan

    def run(fit, **kw):
        model = small_model(enc)
        cfg = mm.TrainConfig(batch_size=64, epochs=2, **QUIET)
        return model, fit(model, train, cfg, encoder=enc, **kw)

    taught, h_taught = run(mm.fit)
    fast, h_fast = run(mm.fast.fit, block_rows=24)
    assert np.isfinite(h_taught["train_like_loss"]).all()
    for (n, p), q in zip(taught.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=lambda m: f"{n}: {m}")
    np.testing.assert_allclose(h_fast["train_like_loss"], h_taught["train_like_loss"], rtol=1e-5)


def test_a_missing_label_column_is_still_an_error(split):
    train, _, enc = split
    with pytest.raises(ValueError, match=r"lacks label column\(s\) \['like'\]"):
        mm.fit(small_model(enc), train.drop(columns="like"), mm.TrainConfig(epochs=1, **QUIET), encoder=enc)
