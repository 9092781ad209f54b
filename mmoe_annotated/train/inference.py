"""Prediction and evaluation: ``model.forward`` over a whole split, and metrics per task.

Explained in chapter 7, "Training" (``book/07_training.ipynb``).

:func:`predict` and :func:`evaluate` run the model the chapters explain, batch by batch under
``torch.inference_mode()`` in eval mode, and never return NaN silently. Metrics are computed
over the whole split with scikit-learn (AUC and log loss for binary tasks, MSE for regression),
not averaged over batches (:mod:`~mmoe_annotated.train.metrics`); a split with one class gives
AUC NaN with a warning instead of a crash. The fast wing's versions (``mm.fast.predict`` and
``mm.fast.evaluate``) return the same numbers.

Shape letters: ``B`` batch, ``T`` tasks, ``E`` experts, ``M`` rows of a split.
"""
from __future__ import annotations

import numbers

import torch

from .dataset import as_dataset
from .metrics import task_metrics
from ..features.encoder import FeatureEncoder
from ..features.inputs import EncodedFeatures
from ..model.mmoe import MultiTaskModel
from ..runtime import resolve_device

__all__ = ["predict", "evaluate", "metrics", "probabilities"]


def predict(model: MultiTaskModel, data, *, encoder: FeatureEncoder | None = None, batch_size: int = 8192,
            return_gates: bool = False, device=None):
    """Predictions ``(M, T)`` as a NumPy array: probabilities (sigmoid of the logits) for binary
    tasks, raw values for regression. With ``return_gates=True`` also the gate weights ``(M, T, E)``.
    Data with no rows gives arrays with ``M = 0``."""
    x, _, batch_size, dev = prediction_inputs(model, data, encoder, batch_size, device, labels=False)
    logits, gates = outputs(model, x, batch_size, dev, return_gates)
    preds = probabilities(model, logits).numpy()
    return (preds, gates.numpy()) if return_gates else preds


def evaluate(model: MultiTaskModel, data, *, encoder: FeatureEncoder | None = None, batch_size: int = 8192,
             device=None) -> dict[str, dict[str, float]]:
    """Metrics over the whole split, per task: ``{"finish": {"auc": .., "logloss": ..}, ...}``
    for binary tasks, ``{"mse": ..}`` for regression."""
    x, y, batch_size, dev = prediction_inputs(model, data, encoder, batch_size, device, labels=True)
    logits, _ = outputs(model, x, batch_size, dev, False)
    return metrics(model, y, logits)


@torch.inference_mode()
def outputs(model: MultiTaskModel, x: EncodedFeatures, batch_size: int,
            device: torch.device,
            want_gates: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``model.forward`` over ``x`` batch by batch, in eval mode: logits ``(M, T)`` and,
    when wanted, gates ``(M, T, E)``, on the CPU. The model's train/eval mode is
    restored after."""
    was_training = model.training
    model.eval()
    # at least one batch: no rows still give outputs of the right shape, (0, T) and
    # (0, T, E)
    try:
        outs = [model(*x.index(slice(start, start + batch_size)).to(device))
                for start in range(0, max(len(x), 1), batch_size)]
    finally:
        model.train(was_training)
    logits = torch.cat([o.logits for o in outs]).cpu()  # (M, T)
    check_outputs(model, logits)
    # (M, T, E)
    return logits, torch.cat([o.gates for o in outs]).cpu() if want_gates else None


def prediction_inputs(model: MultiTaskModel, data, encoder: FeatureEncoder | None, batch_size, device, *,
                      labels: bool) -> tuple[EncodedFeatures, torch.Tensor | None, int, torch.device]:
    """What :func:`predict` and :func:`evaluate` (and the fast wing's) do with their arguments before
    any work: the batch size checked, the device chosen (the model is moved there), ``data`` as
    tensors, and at least one row for metrics (predictions of no rows are empty arrays). Returns
    ``(x, y, batch_size, device)``; ``y`` (labels ``(M, T)``) is None when ``labels`` is False."""
    batch_size = check_batch_size(batch_size)
    dev = model_device(model, device)
    x, y = as_dataset(data, model, encoder, labels=labels, source="evaluation data" if labels else "predict data")
    if len(x) == 0 and labels:
        raise ValueError("the evaluation set is empty: metrics need at least one row")
    return x, y, batch_size, dev


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r} (a whole number of rows)")
    return int(batch_size)


def model_device(model: MultiTaskModel, device) -> torch.device:
    """``device`` (checked), or where the model's weights are; the model is moved there."""
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected an MMoE / OMoE / SharedBottom model, got {type(model).__name__}")
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model.to(dev)
    return dev


def check_outputs(model: MultiTaskModel, logits: torch.Tensor) -> None:
    """A prediction is never NaN or infinite without a word: name the task, a row and the cause."""
    bad = ~torch.isfinite(logits)
    if bad.any():
        row, task = (int(v) for v in torch.nonzero(bad)[0])
        broken = non_finite_parameters(model)
        cause = (f"the weights {broken} are not finite (retrain, or load a good checkpoint)" if broken
                 else "the weights are finite, so the inputs are extreme")
        raise FloatingPointError(f"{int(bad.any(1).sum())} of {len(logits)} rows have non-finite outputs "
                                 f"(first: row {row}, task {model.config.task_names[task]!r}); {cause}")


def probabilities(model: MultiTaskModel, logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid of the logits of binary tasks; regression outputs as they are. ``(M, T)``."""
    binary = torch.tensor([t == "binary" for t in model.config.task_types])
    return torch.where(binary, torch.sigmoid(logits), logits)


def metrics(model: MultiTaskModel, y: torch.Tensor, logits: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per-task metrics of ``model``'s tasks from labels ``(M, T)`` and logits ``(M, T)``
    (:func:`~mmoe_annotated.train.metrics.task_metrics`)."""
    return task_metrics(model.config.task_names, model.config.task_types, y, logits)


def non_finite_parameters(model: MultiTaskModel) -> list[str]:
    """Names of the parameters holding a NaN or an infinity."""
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
