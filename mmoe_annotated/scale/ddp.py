"""The pieces of DistributedDataParallel training: the process group, the step, the sharded prediction.

Explained in the appendix "Scaling out" (``book/appendix_scaling.ipynb``). The command that puts
them together, one process per rank, is :mod:`mmoe_annotated.scale.distributed`; each piece also
runs in one plain process (no process group), which is how the tests compare one process with two.

* :func:`setup` joins the process group that ``torch.distributed.run`` describes (gloo on CPU,
  NCCL on GPU) and says where this process stands (:class:`Setup`);
* :func:`broadcast` and :func:`all_gather` move Python objects between the processes (the file's
  index from rank 0 to all, the encoder counts and the test predictions from all to all);
* :func:`shard` gives each process an equal share of the rows (to a row), however few chunks the
  file has;
* :func:`train_step` and :func:`train_epochs` are the training step of chapter 7: under DDP the
  wrapped model's ``backward()`` also all-reduces the gradients, and each process weighs its loss
  so that the averaged gradient is the whole global batch's, even when the processes' batches
  differ in rows; a process whose rows end first pads (see :func:`train_epochs`), so every row is
  used every epoch;
* :func:`predict_parts` predicts one process's share of the test rows, in file order.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..data.reader import CHUNK_BYTES
from ..features.encoder import FeatureEncoder
from ..model.mmoe import MultiTaskModel
from ..runtime import resolve_device
from .stream import ByteRecIndex, ByteRecStream, Chunk, read_part, shard, shard_rows
from ..train.losses import task_losses

__all__ = ["Setup", "setup", "broadcast", "all_gather", "chunk_bytes_for", "shard", "shard_rows", "train_step",
           "train_epochs", "predict_parts"]


class Setup:
    """Where this process stands: ``rank`` of ``world_size``, its device, and whether a process group runs."""

    def __init__(self, rank: int = 0, world_size: int = 1, device: torch.device = torch.device("cpu"),
                 distributed: bool = False):
        self.rank, self.world_size, self.device, self.distributed = rank, world_size, device, distributed


def setup(device: str = "cpu", timeout_s: float = 600.0) -> Setup:
    """Join the process group that ``torch.distributed.run`` describes in the environment (RANK,
    WORLD_SIZE, MASTER_ADDR, ...): gloo on CPU, NCCL on GPU. Without it: one plain process."""
    dev = resolve_device(device)
    if "RANK" not in os.environ:
        return Setup(device=dev)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    return Setup(dist.get_rank(), dist.get_world_size(), dev, True)


def broadcast(obj, s: Setup, src: int = 0):
    """``obj`` from rank ``src`` on every process."""
    if not s.distributed:
        return obj
    box = [obj if s.rank == src else None]
    dist.broadcast_object_list(box, src=src, device=s.device if s.device.type == "cuda" else None)
    return box[0]


def all_gather(obj, s: Setup) -> list:
    """Every process's ``obj``, in rank order, on every process."""
    if not s.distributed:
        return [obj]
    out = [None] * s.world_size
    dist.all_gather_object(out, obj)
    return out


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch,
               task_types: Sequence[str], s: Setup | None = None) -> float:
    """One step on one batch; returns this process's loss, the sum of its per-task mean
    losses.

    Under DDP, ``backward()`` averages the gradients over the ``N`` processes. Each
    process's loss is therefore its per-task *sums* over its labelled rows times
    ``N / n_t``, with ``n_t`` the labelled rows of task ``t`` in the whole global batch
    (one all-reduce of ``T`` counts): the average is then the gradient of the global
    batch's per-task mean losses, as one process would take on all the rows, also when
    the processes' batches differ in rows (the last, partial ones) or hold padding
    (labels missing, so masked). One process: the plain per-task means."""
    ids, dense, y = batch
    optimizer.zero_grad(set_to_none=True)
    logits = model(ids, dense).logits  # (B, T)
    # (T,): sums over this process's labelled rows
    sums = task_losses(logits, y, task_types, reduction="sum")
    counts = (~torch.isnan(y)).sum(0).to(sums.dtype)  # (T,)
    mine = float((sums.detach() / counts.clamp_min(1)).sum())
    world = 1
    if s is not None and s.distributed:
        dist.all_reduce(counts)  # (T,) labelled rows of the global batch
        world = s.world_size
    loss = (sums * (world / counts.clamp_min(1))).sum()
    loss.backward()  # under DDP: all-reduced and divided by the N processes
    optimizer.step()
    return mine


