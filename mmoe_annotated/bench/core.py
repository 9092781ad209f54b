"""The side-by-side benchmark: the taught path, the fast wing and DeepCTR-Torch 0.3.0's ``MMOE``.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``).

How it is fair:

* one dataset (``make_byterec(rows, sizes=ByteRecSizes.like_real())``), split 80/20 by
  row order and encoded **once** by the parent process with a :class:`FeatureEncoder` fit
  on the training rows; every worker reads the same integer ids and dense values;
* the same architecture (DeepCTR-Torch's ``MMOE`` defaults: 3 experts of (256, 128), gates
  of (64,), towers of (64,)), optimizer (Adagrad, lr 0.01) and batch size;
* DeepCTR-Torch runs exactly its own ``fit(..., epochs=1, verbose=0)`` and its own
  ``predict(batch_size=...)``; ``"taught"`` runs the package's default
  :func:`~mmoe_annotated.train.fit` and :func:`~mmoe_annotated.inference.predict` (the code the
  chapters show), ``"fast"`` the opt-in :mod:`mmoe_annotated.fast` wing, both configured as a
  user who wants speed would (``TAUGHT_SETUP``, ``FAST_SETUP``);
* the taught path also trains OMoE and Shared-Bottom, so that a cost hidden in plain code
  (OMoE's one gate serving every task, say) shows up beside MMoE's;
* each timed run (one epoch from a fresh model, then a prediction of every row) is its own
  process (so that peak RSS belongs to one implementation), after one untimed warm-up on the
  first tenth of the training rows, with the same thread count; the ``repeats`` runs of the
  implementations alternate in ABBA order, so that a machine that drifts faster or slower
  for minutes at a time hits both alike; the median time is reported, and the largest peak RSS;
* quality is reported beside speed: the test AUC after the one epoch, averaged over tasks.

Shape letters: ``B`` batch, ``F`` sparse fields, ``K`` embedding dim, ``N`` dense width,
``I`` input width, ``T`` tasks.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from .. import fast
from ..data.schema import DENSE_FEATURES, SPARSE_FEATURES, TASKS
from ..data.byterec import split_by_row
from ..data.example import ByteRecSizes, make_byterec
from ..features.encoders import NUM_RESERVED
from ..features.encoder import FeatureEncoder
from ..features.inputs import DenseFeature, EncodedFeatures, SparseFeature
from ..model.config import ModelConfig
from ..model import build_model
from ..train.inference import predict
from ..train.loop import TrainConfig, fit

__all__ = ["SCHEMA_KEYS", "TARGETS", "TARGETS_CUDA", "TARGETS_TAUGHT", "OMOE_WITHIN", "TABLES", "IMPLS", "MODELS",
           "TAUGHT_SETUP", "FAST_SETUP", "ours_setup", "BenchSpec", "catalog_sizes", "prepare_data", "run_one",
           "run_benchmark", "merge_runs", "matmul_gflops", "flops_per_sample", "format_table", "targets_report",
           "peak_rss_mb"]

#: Keys every record of the JSON output has.
SCHEMA_KEYS = ("impl", "model", "batch_size", "emb_dim", "device", "train_rows", "predict_rows", "train_samples_per_s",
               "predict_samples_per_s", "train_seconds", "predict_seconds", "peak_rss_mb", "auc", "auc_per_task",
               "train_gflops")

#: The fast wing's targets on a CPU: (what, batch size or None for all, emb dim or None for all,
#: minimum ratio fast / DeepCTR-Torch). Peak RSS no higher and AUC within 0.01 are judged too.
TARGETS = (
    ("train", 256, 4, 2.5),
    ("train", 256, 16, 3.5),
    ("train", 4096, None, 1.5),
    ("predict", None, None, 2.5),
)

#: The fast wing's targets on a CUDA GPU, same form as :data:`TARGETS`.
TARGETS_CUDA = (
    ("train", 256, None, 2.5),
    ("train", 4096, None, 10.0),
    ("predict", None, None, 15.0),
)

#: The taught path's targets, CPU or GPU: it must beat DeepCTR-Torch everywhere by at least this
#: much, in training and in prediction (same form as :data:`TARGETS`).
TARGETS_TAUGHT = (
    ("train", None, None, 1.2),
    ("predict", None, None, 1.2),
)

#: On the taught path OMoE trains within this factor of MMoE's time (its one gate is no hidden cost).
OMOE_WITHIN = 1.10

_CONFIG = "sparse_embeddings=True; TrainConfig(optimizer='adagrad', embedding_l2=1e-5, embedding_l2_mode='rows', epochs=1)"
#: How the taught path is configured: what a user who wants speed would choose, default code.
TAUGHT_SETUP = f"build_model(kind, {_CONFIG}); mm.fit; mm.predict"
#: How the fast wing is configured: the same model and config, the wing's functions.
FAST_SETUP = f"MMoE({_CONFIG}); mm.fast.fit; mm.fast.predict"


def ours_setup(impl: str = "fast", block_rows: int | None = None) -> str:
    """:data:`TAUGHT_SETUP` or :data:`FAST_SETUP`, with ``block_rows`` when a fast run sets it."""
    if impl == "taught":
        return TAUGHT_SETUP
    return FAST_SETUP if block_rows is None else FAST_SETUP.replace("mm.fast.fit", f"mm.fast.fit(block_rows={block_rows})")


DEEPCTR_SETUP = "MMOE(defaults, l2_reg_embedding=1e-5); compile('adagrad', ['binary_crossentropy'] * 2); fit(epochs=1)"

#: The implementations: the package's default (taught) code, its fast wing, DeepCTR-Torch 0.3.0.
IMPLS = ("taught", "fast", "deepctr")

#: The models the taught path trains (the fast wing and DeepCTR-Torch run MMoE).
MODELS = ("mmoe", "omoe", "shared_bottom")

#: How the embedding tables are sized (``--tables``; see :func:`prepare_data`).
TABLES = ("catalog", "fitted")


@dataclass(frozen=True)
class BenchSpec:
    """What to run. ``rows`` is the whole generated set; 80 % trains, and prediction covers all rows."""

    rows: int = 200_000
    batch_sizes: tuple[int, ...] = (256, 4096)
    emb_dims: tuple[int, ...] = (4, 16)
    impls: tuple[str, ...] = IMPLS
    #: The taught path's models; MMoE always runs, OMoE and Shared-Bottom where listed.
    models: tuple[str, ...] = MODELS
    repeats: int = 3
    threads: int = 2
    device: str = "cpu"
    seed: int = 0
    tables: str = "catalog"
    #: The fast wing only: ``mm.fast.fit(block_rows=...)`` (None: its default, blocks of
    #: ``CPU_BLOCK_ROWS`` on a CPU). ``--block-rows 4096`` shows what one pass per batch costs.
    block_rows: int | None = None

    def __post_init__(self):
        for name in ("batch_sizes", "emb_dims", "impls", "models"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if int(self.rows) < 100:
            raise ValueError(f"rows must be >= 100, got {self.rows}")
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive ints, got {self.batch_sizes}")
        if not self.emb_dims or any(int(k) < 1 for k in self.emb_dims):
            raise ValueError(f"emb_dims must be positive ints, got {self.emb_dims}")
        unknown = set(self.impls) - set(IMPLS)
        if unknown or not self.impls:
            raise ValueError(f"impls must be a non-empty subset of {IMPLS}, got {self.impls}")
        if set(self.models) - set(MODELS) or "mmoe" not in self.models:
            raise ValueError(f"models must be a subset of {MODELS} that holds 'mmoe', got {self.models}")
        if int(self.repeats) < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.tables not in TABLES:
            raise ValueError(f"tables must be one of {TABLES}, got {self.tables!r}")
        if self.block_rows is not None and int(self.block_rows) < 1:
            raise ValueError(f"block_rows must be >= 1 (or None), got {self.block_rows}")


# ---------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------

def check_device(device: str) -> None:
    """A plain error when CUDA is asked for and absent (instead of a failure deep inside a worker)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but CUDA is not available here "
                         "(torch.cuda.is_available() is False); run with --device cpu")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: the peak of this process's own memory
    since it started. ``getrusage``'s ``ru_maxrss`` is not: a process started by ``subprocess``
    shares its parent's memory until it runs the new program, and Linux keeps the larger of the
    two peaks, so every worker of the benchmark would report at least the parent's peak (the parent
    holds the generated DataFrame, several hundred MiB). Elsewhere ``ru_maxrss`` is the fallback
    (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def matmul_gflops(threads: int = 2, n: int = 2048, device: str = "cpu", repeats: int = 5) -> float:
    """This machine's matrix-multiply throughput: the best of ``repeats`` ``torch.mm`` of two
    ``n x n`` float32 matrices, in GFLOP/s (``2 n^3`` FLOPs each)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        for _ in range(2):  # warm-up: thread pool, allocator, cuBLAS handles
            a @ b
        _sync(device)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            _sync(device)
            best = min(best, time.perf_counter() - start)
        return 2 * n**3 / best / 1e9
    finally:
        torch.set_num_threads(previous)


def flops_per_sample(input_width: int, num_experts: int = 3, expert_hidden=(256, 128), gate_hidden=(64,),
                     tower_hidden=(64,), num_tasks: int = 2) -> int:
    """Multiply-add FLOPs (2 per multiply-add) of one row's **forward** pass through the
    matrix multiplies of an MMoE (experts, gates, mixing, towers). Training costs about
    three times this (the backward pass computes two products per forward product)."""
    def mlp(width: int, units) -> tuple[int, int]:
        macs = 0
        for h in units:
            macs += width * h
            width = h
        return macs, width

    expert_macs, D = mlp(input_width, expert_hidden)
    gate_macs, g = mlp(input_width, gate_hidden)
    tower_macs, t = mlp(D, tower_hidden)
    macs = (num_experts * expert_macs + num_tasks * (gate_macs + g * num_experts)  # experts, gates
            + num_tasks * num_experts * D  # mixing
            + num_tasks * (tower_macs + t))  # towers and their output layer
    return 2 * macs


# ---------------------------------------------------------------------------
# Data: generated and encoded once, by the parent
# ---------------------------------------------------------------------------

def catalog_sizes() -> dict[str, int]:
    """Each sparse column's id space in the generated data, by column name:
    :meth:`ByteRecSizes.like_real`, about 20k users, 100k items, 50k authors, 20k music ids,
    400 cities, 2k devices and 5 channels, the vocabularies of the real data."""
    s = ByteRecSizes.like_real()
    return {"uid": s.users, "user_city": s.cities, "item_id": s.items, "author_id": s.authors,
            "item_city": s.cities, "channel": s.channels, "music_id": s.music, "device": s.devices}


def prepare_data(rows: int, path: str | os.PathLike, seed: int = 0, tables: str = "catalog") -> dict:
    """Generate ``rows`` ByteRec-format rows with realistic vocabularies, split 80/20 by row
    order, fit the encoder on the training rows, and save ids, dense values and labels of
    **all** rows (train first) to ``path`` (``.npz``). Returns the metadata.

    ``tables`` sizes the embedding tables both implementations build:

    * ``"catalog"`` (default): every id the data can hold gets a row (:func:`catalog_sizes`,
      plus the reserved ids), as a production table is provisioned for the whole catalog. 200,000
      generated rows show only part of it (the training rows hold about 48k of the 100k items,
      16k of the 50k authors, 4k of the 20k music ids); the ids are the same in both modes.
    * ``"fitted"``: only the ids the training rows show (what ``FeatureEncoder`` alone gives).

    The choice matters for speed, not for the ids or the model: DeepCTR-Torch's L2 on the
    embeddings, its dense embedding gradient and its Adagrad step cover every row of every
    table each step, while ours touch only the rows a batch looks up."""
    if tables not in TABLES:
        raise ValueError(f"tables must be one of {TABLES}, got {tables!r}")
    frame = make_byterec(int(rows), seed=seed, sizes=ByteRecSizes.like_real())
    train, _ = split_by_row(frame, 0.8)
    encoder = FeatureEncoder(SPARSE_FEATURES, DENSE_FEATURES).fit(train)
    encoded = encoder.transform(frame)
    labels = frame[list(TASKS)].to_numpy(dtype=np.float32)  # (M, T)
    fitted = [f.vocab_size for f in encoder.features if hasattr(f, "vocab_size")]
    if tables == "catalog":
        catalog = catalog_sizes()
        sizes = [max(v, NUM_RESERVED + catalog[name]) for name, v in zip(SPARSE_FEATURES, fitted)]
    else:
        sizes = fitted
    meta = {"rows": int(rows), "train_rows": len(train), "test_rows": len(frame) - len(train), "seed": seed,
            "sparse": list(SPARSE_FEATURES), "dense": list(DENSE_FEATURES), "tasks": list(TASKS),
            "tables": tables, "vocab_sizes": sizes, "fitted_vocab_sizes": fitted,
            "positive_rate": dict(zip(TASKS, labels.mean(0).round(4).tolist()))}
    np.savez(path, ids=encoded.ids.numpy(), dense=encoded.dense.numpy(), labels=labels,
             meta=np.array(json.dumps(meta)))
    return meta


def _load(path) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path) as z:
        return json.loads(str(z["meta"])), z["ids"], z["dense"], z["labels"]


def _auc(labels: np.ndarray, preds: np.ndarray, tasks) -> dict[str, float]:
    return {t: float(roc_auc_score(labels[:, i], preds[:, i])) for i, t in enumerate(tasks)}


# ---------------------------------------------------------------------------
# One implementation x batch size x embedding dim, in the current process
# ---------------------------------------------------------------------------

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
        import deepctr_torch  # noqa: F401  (starts its PyPI version check in a thread)
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


def _train_gflops(meta: dict, emb_dim: int, samples_per_s: float) -> float:
    """Training GFLOP/s: three times the forward matrix multiplies of one row, times the rate."""
    width = len(meta["sparse"]) * emb_dim + len(meta["dense"])  # I = F*K + N
    return 3 * flops_per_sample(width, num_tasks=len(meta["tasks"])) * samples_per_s / 1e9


def run_one(impl: str, data_path, batch_size: int, emb_dim: int, device: str = "cpu", repeats: int = 3,
            threads: int = 2, block_rows: int | None = None, model: str = "mmoe") -> dict:
    """Time one implementation (and, for the taught path, one model) at one batch size and
    embedding dim, in this process.

    One untimed warm-up (train on the first tenth of the training rows, predict as many),
    then ``repeats`` runs, each from a fresh model: one epoch of training, then prediction
    of all rows. Returns one JSON-safe record (see :data:`SCHEMA_KEYS`)."""
    torch.set_num_threads(int(threads))
    meta, ids, dense, labels = _load(data_path)
    runner = RUNNERS[impl](meta, ids, dense, labels, int(emb_dim), int(batch_size), device, block_rows, impl, model)
    n_train, n_all = meta["train_rows"], len(labels)
    warm = max(min(n_train, 4 * int(batch_size)), n_train // 10)
    runner.fit(runner.subset(warm))
    runner.predict(warm)
    train_s, predict_s, aucs = [], [], []
    for _ in range(int(repeats)):
        _sync(device)
        start = time.perf_counter()
        runner.fit()
        _sync(device)
        train_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        preds = runner.predict()
        _sync(device)
        predict_s.append(time.perf_counter() - start)
        aucs.append(_auc(labels[n_train:], np.asarray(preds)[n_train:], meta["tasks"]))
    train_rate = n_train / statistics.median(train_s)
    auc = aucs[train_s.index(sorted(train_s)[len(train_s) // 2])]  # the median-time run's AUC
    record = {
        "impl": impl, "model": model, "batch_size": int(batch_size), "emb_dim": int(emb_dim), "device": device,
        "threads": int(threads), "train_rows": n_train, "predict_rows": n_all,
        "train_samples_per_s": train_rate,
        "predict_samples_per_s": n_all / statistics.median(predict_s),
        "train_seconds": train_s, "predict_seconds": predict_s,
        "peak_rss_mb": peak_rss_mb(),
        "auc": float(np.mean(list(auc.values()))), "auc_per_task": auc,
        "auc_spread": float(max(np.mean(list(a.values())) for a in aucs) - min(np.mean(list(a.values())) for a in aucs)),
        "train_gflops": _train_gflops(meta, int(emb_dim), train_rate) if model == "mmoe" else None,
        "setup": DEEPCTR_SETUP if impl == "deepctr" else ours_setup(impl, block_rows),
    }
    if device == "cuda":
        record["gpu"] = torch.cuda.get_device_name()
        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return record


def _worker(args: dict) -> None:
    """Entry point of a worker process (``python -m mmoe_annotated.bench --worker JSON``)."""
    record = run_one(args["impl"], args["data"], args["batch_size"], args["emb_dim"], args["device"],
                     args["repeats"], args["threads"], args.get("block_rows"), args.get("model", "mmoe"))
    Path(args["out"]).write_text(json.dumps(record))


def _spawn(impl: str, data: Path, out: Path, batch_size: int, emb_dim: int, spec: BenchSpec,
           model: str = "mmoe") -> dict:
    """One worker process: a warm-up and one timed run (the caller interleaves ``spec.repeats`` of them)."""
    args = {"impl": impl, "model": model, "data": str(data), "out": str(out), "batch_size": batch_size, "emb_dim": emb_dim,
            "device": spec.device, "repeats": 1, "threads": spec.threads, "block_rows": spec.block_rows}
    env = dict(os.environ, OMP_NUM_THREADS=str(spec.threads), MKL_NUM_THREADS=str(spec.threads))
    proc = subprocess.run([sys.executable, "-m", "mmoe_annotated.bench", "--worker", json.dumps(args)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"benchmark worker {impl} {model} batch={batch_size} dim={emb_dim} failed "
                           f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def merge_runs(runs: list[dict], meta: dict) -> dict:
    """One record from several worker records of one implementation and configuration (one timed
    run each): the median train and predict times, the largest peak RSS, the median run's AUC."""
    first = runs[0]
    train_s = [t for r in runs for t in r["train_seconds"]]
    predict_s = [t for r in runs for t in r["predict_seconds"]]
    median_train = statistics.median(train_s)
    median_run = min(runs, key=lambda r: abs(statistics.median(r["train_seconds"]) - median_train))
    rate = first["train_rows"] / median_train
    record = dict(first)
    record.update({
        "train_samples_per_s": rate, "predict_samples_per_s": first["predict_rows"] / statistics.median(predict_s),
        "train_seconds": train_s, "predict_seconds": predict_s,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs), "peak_rss_mb_runs": [r["peak_rss_mb"] for r in runs],
        "auc": median_run["auc"], "auc_per_task": median_run["auc_per_task"],
        "auc_spread": max(r["auc"] for r in runs) - min(r["auc"] for r in runs),
        "train_gflops": _train_gflops(meta, first["emb_dim"], rate) if first.get("model", "mmoe") == "mmoe" else None,
        "processes": len(runs),
    })
    if "peak_gpu_mb" in first:
        record["peak_gpu_mb"] = max(r["peak_gpu_mb"] for r in runs)
    return record


