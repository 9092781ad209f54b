"""Gates: a softmax over experts, one gate per task, and the mixing step.

Explained in chapter 5, "Gates" (``book/05_gates.ipynb``).

The paper (Ma et al. 2018, §4.2, Eq. 7-8): task ``k`` sees ``f^k(x) = sum_i g^k(x)_i f_i(x)``
(Eq. 7) with ``g^k(x) = softmax(W_gk x)`` (Eq. 8), a *linear* map of the input, with no bias,
followed by a softmax over the ``E`` experts. OMoE (named at the end of §4.2) is the one-gate MoE
of Eq. 5 (§4.1) used as a layer. DeepCTR-Torch puts an MLP (default one hidden layer of 64) before that final
bias-free linear map; ``hidden_units=()`` gives the paper's gate.

The gate weights are returned to the caller, never thrown away: they are the most
interpretable thing an MMoE model learns (chapter 7 and :mod:`mmoe_annotated.train.inspect`).
:func:`mix` applies them: one batched matrix product for all tasks.

Shape letters: ``B`` batch, ``I`` input width, ``G`` gates, ``E`` experts,
``T`` tasks, ``D`` expert output width.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .experts import StackedMLP, init_weight_

__all__ = ["Gates", "mix", "rowwise_mix", "broadcast_mix"]


class Gates(nn.Module):
    """``G`` gates over ``E`` experts: ``(B, I) -> (B, G, E)``, each row a probability
    vector: ``g^k(x) = softmax(W_gk x)`` of the paper's Eq. 8 (§4.2), with an optional
    MLP before ``W_gk``.

    MMoE uses one gate per task (``G = T``); OMoE one gate shared by all tasks
    (``G = 1``).
    """

    def __init__(self, input_dim: int, num_experts: int, num_gates: int,
                 hidden_units: Sequence[int] = (64,), activation: str = "relu",
                 dropout: float = 0.0, init_std: float | None = 1e-4):
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}")
        if num_gates < 1:
            raise ValueError(f"num_gates must be >= 1, got {num_gates}")
        self.num_experts, self.num_gates = int(num_experts), int(num_gates)
        hidden_units = tuple(hidden_units)
        self.mlp = (StackedMLP(input_dim, num_gates, hidden_units, activation, dropout,
                               init_std)
                    if hidden_units else None)
        fan_in = hidden_units[-1] if hidden_units else int(input_dim)
        # The final map (G, H, E) has no bias, like the paper's W_gk and
        # DeepCTR-Torch's gate_dnn_final_layer, and keeps PyTorch's nn.Linear init as
        # DeepCTR-Torch does.
        self.out = nn.Parameter(torch.empty(num_gates, fan_in, num_experts))
        init_weight_(self.out, fan_in, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            logits = (x @ self.out.transpose(0, 1).reshape(x.shape[1], -1))  # (B, G*E)
            # (B, G, E)
            logits = logits.view(x.shape[0], self.num_gates, self.num_experts)
        else:
            h = self.mlp(x).transpose(0, 1)  # (G, B, H)
            logits = torch.bmm(h, self.out).transpose(0, 1)  # (B, G, E)
        return torch.softmax(logits, dim=-1)  # (B, G, E), sums to 1 over E


def mix(gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Each task's weighted sum of expert outputs:
    ``(B, T, E) x (B, E, D) -> (B, T, D)``.

    The sum of the paper's Eq. 7 (§4.2), for all tasks in one batched matrix product:
    for every row ``b``, ``(T, E) @ (E, D)``. DeepCTR-Torch calls
    ``torch.matmul((B, 1, E), (B, E, D))`` once per task; a broadcast multiply over
    ``(B, T, E, D)`` and a sum over ``E`` computes the same numbers but builds the whole
    ``(B, T, E, D)`` product first, which is slower (chapter 5 times all three:
    :func:`rowwise_mix`, :func:`broadcast_mix`)."""
    return torch.bmm(gates, experts)  # (B, T, E) @ (B, E, D) -> (B, T, D)


def rowwise_mix(gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """:func:`mix` the way DeepCTR-Torch computes it, for chapter 5's comparison: once
    per task, ``matmul((B, 1, E), (B, E, D))``, then the tasks stacked.
    ``-> (B, T, D)``."""
    return torch.stack([torch.matmul(gates[:, t].unsqueeze(1), experts).squeeze(1)
                        for t in range(gates.shape[1])], dim=1)  # (B, T, D)


def broadcast_mix(gates: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """:func:`mix` as a broadcast multiply and a sum over experts, for chapter 5's
    comparison: it builds the whole ``(B, T, E, D)`` product first. ``-> (B, T, D)``."""
    # (B, T, E, D) -> (B, T, D)
    return (gates.unsqueeze(-1) * experts.unsqueeze(1)).sum(dim=2)