def _padding(batch):
    """One row of ``batch`` with its labels missing (NaN): masked by the loss, it adds no gradient."""
    ids, dense, y = batch
    return (None if ids is None else ids[:1], None if dense is None else dense[:1], torch.full_like(y[:1], float("nan")))


def train_epochs(model: torch.nn.Module, optimizer: torch.optim.Optimizer, stream: ByteRecStream, epochs: int,
                 task_types: Sequence[str], device: torch.device, steps: int | None = None,
                 s: Setup | None = None) -> list[float]:
    """``epochs`` passes over the stream; the mean training loss of each epoch (this process's batches).

    ``steps``: the steps every process takes per epoch (DDP needs each process in every
    all-reduce). A process whose stream ends first takes the rest as padding steps (one row, labels
    missing): its rows all trained, it only joins the others' gradient averaging."""
    loader = torch.utils.data.DataLoader(stream, batch_size=None)  # the stream makes the batches
    means = []
    for epoch in range(epochs):
        stream.set_epoch(epoch)
        model.train()
        losses, pad = [], None
        for batch in loader:
            batch = tuple(None if t is None else t.to(device) for t in batch)
            losses.append(train_step(model, optimizer, batch, task_types, s))
            pad = _padding(batch) if pad is None else pad
        if steps is not None and len(losses) > steps:
            raise RuntimeError(f"the stream gave {len(losses)} batches, more than the {steps} steps of every process")
        for _ in range((steps or 0) - len(losses)):
            if pad is None:
                raise ValueError("this process has no rows to train on")
            train_step(model, optimizer, pad, task_types, s)
        means.append(float(np.mean(losses)) if losses else float("nan"))
    return means


@torch.no_grad()
def predict_parts(model: MultiTaskModel, index: ByteRecIndex, parts, encoder: FeatureEncoder, device: torch.device,
                  batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(M, T)`` float32 and labels ``(M, T)`` uint8 of the rows of ``parts``, in order;
    float32 labels, NaN where missing, when the index reads missing labels."""
    model.eval()
    M, T = sum(hi - lo for _, lo, hi in parts), model.num_tasks
    kind = np.float32 if index.missing_labels else np.uint8
    logits, labels = np.empty((M, T), np.float32), np.empty((M, T), kind)  # copied into: a batch's
    at = 0  # output may be a view of a larger buffer, which a kept reference would keep alive
    for part in parts:
        frame = read_part(index, part)
        x = encoder.transform(frame)
        for lo in range(0, len(frame), batch_size):
            sl = slice(lo, lo + batch_size)
            ids = None if x.ids is None else x.ids[sl].to(device)
            dense = None if x.dense is None else x.dense[sl].to(device)
            out = model(ids, dense).logits  # (b, T)
            logits[at + lo:at + lo + len(out)] = out.float().cpu().numpy()
        labels[at:at + len(frame)] = frame[list(model.config.task_names)].to_numpy(dtype=kind)
        at += len(frame)
    return logits, labels


def chunk_bytes_for(path, world_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Chunk size for a file: at most ``chunk_bytes``, and small enough that each process gets at
    least 8 chunks, so that small files shard too."""
    return max(1 << 12, min(chunk_bytes, os.path.getsize(path) // (8 * world_size)))