def _deepctr_available() -> str | None:
    try:
        from importlib.metadata import version
        return version("deepctr-torch")
    except Exception:
        return None


def machine_info(device: str = "cpu") -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "deepctr_torch": _deepctr_available()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _jobs(impls, models) -> list[tuple[str, str]]:
    """(implementation, model) pairs to time: MMoE for each implementation, and the taught path's
    other models after it."""
    jobs = [(impl, "mmoe") for impl in impls]
    if "taught" in impls:
        jobs += [("taught", m) for m in models if m != "mmoe"]
    return jobs


def run_benchmark(spec: BenchSpec | None = None, json_path: str | os.PathLike | None = None, log=print,
                  command: str | None = None) -> dict:
    """Run every configuration of ``spec`` in its own worker process; return (and optionally
    write to ``json_path``) ``{"meta": ..., "records": [...]}``."""
    spec = spec or BenchSpec()
    check_device(spec.device)
    impls = list(spec.impls)
    if "deepctr" in impls and _deepctr_available() is None:
        log("DeepCTR-Torch is not installed (pip install deepctr-torch==0.3.0): timing the package only")
        impls.remove("deepctr")
        if not impls:
            raise SystemExit("nothing to run: DeepCTR-Torch is not installed and --impls names only deepctr")
    load_before = os.getloadavg()
    started = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="mmoe_bench_") as tmp:
        data = Path(tmp) / "data.npz"
        log(f"generating and encoding {spec.rows:,} rows ...")
        meta = prepare_data(spec.rows, data, spec.seed, spec.tables)
        peak = matmul_gflops(spec.threads, device=spec.device)
        log(f"matrix multiply (torch.mm 2048x2048, {spec.threads} threads, {spec.device}): {peak:.0f} GFLOP/s")
        for bs in spec.batch_sizes:
            for dim in spec.emb_dims:
                # Each timed run in its own process, the implementations interleaved in ABBA order,
                # so that a machine that speeds up or slows down for minutes hits both alike.
                runs = {job: [] for job in _jobs(impls, spec.models)}
                for round_ in range(int(spec.repeats)):
                    for impl, model in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
                        out = Path(tmp) / f"{impl}_{model}_{bs}_{dim}_{round_}.json"
                        runs[impl, model].append(_spawn(impl, data, out, bs, dim, spec, model))
                for (impl, model), done in runs.items():
                    rec = merge_runs(done, meta)
                    records.append(rec)
                    log(f"  {impl:7s} {model:13s} batch {bs:5d} dim {dim:3d}: train {rec['train_samples_per_s']:9,.0f}/s  "
                        f"predict {rec['predict_samples_per_s']:11,.0f}/s  RSS {rec['peak_rss_mb']:6.0f} MiB  "
                        f"AUC {rec['auc']:.4f}")
    result = {
        "meta": {
            "command": command or "python -m mmoe_annotated.bench", "date_utc": datetime.now(timezone.utc)
            .strftime("%Y-%m-%d %H:%M UTC"), "spec": asdict(spec), "data": meta, "machine": machine_info(spec.device),
            "matmul_gflops": peak, "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "wall_seconds": time.perf_counter() - started, "taught_setup": TAUGHT_SETUP,
            "fast_setup": ours_setup("fast", spec.block_rows), "deepctr_setup": DEEPCTR_SETUP,
        },
        "records": records,
    }
    result["targets"] = targets_report(result)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1) + "\n")
    return result


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

