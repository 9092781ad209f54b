"""Training: fit, evaluate and predict, with task weights, L2 by parameter role and honest metrics.

Explained in chapter 7, "Training" (``book/07_training.ipynb``).

What differs from DeepCTR-Torch's ``fit`` and why:

* **Losses.** Binary tasks use BCE *with logits* (the network outputs logits; the
  sigmoid lives here and in :func:`predict`), regression tasks MSE. Task losses are
  combined with explicit ``task_weights`` (DeepCTR-Torch sums them unweighted).
  ``loss_reduction="sum"`` reproduces DeepCTR-Torch's per-batch sums.
* **L2 by role, not by name.** ``weight_l2`` applies to every weight matrix of experts,
  gates and towers (DeepCTR-Torch's ``l2_reg_dnn``); biases are never penalised.
  ``embedding_l2`` has two forms: ``"table"`` penalises the *whole* embedding table
  every step, exactly as DeepCTR-Torch does (``l2_reg_embedding``), which makes every
  row's gradient dense; ``"rows"`` (the default) penalises only the rows the batch
  looked up, scaled like the data loss, which allows sparse gradients and is how
  large-scale recommenders regularise embeddings.
* **Metrics over the whole split**, not averaged over batches: AUC and log loss from
  scikit-learn for binary tasks, MSE for regression. A split with one class gives AUC
  NaN with a warning instead of a crash.
* **No per-batch Python overhead** for in-memory data: the whole split lives in two
  tensors; each epoch draws one permutation and slices it (no DataLoader collation).
* **Large batches in blocks on a CPU.** A training batch of more than :data:`CPU_BLOCK_ROWS`
  rows goes through forward and backward in blocks of that many rows
  (``TrainConfig.block_rows``) whose gradients add up to the whole batch's, then one
  optimizer step: the same update as one pass, with a quarter of the activations alive at
  batch 4096, so the process's peak memory falls (the performance appendix measures it).
* **Small prediction batches side by side on a CPU.** :func:`predict` and :func:`evaluate` with
  batches of at most :data:`SIDE_BY_SIDE_ROWS` rows run whole batches on all threads at once,
  one batch per thread, instead of each operator of one batch split over the threads.

Shape letters: ``B`` batch, ``T`` tasks, ``E`` experts, ``M`` rows of a split.
"""
from __future__ import annotations

import math
import numbers
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score
from tqdm import tqdm

from . import fused
from .features import FeatureEncoder
from .inputs import EncodedFeatures
from .model import MultiTaskModel
from .runtime import parse_device, resolve_device, seed_everything

__all__ = ["TrainConfig", "History", "fit", "evaluate", "predict", "task_losses", "seed_everything",
           "resolve_device", "as_dataset", "OPTIMIZERS", "CPU_BLOCK_ROWS", "RowAdagrad"]

#: Optimizers by name, with their default learning rates (DeepCTR-Torch's "adagrad" is lr 0.01).
OPTIMIZERS = {"adagrad": 0.01, "adam": 1e-3, "sgd": 0.01}

