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
  :func:`~mmoe_annotated.train.fit` and :func:`~mmoe_annotated.train.inference.predict` (the code the
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

import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from ..experiments.arguments import writable_file
from .core import spawn
from .data import prepare_data
from .machine import check_device, deepctr_version, machine_info, matmul_gflops, provenance, train_gflops
from .report import targets_report
from .spec import DEEPCTR_SETUP, TAUGHT_SETUP, BenchSpec, ours_setup

__all__ = ["run_benchmark", "merge_runs", "check_json_path", "write_json", "utc_now"]


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
        "train_gflops": train_gflops(meta, first["emb_dim"], rate) if first.get("model", "mmoe") == "mmoe" else None,
        "processes": len(runs),
    })
    if "peak_gpu_mb" in first:
        record["peak_gpu_mb"] = max(r["peak_gpu_mb"] for r in runs)
    return record


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
    write to ``json_path``) ``{"meta": ..., "records": [...], "targets": [...]}``."""
    spec = spec or BenchSpec()
    check_device(spec.device)
    check_json_path(json_path)
    impls = _available(spec.impls, log)
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
                records += _configuration(spec, impls, data, Path(tmp), bs, dim, meta, log)
    result = {
        "meta": {
            "command": command or "python -m mmoe_annotated.bench", "date_utc": utc_now(), "spec": asdict(spec),
            "data": meta, "machine": machine_info(spec.device), "provenance": provenance(), "matmul_gflops": peak,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "wall_seconds": time.perf_counter() - started, "taught_setup": TAUGHT_SETUP,
            "fast_setup": ours_setup("fast", spec.block_rows), "deepctr_setup": DEEPCTR_SETUP,
        },
        "records": records,
    }
    result["targets"] = targets_report(result)
    write_json(result, json_path)
    return result


def _available(impls, log) -> list[str]:
    """The implementations to time: DeepCTR-Torch only where it is installed."""
    impls = list(impls)
    if "deepctr" in impls and deepctr_version() is None:
        log("DeepCTR-Torch is not installed (pip install deepctr-torch==0.3.0): timing the package only")
        impls.remove("deepctr")
        if not impls:
            raise SystemExit("nothing to run: DeepCTR-Torch is not installed and --impls names only deepctr")
    return impls


def _configuration(spec: BenchSpec, impls, data: Path, tmp: Path, bs: int, dim: int, meta: dict, log) -> list[dict]:
    """One batch size and embedding dim: every implementation's record, each timed run in its own
    process and the implementations interleaved in ABBA order, so that a machine that speeds up or
    slows down for minutes hits all of them alike."""
    runs = {job: [] for job in _jobs(impls, spec.models)}
    for round_ in range(int(spec.repeats)):
        for impl, model in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
            out = tmp / f"{impl}_{model}_{bs}_{dim}_{round_}.json"
            runs[impl, model].append(spawn(impl, data, out, bs, dim, spec, model))
    records = []
    for (impl, model), done in runs.items():
        rec = merge_runs(done, meta)
        records.append(rec)
        log(f"  {impl:7s} {model:13s} batch {bs:5d} dim {dim:3d}: train {rec['train_samples_per_s']:9,.0f}/s  "
            f"predict {rec['predict_samples_per_s']:11,.0f}/s  RSS {rec['peak_rss_mb']:6.0f} MiB  AUC {rec['auc']:.4f}")
    return records


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def check_json_path(path: str | os.PathLike | None) -> None:
    """Before the work: ``path`` can be written (a ``ValueError`` if not), so that no result is
    measured and then lost."""
    if path is not None:
        writable_file(path)


def write_json(result: dict, path: str | os.PathLike | None) -> None:
    """Write ``result`` to ``path`` (its folder made), unless ``path`` is None."""
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=1) + "\n")
