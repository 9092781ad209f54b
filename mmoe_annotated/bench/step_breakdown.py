"""One training step under DistributedDataParallel, taken apart: what a process computes on its
share of the batch, what it sends, and what every process repeats whatever their number.

Explained in the appendix "Scaling out" (``book/appendix_scaling.ipynb``), which reads the shipped
measurement (:data:`RESULTS`) and the speedup it implies (:func:`predicted_ms`, :func:`speedup`).

A step of data-parallel training with ``N`` processes and a global batch of ``B`` rows is

1. **forward and backward** on the process's ``B / N`` rows: ``c(B / N)``, the part that shrinks;
2. the **all-reduce** of the gradient, ``S`` bytes: 4 bytes (float32) per parameter, counted
   exactly from the model (:func:`gradient_bytes`). A ring all-reduce sends and receives about
   ``2 (N - 1) / N * S`` bytes per process in ``2 (N - 1)`` messages, so it takes about
   ``2 (N - 1) * alpha + 2 (N - 1) / N * S / beta`` for a link of bandwidth ``beta`` (bytes/s)
   and latency ``alpha`` (s) per message;
3. the **optimizer step** on every parameter, ``o``: each process updates its whole copy.

So ``T(N) = c(B / N) + o + allreduce(N)`` and the speedup over one process is ``T(1) / T(N)``,
with ``T(1) = c(B) + o`` (one process sends nothing). The measurement times ``c`` at the local
batch of each ``N``, ``o``, and a real all-reduce (gloo, two processes on this machine) of a
tensor of ``S`` bytes and of a small one (for ``alpha``). It ignores that DDP overlaps the
all-reduce of a bucket with the backward pass of the next, so the model is the no-overlap case.

Run (a few minutes on a laptop CPU; one thread per process)::

    python -m mmoe_annotated.bench.step_breakdown --json step_breakdown.json

Each time is the minimum over ``--repeats`` timed runs after a warm-up: other programs on the
machine can only add time, never remove it.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import time
from importlib import resources
from pathlib import Path

import torch

__all__ = ["CONFIGS", "RESULTS", "NETWORK_10GBIT", "model_features", "build", "gradient_bytes",
           "time_compute", "time_optimizer", "time_allreduce", "measure", "predicted_ms", "speedup",
           "load_results", "main"]

#: The shipped measurement the appendix reads.
RESULTS = "results/step_breakdown.json"

#: A 10 Gbit/s network link, in bytes per second: the bandwidth between two ordinary servers.
NETWORK_10GBIT = 10e9 / 8

#: The two models measured: the appendix's, with tables for every ID of the embedded data's
#: default catalog and embeddings of 4 values; and the same MMoE with tables for the catalog of
#: the real data (``ByteRecSizes.like_real()``, about 190,000 IDs) and embeddings of 16 values.
CONFIGS = {
    "embedded catalog, K=4": {"sizes": "default", "emb_dim": 4},
    "real-size catalog, K=16": {"sizes": "like_real", "emb_dim": 16},
}

#: The global batch and the process counts whose local batches are timed.
GLOBAL_BATCH = 1024
PROCESSES = (1, 2, 4, 8)


def _catalog(sizes) -> dict[str, int]:
    return {"uid": sizes.users, "user_city": sizes.cities, "item_id": sizes.items, "author_id": sizes.authors,
            "item_city": sizes.cities, "channel": sizes.channels, "music_id": sizes.music, "device": sizes.devices}


def model_features(sizes: str = "default", emb_dim: int = 4) -> list:
    """The feature specs of a model whose tables hold every ID of a catalog (plus the reserved ids):
    ``sizes`` is ``"default"`` (:class:`ByteRecSizes`) or ``"like_real"``."""
    from ..data.example import ByteRecSizes
    from ..data.schema import DENSE_FEATURES, SPARSE_FEATURES
    from ..features.encoders import NUM_RESERVED
    from ..features.inputs import DenseFeature, SparseFeature

    catalog = _catalog(ByteRecSizes() if sizes == "default" else ByteRecSizes.like_real())
    return ([SparseFeature(name, catalog[name] + NUM_RESERVED, emb_dim) for name in SPARSE_FEATURES]
            + [DenseFeature(name) for name in DENSE_FEATURES])


def build(sizes: str = "default", emb_dim: int = 4, seed: int = 1024):
    """The MMoE of ``ModelConfig``'s defaults (the tutorial's) on those features, with the dense
    embedding gradients DDP all-reduces."""
    from ..model.config import ModelConfig
    from ..model import build_model

    return build_model("mmoe", ModelConfig(model_features(sizes, emb_dim), seed=seed, sparse_embeddings=False))


def gradient_bytes(model) -> int:
    """What one all-reduce carries: every parameter's gradient, 4 bytes per float32 value."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _batch(model, rows: int, seed: int = 0):
    """A batch of random ids within each table, one dense value and 0/1 labels."""
    g = torch.Generator().manual_seed(seed)
    sparse = [f for f in model.config.features if hasattr(f, "vocab_size")]
    ids = torch.stack([torch.randint(0, f.vocab_size, (rows,), generator=g) for f in sparse], dim=1)  # (B, F)
    dense = torch.rand(rows, 1, generator=g)  # (B, N)
    labels = torch.randint(0, 2, (rows, len(model.config.task_names)), generator=g).float()  # (B, T)
    return ids, dense, labels


