"""Optimizers by name: one table for the training loop, the learned task weights and scale-out.

Explained in chapter 7, "Training" (``book/07_training.ipynb``).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..model.mmoe import MultiTaskModel

__all__ = ["OPTIMIZERS", "Optimizer", "make_optimizer", "make_optimizers"]


class Optimizer(NamedTuple):
    """An optimizer class and its default learning rate."""

    cls: type
    lr: float


#: Optimizers by name (DeepCTR-Torch's "adagrad" is lr 0.01).
OPTIMIZERS = {
    "adagrad": Optimizer(torch.optim.Adagrad, 0.01),
    "adam": Optimizer(torch.optim.Adam, 1e-3),
    "sgd": Optimizer(torch.optim.SGD, 0.01),
}


def make_optimizer(name: str, params, lr: float | None = None) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params``, at ``lr`` (default: the table's)."""
    spec = OPTIMIZERS[name]
    return spec.cls(params, lr=spec.lr if lr is None else lr)


def make_optimizers(model: MultiTaskModel, name: str,
                    lr: float) -> list[torch.optim.Optimizer]:
    """The optimizer(s) for ``model``: ``torch.optim``'s Adagrad and SGD take the sparse
    embedding gradients as they are; Adam does not, so a sparse table gets
    ``SparseAdam``."""
    table = model.inputs.table
    if name != "adam" or not model.config.sparse_embeddings or table is None:
        return [make_optimizer(name, model.parameters(), lr)]
    rest = [p for p in model.parameters() if p is not table.weight]
    return [torch.optim.SparseAdam([table.weight], lr=lr),
            torch.optim.Adam(rest, lr=lr)]
