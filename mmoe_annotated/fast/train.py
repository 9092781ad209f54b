"""Fast training: :func:`mmoe_annotated.train.fit`'s loop with less work per step.

Part of the opt-in fast wing (:mod:`mmoe_annotated.fast`); explained in the appendix
"Performance". The same checks, batches, losses and history as the taught ``fit``, and the same
weights up to float rounding (``tests/test_fast.py``), with three changes:

* **optimizers with fewer passes** (:mod:`~mmoe_annotated.fast.optim`): fused Adagrad for the
  dense parameters and :class:`~mmoe_annotated.fast.optim.RowAdagrad` for a sparse table;
* **row L2 reuses the forward pass's lookup** (:class:`LookedUpRows`) instead of looking the
  batch's rows up a second time, so its gradient joins the data gradient in one embedding backward;
* **large batches in blocks on a CPU**: a batch of more than ``block_rows`` rows (default
  :data:`CPU_BLOCK_ROWS`) goes through forward and backward in blocks whose gradients add up to
  the batch's, then one optimizer step: the same update, with a quarter of the activations alive
  at batch 4096, so the process's peak memory falls.

Shape letters: ``B`` batch, ``T`` tasks, ``F`` sparse fields, ``K`` embedding dim.
"""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from ..features.encoder import FeatureEncoder
from ..train.losses import (FixedWeights, NormalizedUncertaintyWeighting, UncertaintyWeighting, labelled_rows,
                            task_balance, task_losses)
from ..model.mmoe import MultiTaskModel
from ..runtime import resolve_device
from ..train.loop import (History, TrainConfig, batch_rows, check_finite, check_fit, check_weights, gate_record,
                          seeded_generator, train_record, training_data, valid_record)
from ..train.selection import Stopper
from .optim import fast_optimizers
from .inference import evaluate

__all__ = ["fit", "CPU_BLOCK_ROWS", "BLOCKWISE", "LookedUpRows"]

#: In training on a CPU, the most rows one forward and backward pass takes: a larger batch is worked
#: through in blocks of this many, whose gradients add up to the batch's. With the default MMoE at
#: batch 4096, one pass over the whole batch raised the process's peak memory by 60 MiB (K = 4) and
#: 108 MiB (K = 16) more than blocks of 1,024 did, at about the same speed.
CPU_BLOCK_ROWS = 1024

#: The task balancers whose batch objective :func:`_block_objective` splits into blocks. Any other
#: (GradNorm: the gradient norm of a batch is not the sum of its blocks' norms; a balancer this list
#: does not name) takes each batch in one pass.
BLOCKWISE = (FixedWeights, UncertaintyWeighting, NormalizedUncertaintyWeighting)


def fit(model: MultiTaskModel, train, config: TrainConfig | None = None, *, encoder: FeatureEncoder | None = None,
        valid=None, block_rows: int | None = None) -> History:
    """:func:`mmoe_annotated.train.fit`, fast. ``block_rows``: the most rows per forward and backward
    pass (default: :data:`CPU_BLOCK_ROWS` on a CPU, the whole batch on a GPU, which wants large passes)."""
    cfg = check_fit(model, config)
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1):
        raise ValueError(f"block_rows must be a whole number >= 1 or None, got {block_rows!r}")
    x, y, valid = training_data(model, train, valid, encoder, cfg)
    device = resolve_device(cfg.device)
    model.to(device)
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    balance = task_balance(model, cfg, device)
    optimizers = fast_optimizers(model, cfg)
    generator = seeded_generator(cfg.seed)
    block = block_rows or (CPU_BLOCK_ROWS if device.type == "cpu" else cfg.batch_size)
    if type(balance) not in BLOCKWISE:  # GradNorm's gradient norms need the whole batch in one pass
        block = max(block, cfg.batch_size)
    history = History()
    stopper = Stopper(cfg.early_stopping, model) if cfg.early_stopping else None
    row_l2 = cfg.embedding_l2 > 0 and cfg.embedding_l2_mode == "rows"
    with LookedUpRows(model, row_l2) as looked_up:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            started, loss_sum = time.perf_counter(), torch.zeros(model.num_tasks, device=device)
            batches = batch_rows(len(x), cfg, generator, device)
            for step, rows in enumerate(tqdm(batches, desc=f"epoch {epoch}", disable=not cfg.progress, leave=False), 1):
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss_sum += _backward_in_blocks(model, x, y, rows, block, cfg, balance, looked_up, (epoch, step))
                for opt in optimizers:
                    opt.step()
                balance.step()
            check_weights(model, epoch, step)
            history.records.append(_epoch_record(model, epoch, loss_sum / step, balance.weights(), started, valid,
                                                 cfg))
            if stopper is not None and stopper.update(history.records[-1], model, epoch):
                break  # as the taught fit: every monitored task has stopped improving
    if stopper is not None:
        stopper.finish(model, history)
    model.eval()
    return history