def _impl(record: dict) -> str:
    """A record's implementation; runs written before the taught path was timed say "ours" for the
    package's fastest code, which is the fast wing's."""
    return "fast" if record["impl"] == "ours" else record["impl"]


def _by_config(result: dict):
    """(batch, dim, {(impl, model): record}) for every configuration that ran."""
    keys = sorted({(r["batch_size"], r["emb_dim"]) for r in result["records"]})
    for bs, dim in keys:
        yield bs, dim, {(_impl(r), r.get("model", "mmoe")): r for r in result["records"]
                        if (r["batch_size"], r["emb_dim"]) == (bs, dim)}


def _ratio_targets(result: dict, impl: str, targets) -> list[dict]:
    out = []
    for what, bs_want, dim_want, need in targets:
        for bs, dim, runs in _by_config(result):
            ours, theirs = runs.get((impl, "mmoe")), runs.get(("deepctr", "mmoe"))
            if ours is None or theirs is None or (bs_want and bs != bs_want) or (dim_want and dim != dim_want):
                continue
            ratio = ours[f"{what}_samples_per_s"] / theirs[f"{what}_samples_per_s"]
            out.append({"impl": impl, "what": what, "batch_size": bs, "emb_dim": dim, "required": need,
                        "ratio": ratio, "met": ratio >= need})
    return out