#: In training on a CPU, the most rows one forward and backward pass takes: a larger batch is worked
#: through in blocks of this many, whose gradients add up to the batch's. With the default MMoE at
#: batch 4096, one pass over the whole batch raised the process's peak memory by 60 MiB (K = 4) and
#: 108 MiB (K = 16) more than blocks of 1,024 did, at about the same speed (the performance appendix).
CPU_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Frozen and validated once. The tutorial: ``TrainConfig(batch_size=32, epochs=10)``."""

    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "adagrad"
    lr: float | None = None
    #: One weight per task (default: all 1).
    task_weights: tuple[float, ...] | None = None
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
    #: Rows per forward and backward pass: a larger batch is worked through in blocks whose
    #: gradients add up to the whole batch's, then one optimizer step. None: :data:`CPU_BLOCK_ROWS`
    #: on a CPU, the whole batch on a GPU (which wants large passes).
    block_rows: int | None = None

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "block_rows"):
            v = getattr(self, name)
            if v is None and name == "block_rows":
                continue
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")
            object.__setattr__(self, name, int(v))
        parse_device(self.device)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}")
        if self.embedding_l2_mode not in ("rows", "table"):
            raise ValueError(f"embedding_l2_mode must be 'rows' or 'table', got {self.embedding_l2_mode!r}")
        for name in ("embedding_l2", "weight_l2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {v}")
        if self.task_weights is not None:
            tw = tuple(float(w) for w in self.task_weights)
            if any(not math.isfinite(w) or w < 0 for w in tw) or not any(w > 0 for w in tw):
                raise ValueError(f"task_weights must be non-negative with at least one positive, got {tw}")
            object.__setattr__(self, "task_weights", tw)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else OPTIMIZERS[self.optimizer]


@dataclass
class History:
    """One record per epoch: losses, seconds and validation metrics. ``to_frame()`` for a table."""

    records: list[dict] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records).set_index("epoch") if self.records else pd.DataFrame()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> list:
        return [r.get(key, float("nan")) for r in self.records]


# ---------------------------------------------------------------------------
# Data in, in one shape
# ---------------------------------------------------------------------------

def _labels(y, model: MultiTaskModel, source: str) -> torch.Tensor:
    names, types = model.config.task_names, model.config.task_types
    try:
        # np.array copies: pandas 3 hands out read-only arrays, which torch warns about.
        y = torch.as_tensor(np.array(y, dtype=np.float32) if not torch.is_tensor(y) else y, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: labels must be numbers, one column per task {list(names)} ({exc})") from exc
    if y.dim() == 1 and len(names) == 1:
        y = y.unsqueeze(1)
    if y.dim() != 2 or y.shape[1] != len(names):
        raise ValueError(f"{source}: labels must have shape (rows, {len(names)}) for tasks {list(names)}, "
                         f"got {tuple(y.shape)}")
    finite = torch.isfinite(y)
    if not finite.all():
        row, col = (int(v) for v in torch.nonzero(~finite)[0])
        raise ValueError(f"{source}: label of task {names[col]!r} at row {row} is {y[row, col].item()}; "
                         "labels must be finite (drop or fill missing labels first)")
    for t, (name, kind) in enumerate(zip(names, types)):
        if kind == "binary":
            bad = (y[:, t] != 0) & (y[:, t] != 1)
            if bad.any():
                row = int(torch.nonzero(bad)[0])
                raise ValueError(f"{source}: binary task {name!r} has label {y[row, t].item()} at row {row}; "
                                 "binary labels must be 0 or 1")
    return y


def as_dataset(data, model: MultiTaskModel, encoder: FeatureEncoder | None = None, *,
               labels: bool = True, source: str = "data") -> tuple[EncodedFeatures, torch.Tensor | None]:
    """Bring any supported input to ``(EncodedFeatures, labels (M, T) or None)``.

    ``data`` is a DataFrame (encoded with ``encoder``; labels from the task-name columns),
    a pair ``(features, labels)``, or, when ``labels=False``, features alone. Features are
    :class:`EncodedFeatures` or a float tensor of dense inputs ``(M, N)``."""
    y = None
    if isinstance(data, pd.DataFrame):
        if encoder is None:
            raise ValueError(f"{source} is a DataFrame: pass the fitted encoder= to turn it into features")
        x = encoder.transform(data)
        if labels:
            missing = [t for t in model.config.task_names if t not in data.columns]
            if missing:
                raise ValueError(f"{source} lacks label column(s) {missing} for tasks "
                                 f"{list(model.config.task_names)}")
            frame = data[list(model.config.task_names)]
            for c in frame.columns:
                if not pd.api.types.is_numeric_dtype(frame[c]):
                    raise ValueError(f"{source}: label column {c!r} has dtype {frame[c].dtype}, expected numbers")
            y = _labels(frame.to_numpy(dtype=np.float32, na_value=np.nan), model, source)
    else:
        if labels:
            if not (isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, EncodedFeatures)):
                raise ValueError(f"{source} must be a DataFrame or a pair (features, labels)")
            x, y = data
            y = _labels(y, model, source)
        else:
            x = data
        if torch.is_tensor(x) or isinstance(x, np.ndarray):
            x = EncodedFeatures(None, torch.as_tensor(x, dtype=torch.float32))
        if not isinstance(x, EncodedFeatures):
            raise TypeError(f"{source}: features must be EncodedFeatures or a dense tensor, got {type(x).__name__}")
    model.inputs.check(x.ids, x.dense)
    if y is not None and len(y) != len(x):
        raise ValueError(f"{source}: {len(x)} rows of features but {len(y)} rows of labels")
    return x, y


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------

def task_losses(logits: torch.Tensor, y: torch.Tensor, task_types: Sequence[str],
                reduction: str = "mean") -> torch.Tensor:
    """Per-task losses ``(T,)``: BCE with logits for binary tasks, MSE for regression."""
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


def _regularization(model: MultiTaskModel, cfg: TrainConfig, ids: torch.Tensor | None,
                    looked_up: torch.Tensor | None = None, *, batch_rows: int | None = None,
                    whole: bool = True) -> torch.Tensor | None:
    """The L2 terms of the objective. ``looked_up``: the rows the forward pass already embedded
    (``fit`` passes them), so that row L2 needs no second lookup and its gradient joins the data
    gradient in the one embedding backward; without it the batch's ``ids`` are looked up again.

    When ``ids`` is one block of a larger batch (see :attr:`TrainConfig.block_rows`),
    ``batch_rows`` is the whole batch's row count (row L2 is scaled like the data loss, by the
    batch), and ``whole=False`` leaves out the terms on whole tensors (the whole table, the weight
    matrices), which ``fit`` adds once per batch, with its first block."""
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


class RowAdagrad(torch.optim.Optimizer):
    """Adagrad for an embedding table with sparse gradients, updated row by row.

    The update is :class:`torch.optim.Adagrad`'s (``lr``, ``eps=1e-10``, zero initial sum, no
    decay) on the rows the batch looked up: the gradients of repeated ids are summed, each
    touched row's squared gradient joins its running sum, and the row moves by
    ``-lr * g / (sqrt(sum) + eps)``. ``torch.optim.Adagrad`` gets there by sorting the ids and
    building coalesced sparse tensors; here a scratch table sums repeated ids without sorting
    (each id then reads its row's total, and repeated ids write identical values), which matters
    at batch 256, where the optimizer step is a tenth of the training time. The scratch table
    costs as much memory as the running sums. ``tests/test_fused.py`` checks that both give the
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
                    state["sum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                total, grad = state["sum"], p.grad
                if not grad.is_sparse:
                    total.addcmul_(grad, grad)
                    p.addcdiv_(grad, total.sqrt().add_(eps), value=-lr)
                    continue
                if "scratch" not in state:
                    state["scratch"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                scratch = state["scratch"]
                ids, values = grad._indices()[0], grad._values()  # (R,), (R, K); ids may repeat
                scratch.index_add_(0, ids, values)  # every touched row holds its summed gradient
                g = scratch.index_select(0, ids)  # (R, K), alike for repeated ids
                scratch.index_fill_(0, ids, 0)
                seen = total.index_select(0, ids).addcmul_(g, g)  # (R, K)
                total.index_copy_(0, ids, seen)
                p.index_copy_(0, ids, p.index_select(0, ids).addcdiv_(g, seen.sqrt_().add_(eps), value=-lr))
        return loss


def _optimizers(model: MultiTaskModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    lr = cfg.learning_rate
    sparse = model.config.sparse_embeddings and model.inputs.table is not None
    if cfg.optimizer == "adagrad":
        # The fused (one-kernel) Adagrad runs on CPU and takes dense gradients only: it updates the
        # dense parameters, and RowAdagrad the sparse table. Same update rule, fewer passes.
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        if sparse:
            table = model.inputs.table.weight
            rest = [p for p in model.parameters() if p is not table]
            return [RowAdagrad([table], lr=lr), torch.optim.Adagrad(rest, lr=lr, fused=on_cpu or None)]
        return [torch.optim.Adagrad(model.parameters(), lr=lr, fused=on_cpu or None)]
    if cfg.optimizer == "sgd":
        return [torch.optim.SGD(model.parameters(), lr=lr)]
    if sparse:  # Adam cannot take sparse gradients: SparseAdam for the table, Adam for the rest
        table = model.inputs.table.weight
        rest = [p for p in model.parameters() if p is not table]
        return [torch.optim.SparseAdam([table], lr=lr), torch.optim.Adam(rest, lr=lr)]
    return [torch.optim.Adam(model.parameters(), lr=lr)]


class _LookedUpRows:
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

    def __enter__(self) -> "_LookedUpRows":
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
        self.rows = None


# ---------------------------------------------------------------------------
# fit / evaluate / predict
# ---------------------------------------------------------------------------

def fit(model: MultiTaskModel, train, config: TrainConfig | None = None, *, encoder: FeatureEncoder | None = None,
        valid=None) -> History:
    """Train ``model`` on ``train`` (a DataFrame with ``encoder=``, or ``(features, labels)``).

    Returns a :class:`History` with one record per epoch (train losses; validation
    metrics when ``valid`` is given)."""
    cfg = config or TrainConfig()
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected an MMoE / OMoE / SharedBottom model, got {type(model).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    task_names, task_types = model.config.task_names, model.config.task_types
    if cfg.task_weights is not None and len(cfg.task_weights) != len(task_names):
        raise ValueError(f"task_weights has {len(cfg.task_weights)} entries but the model has "
                         f"{len(task_names)} tasks {list(task_names)}")
    if cfg.embedding_l2_mode == "table" and cfg.embedding_l2 > 0 and model.config.sparse_embeddings:
        raise ValueError("embedding_l2_mode='table' penalises every row, which needs dense gradients: "
                         "use embedding_l2_mode='rows' or build the model with sparse_embeddings=False")
    device = resolve_device(cfg.device)
    x, y = as_dataset(train, model, encoder, source="train")
    if len(x) == 0:
        raise ValueError("the training set is empty")
    if valid is not None:
        valid = as_dataset(valid, model, encoder, source="valid")
    model.to(device)
    if device.type == "cuda":
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    weights = torch.tensor(cfg.task_weights or [1.0] * len(task_names), device=device)  # (T,)
    optimizers = _optimizers(model, cfg)
    generator = torch.Generator()
    if cfg.seed is not None:
        generator.manual_seed(cfg.seed)
    else:
        generator.seed()
    n, bs = len(x), cfg.batch_size
    block = cfg.block_rows or (CPU_BLOCK_ROWS if device.type == "cpu" else bs)
    history = History()
    row_l2 = cfg.embedding_l2 > 0 and cfg.embedding_l2_mode == "rows"
    with _LookedUpRows(model, row_l2) as looked_up:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            started = time.perf_counter()
            order = torch.randperm(n, generator=generator).to(device) if cfg.shuffle else None
            total = torch.zeros((), device=device)
            per_task = torch.zeros(len(task_names), device=device)
            steps = range(0, n, bs)
            progress = tqdm(steps, desc=f"epoch {epoch}/{cfg.epochs}", disable=not cfg.progress, leave=False)
            for start in progress:
                stop = min(start + bs, n)
                batch = order[start:stop] if order is not None else None  # (B,) row numbers
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                # One pass per block of at most `block` rows; their gradients add up to the batch's.
                for first in range(start, stop, block):
                    last = min(first + block, stop)
                    rows = batch[first - start:last - start] if batch is not None else slice(first, last)
                    xb, yb = x.index(rows), y[rows]
                    out = model(xb.ids, xb.dense)
                    if last - first == stop - start:  # the whole batch in one pass
                        losses = task_losses(out.logits, yb, task_types, cfg.loss_reduction)  # (T,)
                    else:  # a block: its share of the batch's loss
                        losses = task_losses(out.logits, yb, task_types, "sum")  # (T,)
                        losses = losses / (stop - start) if cfg.loss_reduction == "mean" else losses
                    loss = (losses * weights).sum()
                    reg = _regularization(model, cfg, xb.ids, looked_up.take(), batch_rows=stop - start,
                                          whole=first == start)
                    objective = loss + reg if reg is not None else loss
                    objective.backward()
                    total += loss.detach()
                    per_task += losses.detach()
                for opt in optimizers:
                    opt.step()
            batches = len(steps)
            record = {"epoch": epoch, "train_loss": total.item() / batches}
            record.update({f"train_{t}_loss": v / batches for t, v in zip(task_names, per_task.tolist())})
            if valid is not None:
                metrics = evaluate(model, valid, batch_size=cfg.eval_batch_size, device=device)
                for t, m in metrics.items():
                    record.update({f"valid_{t}_{k}": v for k, v in m.items()})
            record["seconds"] = time.perf_counter() - started
            if not math.isfinite(record["train_loss"]):
                raise FloatingPointError(f"epoch {epoch}: the training loss became {record['train_loss']}; "
                                         "lower the learning rate or check the inputs for extreme values")
            history.records.append(record)
    model.eval()
    return history


def _inference_network(model: MultiTaskModel):
    """``model``'s forward without gradients: the fused pass (:mod:`mmoe_annotated.fused`) where it
    computes the same numbers, else the modules."""
    if fused.supports(model) is None:
        return fused.batches(model)
    return model


#: On a GPU, prediction replays a CUDA graph (:func:`mmoe_annotated.fused.graphed`) when it has at
#: least this many full batches: capturing costs about as much as a few batches run kernel by kernel.
GRAPH_MIN_BATCHES = 4

#: Prediction moves its input to the device this many rows at a time (a whole number of batches).
CHUNK_ROWS = 1 << 20

#: On a CPU with more than one thread, prediction batches of at most this many rows run side by
#: side, one whole batch per thread (:func:`_batches_side_by_side`). A pass over a small batch is
#: some forty operators of a fraction of a millisecond each; split over two threads, every one of them
#: waits for both threads to wake and to finish. Side by side, prediction at batch 256 ran
#: 1.15-1.18x (``K = 4``) and 1.18-1.25x (``K = 16``) faster, at batch 1,024 1.05-1.17x, in paired
#: runs on two cores (two scratch scripts, the benchmark's data); at batch 4096 it gained 1 %, not
#: worth a second set of working tensors.
SIDE_BY_SIDE_ROWS = 1024


def _batches_side_by_side(model: MultiTaskModel, x: EncodedFeatures, batch_size: int,
                          logits: torch.Tensor, gates: torch.Tensor | None) -> None:
    """The batches of ``x`` through the fused pass, one whole batch per thread: every thread runs
    its own :func:`fused.batches <mmoe_annotated.fused.batches>` (its own working tensors) on one
    core, takes the next batch when it finishes one (so a core that runs slower for a while takes
    fewer batches), and writes each batch's outputs into its rows of ``logits`` / ``gates``. The
    numbers are those of a one-thread run, batch by batch."""
    threads = torch.get_num_threads()
    starts = iter(range(0, len(x), batch_size))
    lock, failed = threading.Lock(), threading.Event()

    def work() -> None:
        torch.set_num_threads(1)  # this thread's operators run on its own core
        try:
            with torch.inference_mode():  # grad mode is per thread
                run = fused.batches(model)
                while not failed.is_set():
                    with lock:
                        start = next(starts, None)
                    if start is None:
                        return
                    xb = x.index(slice(start, start + batch_size))
                    out = run(xb.ids, xb.dense)
                    rows = slice(start, start + len(xb))
                    logits[rows].copy_(out.logits)
                    if gates is not None:
                        gates[rows].copy_(out.gates)
        except BaseException:
            failed.set()  # the other threads stop after their current batch
            raise

    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="mmoe-predict") as pool:
            for job in [pool.submit(work) for _ in range(threads)]:
                job.result()  # an error in a thread is raised here
    finally:
        # With OpenMP (torch's CPU wheels) the count set above belongs to each worker thread; a
        # build whose thread count is process-wide gets the caller's count back here.
        torch.set_num_threads(threads)


def _batched_outputs(model: MultiTaskModel, x: EncodedFeatures, batch_size: int, device: torch.device,
                     want_gates: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    was_training = model.training
    model.eval()
    n, T = len(x), model.num_tasks
    E = model.num_experts if model.gates is not None else 1
    # Each batch's outputs go straight into the result (on a GPU they stay there until the end:
    # one copy back, no sync per batch).
    logits = torch.empty(n, T, device=device)  # (M, T)
    gates = torch.empty(n, T, E, device=device) if want_gates else None  # (M, T, E)
    chunk = max(1, CHUNK_ROWS // batch_size) * batch_size
    try:
        if (device.type == "cpu" and batch_size <= SIDE_BY_SIDE_ROWS and n > batch_size
                and torch.get_num_threads() > 1 and fused.supports(model) is None):
            _batches_side_by_side(model, x, batch_size, logits, gates)
            return logits, gates
        with torch.inference_mode():
            network = _inference_network(model)
            replay = None  # the graph keeps its own working tensors: a smaller last batch through
            # `network` must not resize the ones the graph reads and writes
            if device.type == "cuda" and network is not model and n // batch_size >= GRAPH_MIN_BATCHES:
                replay = fused.graphed(model, batch_size, x.ids, x.dense)
            for first in range(0, n, chunk):
                # One copy to the device per chunk (none on the CPU), not one per batch.
                xc = x.index(slice(first, first + chunk)).to(device)
                for start in range(0, len(xc), batch_size):
                    xb = xc.index(slice(start, start + batch_size))
                    run = replay if replay is not None and len(xb) == batch_size else network
                    out = run(xb.ids, xb.dense)  # a graph's outputs are copied out below, before its next replay
                    rows = slice(first + start, first + start + len(xb))
                    logits[rows].copy_(out.logits)
                    if want_gates:
                        gates[rows].copy_(out.gates)
    finally:
        model.train(was_training)
    return logits.cpu(), (gates.cpu() if want_gates else None)


def _device_of(model: MultiTaskModel, device) -> torch.device:
    return resolve_device(device) if device is not None else next(model.parameters()).device


def predict(model: MultiTaskModel, data, *, encoder: FeatureEncoder | None = None, batch_size: int = 8192,
            return_gates: bool = False, device=None):
    """Predictions ``(M, T)`` as a NumPy array: probabilities (sigmoid of the logits) for binary
    tasks, raw values for regression. With ``return_gates=True`` also the gate weights ``(M, T, E)``.

    The batches run through the fused pass (:mod:`mmoe_annotated.fused`) where it applies; on a
    GPU, with at least :data:`GRAPH_MIN_BATCHES` full batches, it is captured once as a CUDA graph
    and replayed for every full batch."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = _device_of(model, device)
    model.to(dev)
    x, _ = as_dataset(data, model, encoder, labels=False, source="predict data")
    logits, gates = _batched_outputs(model, x, int(batch_size), dev, return_gates)
    binary = torch.tensor([t == "binary" for t in model.config.task_types])
    preds = torch.where(binary, torch.sigmoid(logits), logits).numpy()
    return (preds, gates.numpy()) if return_gates else preds


def _auc(y: np.ndarray, p: np.ndarray, task: str) -> float:
    if len(np.unique(y)) < 2:
        warnings.warn(f"task {task!r}: the evaluation split holds only one class, so AUC is undefined (NaN)",
                      RuntimeWarning, stacklevel=3)
        return float("nan")
    return float(roc_auc_score(y, p))


def evaluate(model: MultiTaskModel, data, *, encoder: FeatureEncoder | None = None, batch_size: int = 8192,
             device=None) -> dict[str, dict[str, float]]:
    """Metrics over the whole split, per task: ``{"finish": {"auc": .., "logloss": ..}, ...}``
    for binary tasks, ``{"mse": ..}`` for regression."""
    dev = _device_of(model, device)
    model.to(dev)
    x, y = as_dataset(data, model, encoder, source="evaluation data")
    if len(x) == 0:
        raise ValueError("the evaluation set is empty")
    logits, _ = _batched_outputs(model, x, int(batch_size), dev, False)
    y = y.numpy().astype(np.float64)
    out = {}
    for t, (name, kind) in enumerate(zip(model.config.task_names, model.config.task_types)):
        if kind == "binary":
            p = torch.sigmoid(logits[:, t].double()).numpy()
            out[name] = {"auc": _auc(y[:, t], p, name),
                         "logloss": float(log_loss(y[:, t], p, labels=[0, 1]))}
        else:
            out[name] = {"mse": float(mean_squared_error(y[:, t], logits[:, t].double().numpy()))}
    return out
