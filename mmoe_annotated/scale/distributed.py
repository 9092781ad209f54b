"""Training on several processes with DistributedDataParallel, from the stream.

Explained in the appendix "Scaling out" (``book/appendix_scaling.ipynb``). Run it with PyTorch's
launcher, which starts one process per ``--nproc_per_node`` and tells each its rank::

    python -m torch.distributed.run --nproc_per_node 2 -m mmoe_annotated.scale.distributed \\
        --data byterec.txt --out run/ [--epochs 1] [--batch-size 256] [--model mmoe] [--device cpu]

What each process does (the pieces, :func:`~mmoe_annotated.scale.ddp.setup`,
:func:`~mmoe_annotated.scale.ddp.train_step` and the others, are in :mod:`mmoe_annotated.scale.ddp`;
this module puts them together as the command):

1. rank 0 indexes the file (:func:`~mmoe_annotated.scale.stream.index_byterec`) and sends the index to all;
2. each process counts IDs and ranges in its share of the training rows
   (:func:`~mmoe_annotated.scale.ddp.shard`: equal shares, to a row, however small the file); the
   counts are gathered and merged, so every process builds the same encoder, equal to a one-process fit;
3. every process builds the model from the same seed; ``DistributedDataParallel`` also copies
   rank 0's weights to the others, then, in each ``backward()``, all-reduces the gradients (sums them
   across processes and divides by the number of processes): every process steps with the
   gradient of the whole global batch (:func:`~mmoe_annotated.scale.ddp.train_step` weighs each
   process's loss so), so the weights stay identical. Every row trains every epoch: the steps are
   those of the largest share, the last batch partial, and a process whose rows end first pads;
4. each process predicts its share of the test rows; the predictions are *gathered* on rank 0,
   which computes AUC and log loss on all of them (AUC is not an average of per-process AUCs);
5. rank 0 writes ``model.ckpt`` (:func:`~mmoe_annotated.checkpoint.save_checkpoint`), the
   predictions if asked, and last ``metrics.json``, the run's completion record, only after every
   process has finished. Rank 0 removes all three (:data:`OUTPUTS`) before anything else, so a
   failing run, even one refused at its first check, leaves no earlier run's files looking current.
   An undefined metric (a test split with one class of a task) is written as ``null`` and named.

``--batch-size`` is the *global* batch: each of the N processes takes ``batch_size / N`` rows per
step. The embedding table's gradients are dense here (``sparse_embeddings=False``): DDP can all-reduce
sparse gradients with gloo (CPU), but NCCL (GPU) has no sparse all-reduce, and one code path serves both.

``--missing-labels`` reads an empty label field as a missing label (NaN), as
``load_byterec(missing_labels=True)`` does: the loss masks it and each task is scored on its labelled
rows (``"labelled"`` in ``metrics.json``). Without it, an empty label field stops the run, naming its
file, line and column.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import save_checkpoint
from ..data.reader import CHUNK_BYTES
from ..data.schema import DENSE_FEATURES, SPARSE_FEATURES
from ..features.encoder import FeatureEncoder
from ..model import MODELS, build_model
from ..model.config import ModelConfig
from ..runtime import seed_everything
from .ddp import (Setup, all_gather, broadcast, chunk_bytes_for, predict_parts, setup, shard, shard_rows,
                  train_epochs, train_step)
from .stream import ByteRecStream, EncoderStats, collect_stats, index_byterec
from ..train.loop import TrainConfig
from ..train.metrics import task_metrics
from ..train.optimizers import OPTIMIZERS, make_optimizer

# The pieces live in scale/ddp.py; this module lists them too, where the appendix and the tests
# find them (distributed.train_step).
__all__ = ["Setup", "setup", "chunk_bytes_for", "shard", "train_step", "train_epochs", "predict_parts",
           "OUTPUTS", "main"]

#: What the command writes into ``--out``; ``metrics.json``, written last, records a finished run.
OUTPUTS = ("predictions.npz", "model.ckpt", "metrics.json")


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_nan_to_null(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _nan_to_null(obj):
    """An undefined metric (NaN, :mod:`~mmoe_annotated.train.metrics`) as JSON's null."""
    if isinstance(obj, dict):
        return {k: _nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_null(v) for v in obj]
    return None if isinstance(obj, float) and obj != obj else obj


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(args: argparse.Namespace) -> dict | None:
    s = setup(args.device)
    try:
        return _run(args, s)
    except BaseException as exc:
        print(f"[rank {s.rank} of {s.world_size}] failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        raise
    finally:
        if s.distributed:
            dist.destroy_process_group()


def _run(args: argparse.Namespace, s: Setup) -> dict | None:
    out = _fresh_out(Path(args.out), s)  # first: an earlier run's files never pass for this run's
    torch.set_num_threads(args.threads)
    cfg, local_batch = _train_config(args, s)
    seed_everything(cfg.seed)

    index = broadcast(index_byterec(args.data, chunk_bytes_for(args.data, s.world_size, args.chunk_bytes),
                                    missing_labels=args.missing_labels) if s.rank == 0 else None, s)
    train_parts, test_parts = index.split(args.train_fraction)
    encoder = _fit_encoder(index, train_parts, args, s)
    model = build_model(args.model, ModelConfig(encoder.features, seed=cfg.seed)).to(s.device)
    net = DistributedDataParallel(model, device_ids=[s.device.index] if s.device.type == "cuda" else None) \
        if s.distributed else model
    optimizer = make_optimizer(cfg.optimizer, net.parameters(), cfg.lr)
    stream, steps = _train_stream(index, train_parts, encoder, cfg, local_batch, args.buffer_rows, s)
    losses, seconds = _train(net, optimizer, stream, cfg.epochs, model.config.task_types, steps, s)
    train_peak = _peak_rss_mib()

    logits, labels = predict_parts(model, index, shard(test_parts, s.rank, s.world_size), encoder, s.device)
    # once every process got here, training has finished everywhere
    gathered = all_gather((logits, labels, train_peak, _peak_rss_mib()), s)
    if s.rank != 0:
        return None
    # the shares are consecutive rows: in rank order, they are the test split in file order
    all_logits, all_labels = np.concatenate([g[0] for g in gathered]), np.concatenate([g[1] for g in gathered])
    with warnings.catch_warnings():  # an undefined AUC is recorded as undefined (null) and named below
        warnings.simplefilter("ignore", RuntimeWarning)
        tasks = task_metrics(model.config.task_names, model.config.task_types, all_labels, all_logits)
    metrics = {"tasks": tasks, "undefined": _undefined(tasks),
               **_run_record(args, s, cfg, steps, shard_rows(train_parts, s.world_size), len(all_labels), losses,
                             seconds, gathered),
               "out": str(out)}
    save_checkpoint(out / "model.ckpt", model, encoder,  # an undefined metric as null, as in metrics.json
                    extra={"metrics": _nan_to_null(metrics["tasks"]), "world_size": s.world_size})
    if args.save_predictions:
        np.savez(out / "predictions.npz", logits=all_logits, labels=all_labels)
    _write_json(out / "metrics.json", metrics)  # last: the run finished
    return metrics


def _undefined(tasks: dict) -> list[str]:
    """``"task metric"`` for every metric that is undefined (NaN), e.g. AUC on a split with one class."""
    return [f"{t} {k}" for t, m in tasks.items() for k, v in m.items() if v != v]


def _train_config(args: argparse.Namespace, s: Setup) -> tuple[TrainConfig, int]:
    """The training settings, and each process's share of the global batch (which must divide evenly)."""
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                      seed=args.seed, device=args.device, progress=False)
    if cfg.batch_size % s.world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} is the global batch: it must divide evenly among "
                         f"{s.world_size} processes")
    return cfg, cfg.batch_size // s.world_size