def _best_ms(fn, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """(minimum, median) milliseconds of ``fn()`` over ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return times[0], times[len(times) // 2]


def time_compute(model, rows: int, repeats: int = 20) -> tuple[float, float]:
    """Forward and backward of the summed task losses on ``rows`` rows: (min, median) ms."""
    from ..train.losses import task_losses

    ids, dense, labels = _batch(model, rows)

    def step():
        model.zero_grad(set_to_none=True)
        task_losses(model(ids, dense).logits, labels, model.config.task_types).sum().backward()

    return _best_ms(step, repeats)


def time_optimizer(model, repeats: int = 20) -> tuple[float, float]:
    """One Adagrad step (the tutorial's optimizer) over every parameter's dense gradient: (min, median) ms."""
    from ..train.losses import task_losses

    ids, dense, labels = _batch(model, 64)
    task_losses(model(ids, dense).logits, labels, model.config.task_types).sum().backward()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.01)
    return _best_ms(optimizer.step, repeats)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _allreduce_worker(rank: int, world_size: int, port: int, sizes: list[int], repeats: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        found = {}
        for numel in sizes:
            x = torch.ones(numel)

            def reduce():
                dist.barrier()
                start = time.perf_counter()
                dist.all_reduce(x)
                return (time.perf_counter() - start) * 1e3

            for _ in range(3):
                reduce()
            times = sorted(reduce() for _ in range(repeats))
            found[numel] = (times[0], times[len(times) // 2])
        if rank == 0:
            Path(out).write_text(json.dumps({str(k): v for k, v in found.items()}))
    finally:
        dist.destroy_process_group()


def time_allreduce(numels: list[int], world_size: int = 2, repeats: int = 20) -> dict[int, tuple[float, float]]:
    """A real all-reduce (gloo, ``world_size`` processes on this machine) of a float32 tensor of each
    size in ``numels``: {numel: (min, median) ms}, timed on process 0 after a barrier."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="mmoe-allreduce-") as tmp:
        out = os.path.join(tmp, "times.json")
        mp.start_processes(_allreduce_worker, args=(world_size, _free_port(), list(numels), repeats, out),
                           nprocs=world_size, join=True, start_method="spawn")
        found = json.loads(Path(out).read_text())
    return {int(k): tuple(v) for k, v in found.items()}


def measure(configs=tuple(CONFIGS), repeats: int = 30, world_size: int = 2) -> dict:
    """Time every part of a step for each config; the all-reduce once per gradient size, plus a
    4-value message whose time is the per-message latency ``alpha``."""
    torch.set_num_threads(1)
    found = {}
    for name in configs:
        spec = CONFIGS[name]
        model = build(spec["sizes"], spec["emb_dim"])
        table = model.inputs.table.weight
        compute = {str(n): time_compute(model, GLOBAL_BATCH // n, repeats) for n in PROCESSES}
        found[name] = {
            "sizes": spec["sizes"], "emb_dim": spec["emb_dim"],
            "table_rows": int(table.shape[0]), "parameters": int(sum(p.numel() for p in model.parameters())),
            "table_parameters": int(table.numel()), "gradient_bytes": gradient_bytes(model),
            "compute_ms": {n: t[0] for n, t in compute.items()},
            "compute_ms_median": {n: t[1] for n, t in compute.items()},
            "optimizer_ms": None, "optimizer_ms_median": None,
        }
        found[name]["optimizer_ms"], found[name]["optimizer_ms_median"] = time_optimizer(model, repeats)
    numels = sorted({4} | {c["gradient_bytes"] // 4 for c in found.values()})
    reduced = time_allreduce(numels, world_size, repeats)
    alpha_ms = reduced[4][0] / (2 * (world_size - 1))  # per message
    for c in found.values():
        t_min, t_median = reduced[c["gradient_bytes"] // 4]
        ring = 2 * (world_size - 1) / world_size * c["gradient_bytes"]
        c["allreduce"] = {"world_size": world_size, "ms": t_min, "ms_median": t_median,
                          "bandwidth_bytes_per_s": ring / max((t_min - 2 * (world_size - 1) * alpha_ms) / 1e3, 1e-9)}
    return {"global_batch": GLOBAL_BATCH, "processes": list(PROCESSES), "repeats": repeats,
            "latency_ms": alpha_ms, "small_allreduce_ms": reduced[4][0], "configs": found}


def predicted_ms(config: dict, n: int, bandwidth: float, latency_ms: float, global_batch: int = GLOBAL_BATCH) -> dict:
    """The model's step time with ``n`` processes, part by part (ms): the measured compute at the
    local batch ``global_batch / n`` and optimizer step, and the ring all-reduce of the gradient over
    a link of ``bandwidth`` bytes/s with ``latency_ms`` per message (nothing for one process)."""
    compute = config["compute_ms"][str(n)] if str(n) in config["compute_ms"] else None
    if compute is None:
        raise KeyError(f"no compute time for {n} processes (local batch {global_batch // n}); measured: "
                       f"{sorted(config['compute_ms'], key=int)}")
    messages = 2 * (n - 1)
    sent = 2 * (n - 1) / n * config["gradient_bytes"]
    allreduce = messages * latency_ms + sent / bandwidth * 1e3 if n > 1 else 0.0
    return {"compute": compute, "optimizer": config["optimizer_ms"], "allreduce": allreduce,
            "step": compute + config["optimizer_ms"] + allreduce}


def speedup(config: dict, n: int, bandwidth: float, latency_ms: float) -> float:
    """Samples per second with ``n`` processes over samples per second with one: ``T(1) / T(n)``."""
    return predicted_ms(config, 1, bandwidth, latency_ms)["step"] / predicted_ms(config, n, bandwidth, latency_ms)["step"]


def load_results() -> dict:
    """The shipped measurement (package data)."""
    return json.loads(resources.files("mmoe_annotated.bench").joinpath(RESULTS).read_text())


def main(argv=None) -> int:
    from ..experiments.arguments import out_file, positive_int

    p = argparse.ArgumentParser(prog="python -m mmoe_annotated.bench.step_breakdown",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=out_file, default=None, help="write the measurement to this JSON file")
    p.add_argument("--repeats", type=positive_int, default=30, help="timed runs of each part; the minimum is kept")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), metavar="NAME",
                   help=f"which models (default: all of {list(CONFIGS)})")
    args = p.parse_args(argv)
    from ..experiments.provenance import provenance

    torch.set_num_threads(1)  # one thread per process, as each of N processes would have
    argv = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python", "-m", "mmoe_annotated.bench.step_breakdown", *map(shlex.quote, argv)])
    measured = measure(args.configs, args.repeats)
    result = {**provenance(command, device="cpu"), **measured}
    for name, c in result["configs"].items():
        parts = ", ".join(f"N={n}: {c['compute_ms'][str(n)]:.2f} ms" for n in result["processes"])
        print(f"{name}: {c['parameters']:,} parameters, {c['gradient_bytes'] / 2**20:.2f} MiB of gradient; "
              f"forward+backward {parts}; optimizer {c['optimizer_ms']:.2f} ms; all-reduce (2 processes) "
              f"{c['allreduce']['ms']:.2f} ms, {c['allreduce']['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
