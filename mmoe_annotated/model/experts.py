"""Experts: many small MLPs computed as one batched operation.

Explained in chapter 4, "Experts" (``book/04_experts.ipynb``).

In the paper each expert ``f_i`` is a feed-forward network on the shared input ``x``: the
``f_i(x)`` of the mixture in Eq. 5 (§4.1) and Eq. 7 (§4.2); with one expert and no gate it is
the shared bottom ``f`` of Eq. 1 (§3.1). The paper's synthetic experts are one layer (§5.1) with ReLU (§4.2).
DeepCTR-Torch builds ``E`` separate ``DNN`` modules and loops over them in Python. Here
the weights of all ``E`` experts are *stacked*: layer ``l`` holds one tensor of shape
``(E, H_in, H_out)``. Because every expert reads the same input, the first layer of all
experts is a single matrix multiply ``(B, I) @ (I, E*H)``; deeper layers are one batched
matrix multiply (``torch.baddbmm``) over the expert axis. No Python loop over experts.

:class:`StackedMLP` is that "S MLPs at once" operation; gates and towers reuse it.
Shape letters: ``B`` batch, ``I`` input width, ``S`` stacked networks, ``E`` experts,
``H`` hidden width, ``D`` expert output width.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "StackedMLP", "Experts", "init_weight_", "init_bias_"]

#: Activations by name (DeepCTR-Torch's default is ReLU).
ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "linear": nn.Identity,
}


def init_weight_(weight: torch.Tensor, fan_in: int, init_std: float | None) -> None:
    """DeepCTR-Torch's DNN init: a normal distribution with mean 0 and standard deviation
    ``init_std`` (not a variance). ``init_std=None``: PyTorch's ``nn.Linear`` default,
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Each stacked network gets its own independent draw."""
    with torch.no_grad():
        if init_std is None:
            bound = 1.0 / math.sqrt(fan_in)
            weight.uniform_(-bound, bound)
        else:
            weight.normal_(0.0, init_std)


def init_bias_(bias: torch.Tensor, fan_in: int) -> None:
    """PyTorch's ``nn.Linear`` bias init, which DeepCTR-Torch keeps: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        bias.uniform_(-bound, bound)


class StackedMLP(nn.Module):
    """``S`` independent MLPs of the same shape, evaluated together.

    Every layer is ``activation(x @ W + b)`` followed by dropout, as in DeepCTR-Torch's
    ``DNN`` (the last hidden layer is activated too).

    ``forward`` takes either a shared input ``(B, I)``, which all ``S`` networks read
    (experts, gates), or one input per network ``(B, S, I)`` (towers), and returns
    ``(B, S, H_last)``.
    """

    def __init__(self, input_dim: int, num_stacks: int, hidden_units: Sequence[int],
                 activation: str = "relu", dropout: float = 0.0,
                 init_std: float | None = 1e-4):
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        if num_stacks < 1:
            raise ValueError(f"num_stacks must be >= 1, got {num_stacks}")
        if not hidden_units or any(int(h) < 1 for h in hidden_units):
            raise ValueError("hidden_units must be a non-empty sequence of positive "
                             f"ints, got {hidden_units}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of "
                             f"{sorted(ACTIVATIONS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        dims = [int(input_dim), *map(int, hidden_units)]
        self.input_dim, self.num_stacks = dims[0], int(num_stacks)
        self.output_dim = dims[-1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            # (S, H_in, H_out)
            w = nn.Parameter(torch.empty(num_stacks, fan_in, fan_out))
            b = nn.Parameter(torch.empty(num_stacks, fan_out))  # (S, H_out)
            init_weight_(w, fan_in, init_std)
            init_bias_(b, fan_in)
            self.weights.append(w)
            self.biases.append(b)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        S = self.num_stacks
        w0, b0 = self.weights[0], self.biases[0]
        if x.dim() == 2:
            # Shared input: one GEMM for the first layer of all S networks.
            h = torch.addmm(b0.reshape(-1), x,
                            w0.transpose(0, 1).reshape(self.input_dim, -1))  # (B, S*H)
            # (S, B, H); H named, so B = 0 works
            h = h.view(x.shape[0], S, w0.shape[2]).transpose(0, 1)
        else:
            # One input per network: a batched GEMM over the stack axis.
            h = torch.baddbmm(b0.unsqueeze(1), x.transpose(0, 1), w0)  # (S, B, H)
        h = self.dropout(self.activation(h))
        for w, b in zip(self.weights[1:], self.biases[1:]):
            # (S, B, H_out)
            h = self.dropout(self.activation(torch.baddbmm(b.unsqueeze(1), h, w)))
        return h.transpose(0, 1)  # (B, S, H_last)


class Experts(StackedMLP):
    """The ``E`` experts of a mixture: ``(B, I) -> (B, E, D)``, with ``D = hidden_units[-1]``.

    DeepCTR-Torch's default is 3 experts of (256, 128)."""

    def __init__(self, input_dim: int, num_experts: int = 3, hidden_units: Sequence[int] = (256, 128),
                 activation: str = "relu", dropout: float = 0.0, init_std: float | None = 1e-4):
        super().__init__(input_dim, num_experts, hidden_units, activation, dropout, init_std)
        self.num_experts = self.num_stacks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError("experts read the shared input (B, I), got shape "
                             f"{tuple(x.shape)}")
        return super().forward(x)  # (B, E, D)