def _epoch_record(model: MultiTaskModel, epoch: int, mean_losses: torch.Tensor, weights: torch.Tensor,
                  started: float, valid, cfg: TrainConfig) -> dict:
    """The taught :func:`~mmoe_annotated.train.loop.epoch_record` (the same columns, in the same
    order), with the validation metrics from the wing's :func:`~mmoe_annotated.fast.evaluate`."""
    record = train_record(model, epoch, mean_losses, weights, cfg)
    if valid is not None:
        record.update(valid_record(evaluate(model, valid, batch_size=cfg.eval_batch_size)))
    if cfg.gate_stats:
        record.update(gate_record(model, valid, cfg))
    record["seconds"] = time.perf_counter() - started
    return record


def _backward_in_blocks(model, x, y, rows, block, cfg, balance, looked_up, where) -> torch.Tensor:
    """Forward and backward over the batch ``rows`` ``(B,)``, ``block`` rows at a time; the
    gradients add up to the whole batch's. Returns the batch's task losses ``(T,)``, detached."""
    B = len(rows)
    losses_sum = torch.zeros(model.num_tasks, device=rows.device)
    for first in range(0, B, block):
        part = rows[first:first + block]
        xb, yb = x.index(part), y[part]
        out = model(xb.ids, xb.dense)
        if len(part) == B:  # the whole batch in one pass
            losses = task_losses(out.logits, yb, model.config.task_types, cfg.loss_reduction)  # (T,)
        else:  # a block: its share of the batch's loss
            losses = task_losses(out.logits, yb, model.config.task_types, "sum")  # (T,)
            # the batch's labelled rows per task (B without missing labels): the blocks add up to the mean
            losses = losses / labelled_rows(y[rows]) if cfg.loss_reduction == "mean" else losses
        objective = _block_objective(balance, losses, first == 0)  # (T,) -> the block's share of the objective
        reg = _regularization(model, cfg, xb.ids, looked_up.take(), batch_rows=B, whole=first == 0)
        objective = objective + reg if reg is not None else objective
        check_finite(objective, model, *where)
        objective.backward()
        losses_sum += losses.detach()
    return losses_sum


def _block_objective(balance: FixedWeights, losses: torch.Tensor, first: bool) -> torch.Tensor:
    """``balance(losses)`` for one block of a batch, so that the blocks' objectives add up to the batch's.
    Fixed weights add up as they are. Uncertainty weighting's ``0.5 * log_vars.sum()`` (the
    ``log sigma_k``) belongs once per batch: the first block carries it, the later blocks only
    their weighted losses (``balance.weighted``; the normalised variant's weights are held constant
    within a batch, so its blocks add up the same way). Other balancers never see blocks
    (:data:`BLOCKWISE`)."""
    if first or not isinstance(balance, UncertaintyWeighting):
        return balance(losses)
    return balance.weighted(losses)


def _regularization(model: MultiTaskModel, cfg: TrainConfig, ids: torch.Tensor | None,
                    looked_up: torch.Tensor | None = None, *, batch_rows: int | None = None,
                    whole: bool = True) -> torch.Tensor | None:
    """:func:`mmoe_annotated.train.losses.regularization` for a batch or one block of it.

    ``looked_up``: the rows the forward pass already embedded, so that row L2 needs no second
    lookup; without them the ``ids`` are looked up again. For a block, ``batch_rows`` is the whole
    batch's row count (row L2 is scaled like the data loss, by the batch), and ``whole=False``
    leaves out the terms on whole tensors (the whole table, the weight matrices), which are added
    once per batch, with its first block. None when there is no term."""
    terms = []
    table = model.inputs.table
    if cfg.embedding_l2 > 0 and table is not None:
        if cfg.embedding_l2_mode == "table":
            if whole:
                terms.append(cfg.embedding_l2 * table.weight.square().sum())
        else:
            looked_up = model.inputs.embed(ids) if looked_up is None else looked_up
            rows = looked_up.square().sum()  # every looked-up row of the batch (or block)
            batch = ids.shape[0] if batch_rows is None else batch_rows
            terms.append(cfg.embedding_l2 * (rows / batch if cfg.loss_reduction == "mean" else rows))
    if cfg.weight_l2 > 0 and whole:
        terms.append(cfg.weight_l2 * sum(w.square().sum() for w in model.parameter_roles()["weights"]))
    return sum(terms) if terms else None


class LookedUpRows:
    """While active, keeps the embedding rows of the model's latest training forward pass
    (``rows``, ``(B, F*K)``), so that row L2 reuses that lookup (see :func:`_regularization`)."""

    def __init__(self, model: MultiTaskModel, wanted: bool):
        self.rows = None
        width = model.inputs.num_fields * model.inputs.emb_dim
        self._handle = model.inputs.register_forward_hook(self._keep) if wanted and width else None
        self._width = width

    def _keep(self, module, inputs, out) -> None:
        if module.training:
            self.rows = out[:, :self._width]  # the embeddings come first in the input vector

    def take(self) -> torch.Tensor | None:
        """The rows of the latest forward pass, once (never a stale batch's)."""
        rows, self.rows = self.rows, None
        return rows

    def __enter__(self) -> "LookedUpRows":
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
        self.rows = None
