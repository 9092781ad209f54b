"""Training: ``fit``, the plain loop the book teaches.

Explained in chapter 7, "Training" (``book/07_training.ipynb``).

:func:`fit` is four ideas in a loop: **forward** (``model(ids, dense)``), **per-task losses**
(:func:`~mmoe_annotated.train.losses.task_losses`), **their weighted sum plus L2** (fixed or
learned task weights, :func:`~mmoe_annotated.train.losses.task_balance`;
:func:`~mmoe_annotated.train.losses.regularization`), **backward and one optimizer step**.
:func:`~mmoe_annotated.train.inference.predict` and :func:`~mmoe_annotated.train.inference.evaluate`
run the same ``model.forward`` under ``torch.inference_mode()``. Everything the chapters print comes
from this code. The performance appendix shows an opt-in faster path that computes the same
numbers; nothing here depends on it.

What differs from DeepCTR-Torch's ``fit`` and why:

* task losses are weighted explicitly and averaged over the batch (DeepCTR-Torch sums both;
  ``loss_reduction="sum"`` reproduces its per-batch sums);
* L2 is chosen by parameter role, not by name strings (:mod:`mmoe_annotated.train.losses`);
* metrics are computed over the whole split with scikit-learn, not averaged over batches
  (:mod:`mmoe_annotated.train.inference`);
* the whole split lives in two tensors; each epoch draws one permutation and slices it (no
  ``DataLoader`` collation);
* a loss or weight that stops being finite stops training at that step, naming it.

Shape letters: ``B`` batch, ``T`` tasks, ``E`` experts, ``M`` rows of a split.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm import tqdm

from .dataset import as_dataset
from ..features.encoder import FeatureEncoder
from ..model.health import gate_statistics
from .losses import BALANCING, regularization, task_balance, task_losses
from .optimizers import OPTIMIZERS, make_optimizers
from .selection import EarlyStopping, Stopper
from ..model.mmoe import MultiTaskModel
from .inference import evaluate, non_finite_parameters, predict
from ..runtime import parse_device, resolve_device

__all__ = ["TrainConfig", "History", "fit"]



@dataclass(frozen=True)
class TrainConfig:
    """How to train. Frozen and validated once. The tutorial: ``TrainConfig(batch_size=32, epochs=10)``."""

    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "adagrad"
    lr: float | None = None
    #: One weight per task (default: all 1).
    task_weights: tuple[float, ...] | None = None
    #: How task losses become one objective: "fixed" (``task_weights``), "uncertainty" (Kendall et
    #: al. 2018) or "gradnorm" (Chen et al. 2018); :mod:`mmoe_annotated.train.losses`, chapter 10.
    task_balancing: str = "fixed"
    #: GradNorm's asymmetry ``alpha``; the learning rate of the learned weights (default: ``lr``).
    gradnorm_alpha: float = 1.5
    balance_lr: float | None = None
    #: "mean" over the batch, or "sum" (DeepCTR-Torch).
    loss_reduction: str = "mean"
    embedding_l2: float = 1e-5
    #: "rows" (looked-up rows, scaled like the data loss) or "table" (whole table, DeepCTR-Torch).
    embedding_l2_mode: str = "rows"
    weight_l2: float = 0.0
    shuffle: bool = True
    seed: int | None = 1024
    device: str = "cpu"
    progress: bool = True
    eval_batch_size: int = 8192
    #: Record gate health (:func:`~mmoe_annotated.model.health.gate_statistics`) after every epoch, on the
    #: first ``gate_stats_rows`` rows of ``valid=`` (which it then needs); chapter 10.
    gate_stats: bool = False
    gate_stats_rows: int = 4096
    #: Stop on a validation metric, task by task (:mod:`~mmoe_annotated.train.selection`); then
    #: ``epochs`` is a cap. Needs ``valid=``.
    early_stopping: EarlyStopping | None = None

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "gate_stats_rows"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")
            object.__setattr__(self, name, int(v))
        parse_device(self.device)
        if not isinstance(self.gate_stats, bool):
            raise ValueError(f"gate_stats must be True or False, got {self.gate_stats!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.task_balancing not in BALANCING:
            raise ValueError(f"unknown task_balancing {self.task_balancing!r}; choose one of {BALANCING}")
        if self.task_balancing != "fixed" and self.task_weights is not None:
            raise ValueError(f"task_balancing={self.task_balancing!r} learns the task weights: "
                             "leave task_weights unset")
        if not (math.isfinite(self.gradnorm_alpha) and self.gradnorm_alpha >= 0):
            raise ValueError(f"gradnorm_alpha must be a non-negative number, got {self.gradnorm_alpha}")
        if self.balance_lr is not None and not (math.isfinite(self.balance_lr) and self.balance_lr > 0):
            raise ValueError(f"balance_lr must be a positive number, got {self.balance_lr}")
        if self.loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}")
        if self.embedding_l2_mode not in ("rows", "table"):
            raise ValueError(f"embedding_l2_mode must be 'rows' or 'table', got {self.embedding_l2_mode!r}")
        for name in ("embedding_l2", "weight_l2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {v}")
        if self.early_stopping is not None and not isinstance(self.early_stopping, EarlyStopping):
            raise ValueError(f"early_stopping must be an EarlyStopping or None, got {self.early_stopping!r}")
        if self.task_weights is not None:
            tw = tuple(float(w) for w in self.task_weights)
            if any(not math.isfinite(w) or w < 0 for w in tw) or not any(w > 0 for w in tw):
                raise ValueError(f"task_weights must be non-negative with at least one positive, got {tw}")
            object.__setattr__(self, "task_weights", tw)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else OPTIMIZERS[self.optimizer].lr


@dataclass
class History:
    """One record per epoch: losses, seconds and validation metrics. ``to_frame()`` for a table.
    With early stopping, ``best_epochs`` (task -> epoch) and ``best_states`` (task -> weights)."""

    records: list[dict] = field(default_factory=list)
    best_epochs: dict[str, int] = field(default_factory=dict)
    best_states: dict[str, dict] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records).set_index("epoch") if self.records else pd.DataFrame()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> list:
        return [r.get(key, float("nan")) for r in self.records]


# ---------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------

def fit(model: MultiTaskModel, train, config: TrainConfig | None = None, *,
        encoder: FeatureEncoder | None = None, valid=None) -> History:
    """Train ``model`` on ``train`` (a DataFrame with ``encoder=``, or
    ``(features, labels)``).

    Returns a :class:`History` with one record per epoch (train losses; validation
    metrics when ``valid`` is given)."""
    cfg = check_fit(model, config)
    x, y, valid = training_data(model, train, valid, encoder, cfg)
    device = resolve_device(cfg.device)
    model.to(device)
    x, y = x.to(device), y.to(device)
    balance = task_balance(model, cfg, device)  # the task weights, fixed or learned
    optimizers = make_optimizers(model, cfg.optimizer, cfg.learning_rate)
    generator = seeded_generator(cfg.seed)
    history = History()
    stopper = Stopper(cfg.early_stopping, model) if cfg.early_stopping else None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        started, loss_sum = time.perf_counter(), 0.0
        batches = batch_rows(len(x), cfg, generator, device)
        for step, rows in enumerate(tqdm(batches, desc=f"epoch {epoch}",
                                         disable=not cfg.progress, leave=False), 1):
            xb, yb = x.index(rows), y[rows]
            out = model(xb.ids, xb.dense)  # forward: logits (B, T), gates (B, T, E)
            losses = task_losses(out.logits, yb, model.config.task_types,
                                 cfg.loss_reduction)  # (T,)
            # sum_k w_k L_k + L2
            objective = balance(losses) + regularization(model, cfg, xb.ids)
            check_finite(objective, model, epoch, step)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            objective.backward()  # gradients of every parameter
            for opt in optimizers:
                opt.step()
            # learned task weights take their own step (nothing for fixed weights)
            balance.step()
            loss_sum = loss_sum + losses.detach()  # (T,)
        check_weights(model, epoch, step)
        history.records.append(epoch_record(model, epoch, loss_sum / step,
                                            balance.weights(), started, valid, cfg))
        if stopper is not None and stopper.update(history.records[-1], model, epoch):
            break  # every monitored task has stopped improving
    if stopper is not None:
        stopper.finish(model, history)  # the best weights back, and the choice recorded
    model.eval()
    return history


def check_fit(model: MultiTaskModel, config: TrainConfig | None) -> TrainConfig:
    """The config (default: :class:`TrainConfig`), checked against the model before any
    work."""
    cfg = config or TrainConfig()
    if not isinstance(model, MultiTaskModel):
        raise TypeError("expected an MMoE / OMoE / SharedBottom model, got "
                        f"{type(model).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    names = model.config.task_names
    if cfg.task_weights is not None and len(cfg.task_weights) != len(names):
        raise ValueError(f"task_weights has {len(cfg.task_weights)} entries "
                         f"but the model has {len(names)} tasks {list(names)}")
    if cfg.early_stopping is not None:
        # tasks it names exist; restore="best" watches one
        cfg.early_stopping.monitored(names)
    if (cfg.embedding_l2_mode == "table" and cfg.embedding_l2 > 0
            and model.config.sparse_embeddings):
        raise ValueError("embedding_l2_mode='table' penalises every row, which needs "
                         "dense gradients: use embedding_l2_mode='rows' or build the "
                         "model with sparse_embeddings=False")
    resolve_device(cfg.device)
    return cfg


def training_data(model: MultiTaskModel, train, valid, encoder,
                  cfg: TrainConfig | None = None):
    """``train`` and ``valid`` as tensors, both checked before the first step:
    ``(x, y, valid)``."""
    if cfg is not None and cfg.gate_stats and valid is None:
        raise ValueError("TrainConfig(gate_stats=True) records gate health on "
                         "validation rows: pass valid=")
    if cfg is not None and cfg.early_stopping is not None and valid is None:
        raise ValueError("TrainConfig(early_stopping=...) stops on validation metrics: "
                         "pass valid=")
    x, y = as_dataset(train, model, encoder, source="train")
    if len(x) == 0:
        raise ValueError("the training set is empty")
    if valid is not None:
        valid = as_dataset(valid, model, encoder, source="valid")
        if len(valid[0]) == 0:
            raise ValueError("valid= is empty: pass rows to validate on, or valid=None")
    return x, y, valid


def seeded_generator(seed: int | None) -> torch.Generator:
    """The generator of the batch order: seeded, or from fresh entropy when ``seed`` is
    None."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def batch_rows(n: int, cfg: TrainConfig, generator: torch.Generator,
               device) -> tuple[torch.Tensor, ...]:
    """Row numbers of each batch of an epoch: one permutation of ``n`` rows (or
    ``0..n-1`` without shuffling), cut into batches of ``cfg.batch_size``."""
    order = torch.randperm(n, generator=generator) if cfg.shuffle else torch.arange(n)
    return order.to(device).split(cfg.batch_size)


