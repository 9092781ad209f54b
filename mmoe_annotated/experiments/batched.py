"""Many independent training runs of one model kind, trained as one batched model.

Explained in chapter 8, "Reproducing the paper" (``book/08_reproducing_paper.ipynb``).

The paper repeats its synthetic experiment 200 times per setting. Small models on small batches leave a
CPU or GPU idle, so instead of looping over runs we stack them: every parameter gets a
leading run axis ``R`` (:func:`torch.func.stack_module_state`), and one call of the
model's ordinary ``forward`` under :func:`torch.vmap` computes all runs at once
(:func:`torch.func.functional_call`). The loss is the **sum** of the runs' losses, so
the gradient of run ``r``'s slice is exactly run ``r``'s own gradient; Adam is
elementwise, so one Adam over the stacked tensors equals ``R`` independent Adams. A test
checks that a batched run equals a plain run step for step.

Shape letters: ``R`` runs, ``B`` batch, ``I`` input width, ``T`` tasks.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Sequence

import torch
from torch.func import functional_call, stack_module_state

from ..model.mmoe import MultiTaskModel

__all__ = ["StackedRuns"]


class StackedRuns:
    """``R`` models of one architecture (different initial weights) with one Adam.

    ``models`` are ordinary package models; their weights are copied into stacked
    tensors and the originals are left untouched. ``lr`` is one learning rate for all
    runs (group runs by learning rate)."""

    def __init__(self, models: Sequence[MultiTaskModel], lr: float,
                 device: str | torch.device = "cpu"):
        if not models:
            raise ValueError("StackedRuns needs at least one model")
        first = replace(models[0].config, seed=None)
        if any(type(m) is not type(models[0]) or replace(m.config, seed=None) != first
               for m in models):
            raise ValueError("all stacked models must share one class and one config "
                             "(up to the seed)")
        params, buffers = stack_module_state(list(models))
        self.params = {k: v.detach().to(device).requires_grad_(True)
                       for k, v in params.items()}  # (R, ...)
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        # A weightless copy that only lends its forward to functional_call.
        self.base = copy.deepcopy(models[0]).to("meta")
        self.num_runs = len(models)
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=float(lr))

        def one_run(p, b, x):
            return functional_call(self.base, (p, b), (None, x)).logits  # (B, T)

        self._forward = torch.vmap(one_run, in_dims=(0, 0, 0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``(R, B, I)`` inputs -> ``(R, B, T)`` outputs (regression outputs or
        logits)."""
        if x.dim() != 3 or x.shape[0] != self.num_runs:
            raise ValueError(f"expected inputs of shape ({self.num_runs}, B, I), got "
                             f"{tuple(x.shape)}")
        return self._forward(self.params, self.buffers, x)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One Adam step on the sum over tasks of each run's MSE; returns the per-run
        losses ``(R,)``."""
        # (R,): sum over T of the mean over B
        losses = ((self(x) - y) ** 2).mean(dim=1).sum(dim=-1)
        self.optimizer.zero_grad(set_to_none=True)
        # runs share no weights: each slice gets its own run's gradient
        losses.sum().backward()
        self.optimizer.step()
        return losses.detach()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """``(R, M, I)`` -> ``(R, M, T)``, in chunks of rows to bound memory."""
        return torch.cat([self(x[:, i:i + chunk]) for i in range(0, x.shape[1], chunk)],
                         dim=1)

    def unstack(self, r: int, like: MultiTaskModel) -> MultiTaskModel:
        """Run ``r``'s weights loaded into a copy of ``like`` (for inspection with the
        package's tools)."""
        model = copy.deepcopy(like)
        tensors = {**self.params, **self.buffers}
        model.load_state_dict({k: v[r].detach().cpu() for k, v in tensors.items()})
        return model
