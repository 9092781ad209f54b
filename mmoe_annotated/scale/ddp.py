"""The pieces of DistributedDataParallel training: the process group, the step, the sharded prediction.

Explained in the appendix "Scaling out" (``book/appendix_scaling.ipynb``). The command that puts
them together, one process per rank, is :mod:`mmoe_annotated.scale.distributed`; each piece also
runs in one plain process (no process group), which is how the tests compare one process with two.

* :func:`setup` joins the process group that ``torch.distributed.run`` describes (gloo on CPU,
  NCCL on GPU) and says where this process stands (:class:`Setup`);
* :func:`broadcast` and :func:`all_gather` move Python objects between the processes (the file's
  index from rank 0 to all, the encoder counts and the test predictions from all to all);
* :func:`train_step` and :func:`train_epochs` are the plain training step of chapter 7: under DDP
  the wrapped model's ``backward()`` also all-reduces the gradients;
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
from .stream import ByteRecIndex, ByteRecStream, read_part
from ..train.losses import task_losses

__all__ = ["Setup", "setup", "broadcast", "all_gather", "chunk_bytes_for", "train_step", "train_epochs",
           "predict_parts"]


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
               task_types: Sequence[str]) -> float:
    """One step on one batch: the sum of the per-task mean losses (all task weights 1).
    Under DDP, ``backward()`` also all-reduces the gradients, averaging them over the
    processes."""
    ids, dense, y = batch
    optimizer.zero_grad(set_to_none=True)
    logits = model(ids, dense).logits  # (B, T)
    loss = task_losses(logits, y, task_types).sum()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_epochs(model: torch.nn.Module, optimizer: torch.optim.Optimizer, stream: ByteRecStream, epochs: int,
                 task_types: Sequence[str], device: torch.device) -> list[float]:
    """``epochs`` passes over the stream; the mean training loss of each epoch (this process's batches)."""
    loader = torch.utils.data.DataLoader(stream, batch_size=None)  # the stream makes the batches
    means = []
    for epoch in range(epochs):
        stream.set_epoch(epoch)
        model.train()
        losses = [train_step(model, optimizer, tuple(None if t is None else t.to(device) for t in batch), task_types)
                  for batch in loader]
        means.append(float(np.mean(losses)))
    return means


@torch.no_grad()
def predict_parts(model: MultiTaskModel, index: ByteRecIndex, parts, encoder: FeatureEncoder, device: torch.device,
                  batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Logits ``(M, T)`` float32 and labels ``(M, T)`` uint8 of the rows of ``parts``, in order."""
    model.eval()
    M, T = sum(hi - lo for _, lo, hi in parts), model.num_tasks
    logits, labels = np.empty((M, T), np.float32), np.empty((M, T), np.uint8)  # copied into: a batch's
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
        labels[at:at + len(frame)] = frame[list(model.config.task_names)].to_numpy(dtype=np.uint8)
        at += len(frame)
    return logits, labels


def chunk_bytes_for(path, world_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Chunk size for a file: at most ``chunk_bytes``, and small enough that each process gets at
    least 8 chunks, so that small files shard too."""
    return max(1 << 12, min(chunk_bytes, os.path.getsize(path) // (8 * world_size)))

