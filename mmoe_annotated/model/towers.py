"""Towers: one small network per task on top of its mixture of experts.

Explained in chapter 6, "Towers and the whole model" (``book/06_towers.ipynb``).

Tower ``k`` is the paper's ``h^k`` (Eq. 1 for Shared-Bottom, Eq. 6 for MMoE, §3.1 and §4.2):
it maps task ``k``'s mixed representation ``(B, D)`` to one logit. All ``T``
towers run as one :class:`~mmoe_annotated.model.experts.StackedMLP` with per-task input, then a
bias-free linear output per task plus a per-task output bias (DeepCTR-Torch's
``tower_dnn_final_layer`` and ``PredictionLayer`` bias). The towers return **logits**:
the sigmoid belongs to prediction and to the loss (``BCEWithLogits``), not to the network.

Shape letters: ``B`` batch, ``T`` tasks, ``D`` tower input width, ``H`` hidden width.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .experts import StackedMLP, init_weight_

__all__ = ["Towers"]


class Towers(nn.Module):
    """``T`` task towers: ``(B, T, D) -> (B, T)`` logits. DeepCTR-Torch's default hidden
    is (64,)."""

    def __init__(self, input_dim: int, num_tasks: int,
                 hidden_units: Sequence[int] = (64,),
                 activation: str = "relu", dropout: float = 0.0,
                 init_std: float | None = 1e-4):
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        self.num_tasks, self.input_dim = int(num_tasks), int(input_dim)
        hidden_units = tuple(hidden_units)
        self.mlp = (StackedMLP(input_dim, num_tasks, hidden_units, activation, dropout,
                               init_std)
                    if hidden_units else None)
        fan_in = hidden_units[-1] if hidden_units else int(input_dim)
        # (T, H): Linear(H, 1, bias=False) per task
        self.out = nn.Parameter(torch.empty(num_tasks, fan_in))
        init_weight_(self.out, fan_in, None)
        # (T,): the output bias, zero at init
        self.bias = nn.Parameter(torch.zeros(num_tasks))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 3 or z.shape[1] != self.num_tasks:
            raise ValueError(f"towers expect (B, {self.num_tasks}, D), got "
                             f"{tuple(z.shape)}")
        h = self.mlp(z) if self.mlp is not None else z  # (B, T, H)
        return (h * self.out).sum(dim=-1) + self.bias  # (B, T)
