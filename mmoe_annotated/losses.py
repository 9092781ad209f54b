"""The training objective: one loss per task, their weighted sum, and L2 by parameter role.

Explained in chapter 7, "Training" (``book/07_training.ipynb``).

* **Per-task losses.** Binary tasks use BCE *with logits* (the network outputs logits; the
  sigmoid lives in :func:`~mmoe_annotated.inference.predict`), regression tasks MSE.
  :func:`~mmoe_annotated.train.fit` weights them with ``TrainConfig.task_weights`` (all 1 by
  default: the plain sum that DeepCTR-Torch uses, with no way to change it).
* **L2 by role, not by name.** ``weight_l2`` applies to every weight matrix of experts, gates
  and towers (DeepCTR-Torch's ``l2_reg_dnn``); biases are never penalised. ``embedding_l2`` has
  two forms: ``"table"`` penalises the *whole* embedding table every step, exactly as
  DeepCTR-Torch does (``l2_reg_embedding``), which makes every row's gradient dense; ``"rows"``
  (the default) penalises only the rows the batch looked up, scaled like the data loss, which
  allows sparse gradients and is how large-scale recommenders regularise embeddings.

Shape letters: ``B`` batch, ``T`` tasks, ``F`` sparse fields, ``K`` embedding dim.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .model import MultiTaskModel

__all__ = ["task_losses", "regularization"]


def task_losses(logits: torch.Tensor, y: torch.Tensor, task_types: Sequence[str],
                reduction: str = "mean") -> torch.Tensor:
    """Per-task losses ``(T,)``: BCE with logits for binary tasks, MSE for regression,
    averaged (``"mean"``) or summed (``"sum"``, DeepCTR-Torch) over the batch."""
    binary = [t == "binary" for t in task_types]
    if all(binary):
        per_row = F.binary_cross_entropy_with_logits(logits, y, reduction="none")  # (B, T)
    elif not any(binary):
        per_row = (logits - y).square()  # (B, T)
    else:
        mask = torch.tensor(binary, device=logits.device)  # (T,)
        per_row = torch.where(mask, F.binary_cross_entropy_with_logits(logits, y, reduction="none"),
                              (logits - y).square())  # (B, T)
    return per_row.sum(0) if reduction == "sum" else per_row.mean(0)  # (T,)


def regularization(model: MultiTaskModel, cfg, ids: torch.Tensor | None) -> torch.Tensor:
    """The L2 terms of the objective for a batch with ids ``(B, F)`` (zero when there are none).

    ``cfg`` is a :class:`~mmoe_annotated.train.TrainConfig`. Row L2 looks the batch's rows up
    again: simple, and the gradient reaches only those rows (the fast wing reuses the forward
    pass's lookup instead, :mod:`mmoe_annotated.fast.train`)."""
    reg = torch.zeros((), device=next(model.parameters()).device)
    table = model.inputs.table
    if cfg.embedding_l2 > 0 and table is not None:
        if cfg.embedding_l2_mode == "table":
            reg = reg + cfg.embedding_l2 * table.weight.square().sum()
        else:
            rows = model.inputs.embed(ids).square().sum()  # every looked-up row, (B, F, K) summed
            reg = reg + cfg.embedding_l2 * (rows / ids.shape[0] if cfg.loss_reduction == "mean" else rows)
    if cfg.weight_l2 > 0:
        reg = reg + cfg.weight_l2 * sum(w.square().sum() for w in model.parameter_roles()["weights"])
    return reg