def check_finite(objective: torch.Tensor, model: MultiTaskModel, epoch: int,
                 step: int) -> None:
    """Stop at the step whose objective is NaN or infinite, saying whether the weights
    broke first."""
    if bool(torch.isfinite(objective)):
        return
    broken = non_finite_parameters(model)
    biggest = max(float(p.detach().abs().max()) for p in model.parameters())
    cause = (f"the weights {broken} stopped being finite in the update before this step"
             if broken else
             f"the weights are finite (the largest is {biggest:.3g}), so this batch "
             "overflowed the forward pass")
    raise FloatingPointError(f"epoch {epoch}, step {step}: the training objective is "
                             f"{objective.item()}; {cause}; lower the learning rate or "
                             "check the inputs")


def check_weights(model: MultiTaskModel, epoch: int, step: int) -> None:
    """After an epoch's last update: every weight is still finite (that update had no
    later loss)."""
    broken = non_finite_parameters(model)
    if broken:
        raise FloatingPointError(f"epoch {epoch}, step {step}: the update left "
                                 "non-finite weights in "
                                 f"{broken}; lower the learning rate")


def epoch_record(model: MultiTaskModel, epoch: int, mean_losses: torch.Tensor,
                 weights: torch.Tensor, started: float, valid,
                 cfg: TrainConfig) -> dict:
    """One :class:`History` record: the mean train losses (weighted sum and per task)
    and the learned task weights, validation metrics (by
    :func:`~mmoe_annotated.train.inference.evaluate`), gate health, and the epoch's
    seconds."""
    record = train_record(model, epoch, mean_losses, weights, cfg)
    if valid is not None:
        record.update(valid_record(evaluate(model, valid,
                                            batch_size=cfg.eval_batch_size)))
    if cfg.gate_stats:
        record.update(gate_record(model, valid, cfg))
    record["seconds"] = time.perf_counter() - started
    return record


