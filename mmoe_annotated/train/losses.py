"""The training objective: one loss per task, their weighted sum, and L2 by parameter role.

Explained in chapter 7, "Training" (``book/07_training.ipynb``).

* **Per-task losses.** Binary tasks use BCE *with logits* (the network outputs logits; the
  sigmoid lives in :func:`~mmoe_annotated.train.inference.predict`), regression tasks MSE.
  :func:`~mmoe_annotated.train.fit` weights them with ``TrainConfig.task_weights`` (all 1 by
  default: the plain sum that DeepCTR-Torch uses, with no way to change it).
* **L2 by role, not by name.** ``weight_l2`` applies to every weight matrix of experts, gates
  and towers (DeepCTR-Torch's ``l2_reg_dnn``); biases are never penalised. ``embedding_l2`` has
  two forms: ``"table"`` penalises the *whole* embedding table every step, exactly as
  DeepCTR-Torch does (``l2_reg_embedding``), which makes every row's gradient dense; ``"rows"``
  (the default) penalises only the rows the batch looked up, scaled like the data loss, which
  allows sparse gradients and is how large-scale recommenders regularise embeddings.
* **Task-loss balancing** (chapter 10, "Beyond MMoE"): ``TrainConfig.task_balancing`` turns the
  per-task losses into one objective with fixed weights, learned uncertainty weights
  (:class:`UncertaintyWeighting`), the same weights renormalised to sum to ``T``
  (:class:`NormalizedUncertaintyWeighting`) or GradNorm (:class:`GradNorm`).

Shape letters: ``B`` batch, ``T`` tasks, ``F`` sparse fields, ``K`` embedding dim.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..model.ple import PLE
from ..model.mmoe import MultiTaskModel
from .optimizers import make_optimizer

__all__ = ["task_losses", "labelled_rows", "regularization", "BALANCING", "FixedWeights", "UncertaintyWeighting",
           "NormalizedUncertaintyWeighting", "GradNorm", "shared_layer", "task_balance"]


def task_losses(logits: torch.Tensor, y: torch.Tensor, task_types: Sequence[str],
                reduction: str = "mean") -> torch.Tensor:
    """Per-task losses ``(T,)``: BCE with logits for binary tasks, MSE for regression,
    averaged (``"mean"``) or summed (``"sum"``, DeepCTR-Torch) over the batch.

    **Missing labels.** A label that is NaN is missing for its task (chapter 12, "The
    conversion funnel: ESMM"): that task's loss averages or sums over the rows that have
    a label, and a row without one sends exactly zero gradient to the task's tower. A
    task with no labelled row in the batch has loss 0 (and no gradient), never NaN."""
    labelled = ~torch.isnan(y)  # (B, T): the task mask
    masked = not bool(labelled.all())
    if masked:
        # any finite stand-in; its loss is dropped below
        y = torch.where(labelled, y, torch.zeros_like(y))
    binary = [t == "binary" for t in task_types]
    if all(binary):
        # (B, T)
        per_row = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    elif not any(binary):
        per_row = (logits - y).square()  # (B, T)
    else:
        mask = torch.tensor(binary, device=logits.device)  # (T,)
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")  # (B, T)
        per_row = torch.where(mask, bce, (logits - y).square())  # (B, T)
    if not masked:  # every label present: the plain sum or mean over the batch
        return per_row.sum(0) if reduction == "sum" else per_row.mean(0)  # (T,)
    # (B, T): zero gradient where masked
    per_row = torch.where(labelled, per_row, torch.zeros_like(per_row))
    total = per_row.sum(0)  # (T,)
    return total if reduction == "sum" else total / labelled_rows(labelled)  # (T,)


def labelled_rows(y: torch.Tensor) -> torch.Tensor:
    """Rows with a label, per task ``(T,)``, at least 1 (so that a task with none divides 0 by 1).
    ``y``: labels ``(B, T)`` with NaN where missing, or the boolean mask itself."""
    mask = y if y.dtype == torch.bool else ~torch.isnan(y)
    return mask.sum(0).clamp_min(1).to(torch.float32)  # (T,)


def regularization(model: MultiTaskModel, cfg,
                   ids: torch.Tensor | None) -> torch.Tensor:
    """The L2 terms of the objective for a batch with ids ``(B, F)`` (zero when there
    are none).

    ``cfg`` is a :class:`~mmoe_annotated.train.TrainConfig`. Row L2 looks the batch's
    rows up again: simple, and the gradient reaches only those rows (the fast wing
    reuses the forward pass's lookup instead: ``mm.fast.fit``)."""
    reg = torch.zeros((), device=next(model.parameters()).device)
    table = model.inputs.table
    if cfg.embedding_l2 > 0 and table is not None:
        if cfg.embedding_l2_mode == "table":
            reg = reg + cfg.embedding_l2 * table.weight.square().sum()
        else:
            # every looked-up row, (B, F, K) summed
            rows = model.inputs.embed(ids).square().sum()
            reg = reg + cfg.embedding_l2 * (rows / ids.shape[0]
                                            if cfg.loss_reduction == "mean" else rows)
    if cfg.weight_l2 > 0:
        reg = reg + cfg.weight_l2 * sum(w.square().sum()
                                        for w in model.parameter_roles()["weights"])
    return reg


# ---------------------------------------------------------------------------
# Task-loss balancing (chapter 10): how the per-task losses become one objective
# ---------------------------------------------------------------------------

#: ``TrainConfig.task_balancing`` choices.
BALANCING = ("fixed", "uncertainty", "uncertainty_normalized", "gradnorm")


class FixedWeights:
    """``sum_k w_k L_k`` with fixed weights ``w`` ``(T,)`` (``TrainConfig.task_weights``, default all 1).

    Every balancer is called on the batch's task losses ``(T,)`` and returns the objective; ``step()``
    runs after the model's optimizer step; ``weights()`` are the current effective weights ``(T,)``."""

    def __init__(self, weights: torch.Tensor):
        self._weights = weights  # (T,)

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        return (self._weights * losses).sum()

    def step(self) -> None:
        pass

    def weights(self) -> torch.Tensor:
        return self._weights


class UncertaintyWeighting(FixedWeights):
    """Homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018, §3.2).

    Each task has a learned noise scale ``sigma_k``. A Gaussian likelihood
    ``N(y; f(x), sigma^2)`` has negative log-likelihood
    ``||y - f||^2 / (2 sigma^2) + log sigma`` (their eq. 5 and 7): the regression loss
    scaled by ``1 / (2 sigma^2)``. A Boltzmann (softmax/sigmoid) likelihood with
    temperature ``sigma^2`` gives approximately ``L / sigma^2 + log sigma`` (eq. 8 and
    10). So the published objective is

        ``sum_k c_k / sigma_k^2 * L_k + log sigma_k``, ``c_k = 1/2`` for regression,
        ``1`` for binary.

    As in the paper we learn ``s_k = log sigma_k^2`` (numerically stable,
    unconstrained): ``sum_k c_k exp(-s_k) L_k + s_k / 2``. Its derivative in ``s_k``
    vanishes at ``exp(s_k) = 2 c_k L_k``: a task whose loss stays large gets a large
    ``sigma_k`` and a small weight ``c_k exp(-s_k)``; the ``s_k / 2`` term stops every
    ``sigma`` from growing without bound."""

    def __init__(self, task_types, cfg, device):
        # (T,): s_k
        self.log_vars = torch.zeros(len(task_types), device=device, requires_grad=True)
        self.scale = torch.tensor([1.0 if t == "binary" else 0.5 for t in task_types],
                                  device=device)  # c_k
        self.optimizer = _balance_optimizer([self.log_vars], cfg)

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        # log sigma_k = s_k / 2
        return self.weighted(losses) + 0.5 * self.log_vars.sum()

    def weighted(self, losses: torch.Tensor) -> torch.Tensor:
        """The weighted losses ``sum_k c_k exp(-s_k) L_k``: the objective without its
        ``log sigma_k`` terms, which belong once per batch however the batch's losses
        are summed."""
        return (self.scale * torch.exp(-self.log_vars) * losses).sum()

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def weights(self) -> torch.Tensor:
        return (self.scale * torch.exp(-self.log_vars)).detach()


class NormalizedUncertaintyWeighting(UncertaintyWeighting):
    """Uncertainty weighting with its scale taken out: ``TrainConfig(task_balancing="uncertainty_normalized")``.

    A control for one reading of :class:`UncertaintyWeighting`. On binary tasks whose losses are
    small (on Census-Income, income's test log loss is about 0.13, never married's 0.09), its
    minimiser ``exp(s_k) = 2 c_k L_k`` gives weights ``c_k exp(-s_k) = 1 / (2 L_k)`` of 4 to 5, so
    the network trains as if its learning rate were several times larger (exactly so for plain SGD;
    Adam divides a constant scale away, but not one that grows while its moment estimates lag). If
    uncertainty weighting's gain on income came from that larger *effective learning rate* rather
    than from the *relative* weights of the tasks, this variant, which keeps the relative weights
    and drops the scale, loses the gain.

    The noise scales ``s_k = log sigma_k^2`` are learned exactly as in uncertainty weighting: their
    gradient is that of ``sum_k c_k exp(-s_k) L_k + s_k / 2`` with the losses held constant. The
    network trains on ``sum_k w_k L_k`` with ``w_k = T v_k / sum_j v_j``, ``v_k = c_k exp(-s_k)``,
    held constant (detached), so that ``sum_k w_k = T`` as with the plain sum."""

    def weighted(self, losses: torch.Tensor) -> torch.Tensor:
        v = self.scale * torch.exp(-self.log_vars)  # (T,): uncertainty weighting's weights
        scales = (v * losses.detach()).sum()  # the log variances' gradient, the network's held apart
        return (self.weights() * losses).sum() + scales  # the network's: the renormalised weights

    def weights(self) -> torch.Tensor:
        v = (self.scale * torch.exp(-self.log_vars)).detach()  # (T,)
        return v * (len(v) / v.sum())  # sum_k w_k = T


class GradNorm(FixedWeights):
    """GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018, §3).

    Learned weights ``w_k`` (start at 1). On the last shared layer ``W`` (:func:`shared_layer`),
    ``G_k = ||grad_W w_k L_k||_2`` is task ``k``'s gradient norm and ``G_bar`` their mean. With
    ``L~_k = L_k(t) / L_k(0)`` (the loss ratio since the first step) and ``r_k = L~_k / mean(L~)``
    (the relative inverse training rate), the weights minimise (eq. 2)

        ``L_grad = sum_k | G_k - G_bar * r_k^alpha |``,

    with the target ``G_bar * r_k^alpha`` held constant, and are renormalised to sum to ``T`` after
    every step. The network itself is trained on ``sum_k w_k L_k`` with the weights held constant.
    Since ``w_k >= 0``, ``G_k = w_k ||grad_W L_k||``, so ``dL_grad/dw_k = sign(G_k - target_k)
    ||grad_W L_k||``: one first-order gradient per task, no second-order graph. A task that trains
    slower than the others (``r_k > 1``) gets a larger gradient target, hence a larger weight;
    ``alpha`` sets how strongly (the paper uses 0.12 to 3; 1.5 here)."""

    def __init__(self, model, cfg, device):
        T = model.num_tasks
        self.model, self.alpha = model, cfg.gradnorm_alpha
        self.w = torch.ones(T, device=device, requires_grad=True)  # (T,)
        self.optimizer = _balance_optimizer([self.w], cfg)
        self.initial: torch.Tensor | None = None  # L_k(0), (T,)
        self.w_grad: torch.Tensor | None = None

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and losses.requires_grad:
            self.w_grad = self.grad_of_weights(losses)
        return (self.w.detach() * losses).sum()

    def grad_of_weights(self, losses: torch.Tensor) -> torch.Tensor:
        """``dL_grad / dw`` ``(T,)`` for this batch (and ``L_k(0)`` on the first call)."""
        W, rows = shared_layer(self.model)
        norms = torch.stack([torch.autograd.grad(loss, W, retain_graph=True)[0][rows].norm()
                             for loss in losses])  # (T,): ||grad_W L_k||
        if self.initial is None:
            self.initial = losses.detach().clamp_min(1e-12)
        ratio = losses.detach() / self.initial  # (T,): L~_k
        G = self.w.detach() * norms  # (T,): G_k
        target = G.mean() * (ratio / ratio.mean()) ** self.alpha  # (T,): held constant
        return torch.sign(G - target) * norms

    def step(self) -> None:
        if self.w_grad is None:
            return
        self.w.grad = self.w_grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.w.clamp_(min=1e-3)
            self.w.mul_(len(self.w) / self.w.sum())  # sum_k w_k = T
        self.w_grad = None

    def weights(self) -> torch.Tensor:
        return self.w.detach()


def shared_layer(model: MultiTaskModel) -> tuple[torch.Tensor, slice]:
    """GradNorm's ``W``: the last layer every task's gradient reaches, with the stacked networks that
    count. The experts' last layer (all experts for MMoE and OMoE, the one bottom for Shared-Bottom);
    for CGC and PLE the last level's *shared* experts (task experts get one task's gradient only);
    for ESMM the shared embedding table."""
    if isinstance(model, PLE):
        level = model.levels[-1]
        c = model.config
        return level.experts.weights[-1], slice(c.num_tasks * c.num_task_experts, None)
    if model.experts is None:  # ESMM: the towers share only the embeddings
        if model.inputs.table is None or model.config.sparse_embeddings:
            raise ValueError(f"GradNorm needs a layer that every task's gradient reaches; {type(model).__name__}'s "
                             "towers share only the embedding table, and this model has none with dense gradients")
        return model.inputs.table.weight, slice(None)
    return model.experts.weights[-1], slice(None)


def _balance_optimizer(params, cfg) -> torch.optim.Optimizer:
    return make_optimizer(cfg.optimizer, params, cfg.balance_lr if cfg.balance_lr is not None else cfg.learning_rate)


def task_balance(model: MultiTaskModel, cfg, device) -> FixedWeights:
    """The balancer ``cfg.task_balancing`` names: "fixed" (``cfg.task_weights``, default all 1),
    "uncertainty" (:class:`UncertaintyWeighting`), "uncertainty_normalized"
    (:class:`NormalizedUncertaintyWeighting`) or "gradnorm" (:class:`GradNorm`)."""
    if cfg.task_balancing == "uncertainty":
        return UncertaintyWeighting(model.config.task_types, cfg, device)
    if cfg.task_balancing == "uncertainty_normalized":
        return NormalizedUncertaintyWeighting(model.config.task_types, cfg, device)
    if cfg.task_balancing == "gradnorm":
        return GradNorm(model, cfg, device)
    return FixedWeights(torch.tensor(cfg.task_weights or [1.0] * model.num_tasks, device=device))