def _fresh_out(out: Path, s: Setup) -> Path:
    """The output folder, made, with every file of :data:`OUTPUTS` an earlier run left removed."""
    if s.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name in OUTPUTS:  # an old result must not pass for this run's
            (out / name).unlink(missing_ok=True)
    return out


def _fit_encoder(index, train_parts, args: argparse.Namespace, s: Setup) -> FeatureEncoder:
    """Each process counts its share of the training chunks; the merged counts make the same
    encoder everywhere, the one a single process would fit."""
    template = FeatureEncoder(SPARSE_FEATURES, DENSE_FEATURES, emb_dim=args.emb_dim, min_count=args.min_count)
    stats = all_gather(collect_stats(index, shard(train_parts, s.rank, s.world_size), template), s)
    merged = EncoderStats.empty(template.sparse, template.dense)
    for part in stats:
        merged.merge(part)
    return merged.encoder(template)


def _train_stream(index, train_parts, encoder: FeatureEncoder, cfg: TrainConfig, local_batch: int,
                  buffer_rows: int, s: Setup) -> tuple[ByteRecStream, int]:
    """This process's shuffled batches of its share of the rows (:func:`shard`), and the steps every
    process takes per epoch: enough for the largest share, so that every row trains every epoch
    (the last batch partial; a process whose rows end first pads, :func:`train_epochs`)."""
    rows = shard_rows(train_parts, s.world_size)
    if min(rows) == 0:
        raise ValueError(f"{index.path}: its {sum(rows)} training row(s) cannot give each of the {s.world_size} "
                         "processes a row; use fewer processes or more rows")
    steps = _steps(rows, local_batch)
    stream = ByteRecStream(index, shard(train_parts, s.rank, s.world_size), encoder, batch_size=local_batch,
                           buffer_rows=buffer_rows, shuffle=True, seed=cfg.seed + s.rank, batches=steps)
    return stream, steps


