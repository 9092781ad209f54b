"""One implementation at one configuration, timed in this process: what each benchmark worker runs.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``); the benchmark that
starts the workers and interleaves them is :mod:`mmoe_annotated.bench.run`.

* ``"taught"``: the package's default :func:`~mmoe_annotated.train.fit` and
  :func:`~mmoe_annotated.train.inference.predict`, the code the chapters show;
* ``"fast"``: the opt-in :mod:`mmoe_annotated.fast` wing;
* ``"deepctr"``: DeepCTR-Torch 0.3.0's ``MMOE`` through its own ``fit`` and ``predict``.

Shape letters: ``M`` rows, ``T`` tasks.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .. import fast
from ..data.schema import TASKS
from ..features.inputs import DenseFeature, EncodedFeatures, SparseFeature
from ..model import build_model
from ..model.config import ModelConfig
from ..train.inference import predict
from ..train.loop import TrainConfig, fit
from .data import auc_per_task, load_data
from .machine import peak_rss_mb, sync, train_gflops
from .spec import DEEPCTR_SETUP, BenchSpec, ours_setup

__all__ = ["RUNNERS", "run_one", "spawn", "worker"]


class _Ours:
    """The package's model through its public fit / predict: the taught path (``mm.fit``,
    ``mm.predict``) or the fast wing (``mm.fast.fit``, ``mm.fast.predict``)."""

    def __init__(self, meta, ids, dense, labels, emb_dim: int, batch_size: int, device: str,
                 block_rows: int | None = None, impl: str = "fast", model: str = "mmoe"):
        feats = ([SparseFeature(n, v, emb_dim) for n, v in zip(meta["sparse"], meta["vocab_sizes"])]
                 + [DenseFeature(n, 1) for n in meta["dense"]])
        self.kind = model
        self.config = ModelConfig(tuple(feats), task_names=tuple(TASKS), sparse_embeddings=True)
        self.train_cfg = TrainConfig(epochs=1, batch_size=batch_size, optimizer="adagrad", embedding_l2=1e-5,
                                     embedding_l2_mode="rows", progress=False, device=device)
        self.fit_fn, self.predict_fn = (fit, predict) if impl == "taught" else (fast.fit, fast.predict)
        self.fit_kwargs = {"block_rows": block_rows} if impl == "fast" else {}
        n = meta["train_rows"]
        ids, dense, labels = torch.from_numpy(ids), torch.from_numpy(dense), torch.from_numpy(labels)
        self.all = EncodedFeatures(ids, dense)
        self.train = (EncodedFeatures(ids[:n], dense[:n]), labels[:n])
        self.batch_size, self.device = batch_size, device

    def subset(self, rows: int):
        x, y = self.train
        return (x.index(slice(0, rows)), y[:rows])

    def fit(self, train=None):
        self.model = build_model(self.kind, self.config)
        self.fit_fn(self.model, train or self.train, self.train_cfg, **self.fit_kwargs)

    def predict(self, rows: int | None = None) -> np.ndarray:
        x = self.all if rows is None else self.all.index(slice(0, rows))
        return self.predict_fn(self.model, x, batch_size=self.batch_size, device=self.device)


class _DeepCTR:
    """DeepCTR-Torch 0.3.0's MMOE through its own fit / predict."""

    def __init__(self, meta, ids, dense, labels, emb_dim: int, batch_size: int, device: str,
                 block_rows: int | None = None, impl: str = "deepctr", model: str = "mmoe"):  # MMoE only
        importlib.import_module("deepctr_torch")  # starts its PyPI version check in a thread
        from deepctr_torch.inputs import DenseFeat, SparseFeat
        # Let the version-check thread finish so that it cannot run during the timings.
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join(timeout=30)
        self.columns = ([SparseFeat(n, v, embedding_dim=emb_dim) for n, v in zip(meta["sparse"], meta["vocab_sizes"])]
                        + [DenseFeat(n, 1) for n in meta["dense"]])
        n = meta["train_rows"]
        self.inputs = {name: ids[:, i] for i, name in enumerate(meta["sparse"])}
        self.inputs.update({name: dense[:, i] for i, name in enumerate(meta["dense"])})
        self.train = ({k: v[:n] for k, v in self.inputs.items()}, labels[:n])
        self.tasks = meta["tasks"]
        self.batch_size = batch_size
        self.device = "cuda:0" if device == "cuda" else "cpu"

    def subset(self, rows: int):
        x, y = self.train
        return ({k: v[:rows] for k, v in x.items()}, y[:rows])

    def fit(self, train=None):
        from deepctr_torch.models import MMOE
        x, y = train or self.train
        self.model = MMOE(self.columns, task_types=["binary"] * len(self.tasks), task_names=self.tasks,
                          device=self.device)
        self.model.compile("adagrad", loss=["binary_crossentropy"] * len(self.tasks))
        with contextlib.redirect_stdout(io.StringIO()):  # fit prints the device and sizes
            self.model.fit(x, y, batch_size=self.batch_size, epochs=1, verbose=0)

    def predict(self, rows: int | None = None) -> np.ndarray:
        x = self.inputs if rows is None else {k: v[:rows] for k, v in self.inputs.items()}
        return self.model.predict(x, batch_size=self.batch_size)