def train_record(model: MultiTaskModel, epoch: int, mean_losses: torch.Tensor, weights: torch.Tensor,
                 cfg: TrainConfig) -> dict:
    """The epoch and its train columns: the weighted sum of the mean task losses ``(T,)``, each task's
    mean loss and, when they are learned, the task weights ``(T,)`` at the epoch's end."""
    record = {"epoch": epoch, "train_loss": float((weights * mean_losses).sum())}
    record.update({f"train_{t}_loss": float(v) for t, v in zip(model.config.task_names, mean_losses)})
    if cfg.task_balancing != "fixed":
        record.update({f"train_{t}_weight": float(w) for t, w in zip(model.config.task_names, weights)})
    return record


def valid_record(metrics: dict[str, dict[str, float]]) -> dict:
    """Validation metrics per task as ``valid_<task>_<metric>`` columns."""
    return {f"valid_{t}_{k}": v for t, m in metrics.items() for k, v in m.items()}


def gate_record(model: MultiTaskModel, valid, cfg: TrainConfig) -> dict:
    """Gate health on the first ``cfg.gate_stats_rows`` validation rows (``gate_*`` columns)."""
    x, _ = valid
    _, gates = predict(model, x.index(slice(0, cfg.gate_stats_rows)), batch_size=cfg.eval_batch_size,
                       return_gates=True)
    return gate_statistics(gates, model.config.task_names)