def _steps(rows: Sequence[int], local_batch: int) -> int:
    """Steps per epoch that use every row: the batches of the largest share, the last one partial."""
    return max(-(-n // local_batch) for n in rows)


def _train(net, optimizer, stream: ByteRecStream, epochs: int, task_types: Sequence[str], steps: int,
           s: Setup) -> tuple[list[float], float]:
    """The epochs' mean losses (this process's batches) and the training seconds, timed between
    barriers so that the clock covers every process's training."""
    if s.distributed:
        dist.barrier()
    start = time.perf_counter()
    losses = train_epochs(net, optimizer, stream, epochs, task_types, s.device, steps, s)
    if s.distributed:
        dist.barrier()
    return losses, time.perf_counter() - start


def _run_record(args: argparse.Namespace, s: Setup, cfg: TrainConfig, steps: int, shares: list[int],
                test_rows: int, losses: list[float], seconds: float, gathered: list) -> dict:
    """What ``metrics.json`` says about the run besides the metrics: where, what, how fast, how much memory."""
    return {
        "world_size": s.world_size,
        "device": str(s.device) if s.device.type == "cpu" else torch.cuda.get_device_name(s.device),
        "model": args.model,
        "missing_labels": args.missing_labels,
        "global_batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "steps_per_epoch": steps,
        "train_rows": sum(shares),
        "train_rows_per_process": shares,
        "train_rows_used_per_epoch": sum(shares),
        "test_rows": int(test_rows),
        "train_seconds": seconds,
        "samples_per_second": sum(shares) * cfg.epochs / seconds,
        "epoch_train_loss_rank0": losses,
        "peak_rss_mib_per_process": [g[3] for g in gathered],
        "peak_rss_mib_after_training_per_process": [g[2] for g in gathered],
        "threads_per_process": args.threads,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m torch.distributed.run --nproc_per_node N -m mmoe_annotated.scale.distributed",
                                description="Train a multi-task model on a ByteRec file with DistributedDataParallel, "
                                            "streaming the file in chunks.")
    p.add_argument("--data", required=True, help="ByteRec file (12 tab-separated columns, no header)")
    p.add_argument("--out", required=True, help="folder for metrics.json and model.ckpt")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256, help="global batch, split evenly among the processes")
    p.add_argument("--model", choices=sorted(MODELS), default="mmoe")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adagrad")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=1024)
    p.add_argument("--emb-dim", type=int, default=4)
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--train-fraction", type=float, default=0.8)
    p.add_argument("--buffer-rows", type=int, default=65_536, help="rows shuffled together")
    p.add_argument("--chunk-bytes", type=int, default=CHUNK_BYTES)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--save-predictions", action="store_true", help="also write the gathered test predictions")
    p.add_argument("--missing-labels", action="store_true",
                   help="read an empty label field as a missing label (NaN, masked by the loss; metrics on "
                        "each task's labelled rows) instead of refusing it")
    args = p.parse_args(argv)
    if not Path(args.data).exists() and not Path(args.data).is_symlink():
        p.error(f"--data {args.data}: no such file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    metrics = run(parse_args(argv))
    if metrics is not None:
        tasks = ", ".join(f"{t} " + " ".join(f"{'AUC' if k == 'auc' else k} {_value(v)}" for k, v in m.items())
                          for t, m in metrics["tasks"].items())
        print(f"world_size {metrics['world_size']}: {metrics['samples_per_second']:,.0f} samples/s; {tasks}; "
              f"wrote metrics.json and model.ckpt in {metrics['out']}")
        for name in metrics["undefined"]:
            print(f"undefined: {name} (the test split holds one class of the task); recorded as null")
    return 0


def _value(v) -> str:
    """A metric for the summary line: ``undefined`` where it is (NaN or missing)."""
    if isinstance(v, int):  # "labelled": the rows a task was scored on
        return str(v)
    return "undefined" if v is None or v != v else f"{v:.4f}"


if __name__ == "__main__":
    code = main()
    # torchrun judges each process by its exit code. Skip the interpreter's teardown once the
    # process group is gone and the results are written: with some library builds a C++ thread
    # destructor there aborted a finished process ("terminate called without an active
    # exception"), failing a job whose results were complete. An error still raises above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