RUNNERS = {"taught": _Ours, "fast": _Ours, "deepctr": _DeepCTR}


def run_one(impl: str, data_path, batch_size: int, emb_dim: int, device: str = "cpu", repeats: int = 3,
            threads: int = 2, block_rows: int | None = None, model: str = "mmoe") -> dict:
    """Time one implementation (and, for the taught path, one model) at one batch size and
    embedding dim, in this process.

    One untimed warm-up (train on the first tenth of the training rows, predict as many),
    then ``repeats`` runs, each from a fresh model: one epoch of training, then prediction
    of all rows. Returns one JSON-safe record (see :data:`SCHEMA_KEYS`)."""
    torch.set_num_threads(int(threads))
    meta, ids, dense, labels = load_data(data_path)
    runner = RUNNERS[impl](meta, ids, dense, labels, int(emb_dim), int(batch_size), device, block_rows, impl, model)
    n_train, n_all = meta["train_rows"], len(labels)
    warm = max(min(n_train, 4 * int(batch_size)), n_train // 10)
    runner.fit(runner.subset(warm))
    runner.predict(warm)
    train_s, predict_s, aucs = [], [], []
    for _ in range(int(repeats)):
        sync(device)
        start = time.perf_counter()
        runner.fit()
        sync(device)
        train_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        preds = runner.predict()
        sync(device)
        predict_s.append(time.perf_counter() - start)
        aucs.append(auc_per_task(labels[n_train:], np.asarray(preds)[n_train:], meta["tasks"]))
    train_rate = n_train / statistics.median(train_s)
    auc = aucs[train_s.index(sorted(train_s)[len(train_s) // 2])]  # the median-time run's AUC
    means = [np.mean(list(a.values())) for a in aucs]
    record = {
        "impl": impl, "model": model, "batch_size": int(batch_size), "emb_dim": int(emb_dim), "device": device,
        "threads": int(threads), "train_rows": n_train, "predict_rows": n_all,
        "train_samples_per_s": train_rate,
        "predict_samples_per_s": n_all / statistics.median(predict_s),
        "train_seconds": train_s, "predict_seconds": predict_s,
        "peak_rss_mb": peak_rss_mb(),
        "auc": float(np.mean(list(auc.values()))), "auc_per_task": auc,
        "auc_spread": float(max(means) - min(means)),
        "train_gflops": train_gflops(meta, int(emb_dim), train_rate) if model == "mmoe" else None,
        "setup": DEEPCTR_SETUP if impl == "deepctr" else ours_setup(impl, block_rows),
    }
    if device == "cuda":
        record["gpu"] = torch.cuda.get_device_name()
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def worker(args: dict) -> None:
    """Entry point of a worker process (``python -m mmoe_annotated.bench --worker JSON``)."""
    record = run_one(args["impl"], args["data"], args["batch_size"], args["emb_dim"], args["device"],
                     args["repeats"], args["threads"], args.get("block_rows"), args.get("model", "mmoe"))
    Path(args["out"]).write_text(json.dumps(record))


def spawn(impl: str, data: Path, out: Path, batch_size: int, emb_dim: int, spec: BenchSpec,
           model: str = "mmoe") -> dict:
    """One worker process: a warm-up and one timed run (the caller interleaves ``spec.repeats`` of them)."""
    args = {"impl": impl, "model": model, "data": str(data), "out": str(out), "batch_size": batch_size,
            "emb_dim": emb_dim,
            "device": spec.device, "repeats": 1, "threads": spec.threads, "block_rows": spec.block_rows}
    env = dict(os.environ, OMP_NUM_THREADS=str(spec.threads), MKL_NUM_THREADS=str(spec.threads))
    proc = subprocess.run([sys.executable, "-m", "mmoe_annotated.bench", "--worker", json.dumps(args)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"benchmark worker {impl} {model} batch={batch_size} dim={emb_dim} failed "
                           f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())