def targets_report(result: dict) -> list[dict]:
    """The benchmark's targets against what was measured: the fast wing's :data:`TARGETS`
    (:data:`TARGETS_CUDA` on a GPU), peak RSS <= DeepCTR's and |AUC difference| <= 0.01 for every
    configuration; the taught path's :data:`TARGETS_TAUGHT`; and OMoE's training time within
    :data:`OMOE_WITHIN` of MMoE's on the taught path. Only configurations that ran both sides count."""
    on_gpu = result["meta"]["spec"]["device"] == "cuda"
    out = _ratio_targets(result, "fast", TARGETS_CUDA if on_gpu else TARGETS)
    pairs = [(bs, dim, runs[("fast", "mmoe")], runs[("deepctr", "mmoe")]) for bs, dim, runs in _by_config(result)
             if ("fast", "mmoe") in runs and ("deepctr", "mmoe") in runs]
    for bs, dim, ours, theirs in pairs:
        out.append({"impl": "fast", "what": "peak_rss", "batch_size": bs, "emb_dim": dim, "required": "<= DeepCTR's",
                    "ratio": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
                    "met": ours["peak_rss_mb"] <= theirs["peak_rss_mb"]})
    for bs, dim, ours, theirs in pairs:
        diff = ours["auc"] - theirs["auc"]
        out.append({"impl": "fast", "what": "auc", "batch_size": bs, "emb_dim": dim, "required": "|diff| <= 0.01",
                    "ratio": diff, "met": abs(diff) <= 0.01})
    out += _ratio_targets(result, "taught", TARGETS_TAUGHT)
    for bs, dim, runs in _by_config(result):
        mmoe, omoe = runs.get(("taught", "mmoe")), runs.get(("taught", "omoe"))
        if mmoe is not None and omoe is not None:
            ratio = mmoe["train_samples_per_s"] / omoe["train_samples_per_s"]  # OMoE's time / MMoE's
            out.append({"impl": "taught", "what": "omoe_time", "batch_size": bs, "emb_dim": dim,
                        "required": f"<= {OMOE_WITHIN}x MMoE's", "ratio": ratio, "met": ratio <= OMOE_WITHIN})
    return out


