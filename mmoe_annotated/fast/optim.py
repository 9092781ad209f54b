"""Optimizer steps with fewer passes over memory: fused Adagrad and a row-wise sparse Adagrad.

Part of the opt-in fast wing (:mod:`mmoe_annotated.fast`); explained in the appendix
"Performance". The taught path uses ``torch.optim.Adagrad`` for every parameter
(:func:`mmoe_annotated.train.optimizers.make_optimizers`); the update rule here is the same.
"""
from __future__ import annotations

import torch

from ..model.mmoe import MultiTaskModel
from ..train.loop import TrainConfig
from ..train.optimizers import make_optimizers

__all__ = ["RowAdagrad", "fast_optimizers"]


class RowAdagrad(torch.optim.Optimizer):
    """Adagrad for an embedding table with sparse gradients, updated row by row.

    The update is :class:`torch.optim.Adagrad`'s (``lr``, ``eps=1e-10``, zero initial sum, no
    decay) on the rows the batch looked up: the gradients of repeated ids are summed, each
    touched row's squared gradient joins its running sum, and the row moves by
    ``-lr * g / (sqrt(sum) + eps)``. ``torch.optim.Adagrad`` gets there by sorting the ids and
    building coalesced sparse tensors; here a scratch table sums repeated ids without sorting
    (each id then reads its row's total, and repeated ids write identical values), which matters
    at batch 256, where the optimizer step is a tenth of the training time. The scratch table
    costs as much memory as the running sums. ``tests/test_fast.py`` checks that both give the
    same weights. Dense gradients get the ordinary Adagrad update."""

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-10):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        super().__init__(params, {"lr": float(lr), "eps": float(eps)})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["sum"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format)
                total, grad = state["sum"], p.grad
                if not grad.is_sparse:
                    total.addcmul_(grad, grad)
                    p.addcdiv_(grad, total.sqrt().add_(eps), value=-lr)
                    continue
                if "scratch" not in state:
                    state["scratch"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format)
                scratch = state["scratch"]
                # (R,), (R, K); ids may repeat
                ids, values = grad._indices()[0], grad._values()
                # every touched row holds its summed gradient
                scratch.index_add_(0, ids, values)
                g = scratch.index_select(0, ids)  # (R, K), alike for repeated ids
                scratch.index_fill_(0, ids, 0)
                seen = total.index_select(0, ids).addcmul_(g, g)  # (R, K)
                total.index_copy_(0, ids, seen)
                p.index_copy_(0, ids, p.index_select(0, ids)
                              .addcdiv_(g, seen.sqrt_().add_(eps), value=-lr))
        return loss


def fast_optimizers(model: MultiTaskModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """Adagrad as one fused kernel (CPU, dense gradients) for the dense parameters and
    :class:`RowAdagrad` for a sparse embedding table; other optimizers as the taught path has them."""
    if cfg.optimizer != "adagrad":
        return make_optimizers(model, cfg.optimizer, cfg.learning_rate)
    lr = cfg.learning_rate
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    table = model.parameter_roles()["embedding"]
    if model.config.sparse_embeddings and table:
        rest = [p for p in model.parameters() if p is not table[0]]
        return [RowAdagrad(table, lr=lr), torch.optim.Adagrad(rest, lr=lr, fused=on_cpu or None)]
    return [torch.optim.Adagrad(model.parameters(), lr=lr, fused=on_cpu or None)]
