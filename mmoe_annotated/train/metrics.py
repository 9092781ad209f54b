"""Metrics per task over a whole split: AUC and log loss for binary tasks, MSE for regression.

Explained in chapter 7, "Training" (``book/07_training.ipynb``). Every metric the package reports
(``evaluate``, the fast wing's, the distributed trainer's over gathered predictions, the
benchmark's) comes from here, computed by scikit-learn over all rows at once: never an average of
per-batch values.

**One convention for an undefined AUC.** A split whose labels of a task are all 0 (or all 1) has
no pair to rank, so its AUC is undefined: :func:`auc` returns ``nan`` with a ``RuntimeWarning``
naming the task, never a number and never ``None``. Files written as JSON record it as ``null``.

Shape letters: ``M`` rows of a split, ``T`` tasks.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

__all__ = ["auc", "task_metrics"]


def auc(y: np.ndarray, p: np.ndarray, task: str = "") -> float:
    """ROC AUC of scores ``p`` against 0/1 labels ``y``; ``nan`` (with a warning) for one class."""
    if len(np.unique(y)) < 2:
        warnings.warn(f"task {task!r}: the evaluation split holds only one class, so AUC is undefined (NaN)",
                      RuntimeWarning, stacklevel=3)
        return float("nan")
    return float(roc_auc_score(y, p))


def task_metrics(task_names: Sequence[str], task_types: Sequence[str], y, logits
                 ) -> dict[str, dict[str, float]]:
    """Per-task metrics from labels ``(M, T)`` and logits ``(M, T)`` (tensors or arrays):
    ``{"finish": {"auc": .., "logloss": ..}, ...}``, ``{"mse": ..}`` for regression.

    A NaN label is missing (chapter 12): each task is scored on its labelled rows only, and a task
    with any missing label also reports how many rows it was scored on (``"labelled"``). A task
    with no labelled row gets NaN metrics with a warning."""
    y = np.asarray(y, dtype=np.float64)
    logits = torch.as_tensor(np.asarray(logits)).double()  # (M, T): sigmoid in float64
    out = {}
    for t, (name, kind) in enumerate(zip(task_names, task_types)):
        rows = ~np.isnan(y[:, t])  # (M,): the task's labelled rows
        yt, zt = y[rows, t], logits[torch.from_numpy(rows), t]
        if not rows.any():
            warnings.warn(f"task {name!r}: no row of the evaluation split has a label, so its metrics are NaN",
                          RuntimeWarning, stacklevel=2)
            out[name] = ({"auc": float("nan"), "logloss": float("nan")} if kind == "binary"
                         else {"mse": float("nan")})
        elif kind == "binary":
            p = torch.sigmoid(zt).numpy()
            out[name] = {"auc": auc(yt, p, name), "logloss": float(log_loss(yt, p, labels=[0, 1]))}
        else:
            out[name] = {"mse": float(mean_squared_error(yt, zt.numpy()))}
        if not rows.all():
            out[name]["labelled"] = int(rows.sum())
    return out