def _tables_line(data: dict) -> str:
    rows = sum(data["vocab_sizes"])
    fitted = sum(data.get("fitted_vocab_sizes", data["vocab_sizes"]))
    how = data.get("tables", "fitted")
    if how == "catalog":
        return f"sized for the catalog ({rows:,} rows in all; the training rows show ids for {fitted:,} of them)"
    return f"sized to the ids the training rows show ({rows:,} rows in all)"


def _num(record: dict | None, key: str, fmt: str, width: int) -> str:
    value = None if record is None else record.get(key)
    return (format(value, fmt) if value is not None else "-").rjust(width)


def _ratio(a: dict | None, b: dict | None, key: str) -> str:
    return f"{a[key] / b[key]:6.2f}x" if a and b else f"{'-':>7}"


def format_table(result: dict) -> str:
    """The printed tables: MMoE's samples/s, ratios against DeepCTR-Torch, peak RSS and AUC for the
    taught path, the fast wing and DeepCTR-Torch; then the taught path by model; then the targets."""
    m = result["meta"]
    setups = [("taught", m.get("taught_setup")), ("fast", m.get("fast_setup", m.get("ours_setup"))),
              ("DeepCTR", m.get("deepctr_setup"))]
    lines = [
        f"MMoE, one epoch on {m['data']['train_rows']:,} rows, prediction of {m['data']['rows']:,} rows; "
        f"{m['spec']['threads']} threads on {m['spec']['device']}; median of {m['spec']['repeats']} runs "
        "(one process each, the implementations interleaved)",
        f"embedding tables: {_tables_line(m['data'])}",
        f"machine: {m['machine']['cpu']}{'; GPU ' + m['machine']['gpu'] if 'gpu' in m['machine'] else ''}; "
        f"torch {m['machine']['torch']}, DeepCTR-Torch {m['machine']['deepctr_torch']}; "
        f"{m['date_utc']}; load average before {m['load_average_before'][0]:.2f}",
        *[f"{name + ':':8s} {setup}" for name, setup in setups if setup],
        "",
        f"{'batch':>5} {'dim':>3} | {'train samples/s (ratio to DeepCTR)':^45} | {'predict samples/s (ratio to DeepCTR)':^47} |"
        f" {'peak RSS MiB':^20} | {'test AUC (mean of tasks)':^23}",
        f"{'':>5} {'':>3} | {'taught':>7} {'fast':>7} {'DeepCTR':>7} {'taught':>10} {'fast':>10} |"
        f" {'taught':>8} {'fast':>8} {'DeepCTR':>8} {'taught':>10} {'fast':>9} |"
        f" {'taught':>6} {'fast':>6} {'DCTR':>6} | {'taught':>7} {'fast':>7} {'DCTR':>7}",
    ]
    for bs, dim, runs in _by_config(result):
        t, f, d = runs.get(("taught", "mmoe")), runs.get(("fast", "mmoe")), runs.get(("deepctr", "mmoe"))
        tr, pr = "train_samples_per_s", "predict_samples_per_s"
        lines.append(
            f"{bs:>5} {dim:>3} | {_num(t, tr, ',.0f', 7)} {_num(f, tr, ',.0f', 7)} {_num(d, tr, ',.0f', 7)}"
            f" {_ratio(t, d, tr):>10} {_ratio(f, d, tr):>10} |"
            f" {_num(t, pr, ',.0f', 8)} {_num(f, pr, ',.0f', 8)} {_num(d, pr, ',.0f', 8)}"
            f" {_ratio(t, d, pr):>10} {_ratio(f, d, pr):>9} |"
            f" {_num(t, 'peak_rss_mb', '.0f', 6)} {_num(f, 'peak_rss_mb', '.0f', 6)} {_num(d, 'peak_rss_mb', '.0f', 6)} |"
            f" {_num(t, 'auc', '.4f', 7)} {_num(f, 'auc', '.4f', 7)} {_num(d, 'auc', '.4f', 7)}")
    by_model = [(bs, dim, runs) for bs, dim, runs in _by_config(result)
                if any(impl == "taught" and model != "mmoe" for impl, model in runs)]
    if by_model:
        lines += ["", "the taught path by model: train samples/s (time relative to MMoE's)",
                  f"{'batch':>5} {'dim':>3} | {'MMoE':>8} | {'OMoE':>8} {'':>7} | {'Shared-Bottom':>13} {'':>7}"]
        for bs, dim, runs in by_model:
            base = runs.get(("taught", "mmoe"))
            cells = []
            for model, width in (("omoe", 8), ("shared_bottom", 13)):
                r = runs.get(("taught", model))
                rel = (f"{base['train_samples_per_s'] / r['train_samples_per_s']:6.2f}x" if r and base else f"{'-':>7}")
                cells.append(f"{_num(r, 'train_samples_per_s', ',.0f', width)} {rel}")
            lines.append(f"{bs:>5} {dim:>3} | {_num(base, 'train_samples_per_s', ',.0f', 8)} | {cells[0]} | {cells[1]}")
    lines.append("")
    where = "float32 on the GPU" if m["spec"]["device"] == "cuda" else f"{m['spec']['threads']} threads"
    lines.append(f"matrix-multiply limit of this machine (torch.mm 2048x2048, {where}): {m['matmul_gflops']:.0f} GFLOP/s")
    if m["spec"]["device"] == "cuda":
        peaks = "; ".join(f"batch {bs} dim {dim}: fast {runs[('fast', 'mmoe')]['peak_gpu_mb']:.0f}, "
                          f"DeepCTR {runs[('deepctr', 'mmoe')]['peak_gpu_mb']:.0f}"
                          for bs, dim, runs in _by_config(result)
                          if all("peak_gpu_mb" in runs.get((i, "mmoe"), {}) for i in ("fast", "deepctr")))
        if peaks:
            lines.append(f"peak GPU memory allocated by torch, MiB: {peaks}")
    if result.get("targets"):
        lines.append("targets:")
        for t in result["targets"]:
            shown = (f"{t['ratio']:.2f}x (need >= {t['required']}x)" if t["what"] in ("train", "predict")
                     else f"{t['ratio']:+.4f} (need {t['required']})" if t["what"] == "auc"
                     else f"{t['ratio']:.2f}x (need {t['required']})" if t["what"] == "omoe_time"
                     else f"fast/DeepCTR {t['ratio']:.2f} (need {t['required']})")
            lines.append(f"  {'met    ' if t['met'] else 'NOT MET'} {t.get('impl', 'fast'):6s} {t['what']:9s} "
                         f"batch {t['batch_size']:5d} dim {t['emb_dim']:3d}: {shown}")
    load = m["load_average_before"][0]
    if m["spec"]["device"] == "cpu" and load > 0.5 * m["spec"]["threads"]:
        lines.append(f"note: load average was {load:.2f} before the run, so other work shared the CPU; "
                     "absolute figures are low and noisy, ratios (measured side by side) less so")
    return "\n".join(lines)
