"""Prediction alone: the taught path, the fast wing's fused pass and ``torch.compile``, side by side.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``). Run
``python -m mmoe_annotated.bench --prediction`` (``--json PATH`` to keep the result). It decides a
question of the fast wing: could ``torch.compile`` (:mod:`~mmoe_annotated.bench.compiled`) replace
the hand-written fused pass (:mod:`mmoe_annotated.fast.fused`)? :func:`decide` applies the rule:
yes if compiled prediction reaches :data:`REPLACE_AT` of the fused pass's throughput in every
configuration.

How it is measured:

* the main benchmark's generated data (:func:`~mmoe_annotated.bench.data.prepare_data`), every
  row predicted, at each batch size and embedding dim;
* one MMoE per configuration (DeepCTR-Torch's defaults, sparse embeddings), trained for one epoch
  on the first :data:`TRAIN_ROWS` training rows so that its outputs vary from row to row; every
  implementation predicts with that one model, in one process, a fresh one per configuration
  (with an empty TorchInductor cache, so that compile times are those of a first run);
* each implementation is called once untimed (the compiled one compiles then: that call's time
  less a timed call's is its compile time), then ``repeats`` rounds each time one prediction of
  every row by every implementation, the order alternating from round to round (ABBA); the
  median time is kept, and each ratio is the median of that ratio within the rounds, so that a
  machine that drifts faster or slower hits both sides of a ratio alike;
* every implementation's predictions are compared with the taught path's.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import fast
from ..data.schema import TASKS
from ..features.inputs import DenseFeature, EncodedFeatures, SparseFeature
from ..model.config import ModelConfig
from ..model.mmoe import MMoE
from ..train.inference import predict
from ..train.loop import TrainConfig
from .compiled import CompiledPredict
from .data import load_data, prepare_data
from .machine import check_device, machine_info, provenance, sync
from .run import check_json_path, utc_now, write_json

__all__ = ["PREDICTION_IMPLS", "REPLACE_AT", "TRAIN_ROWS", "predict_one", "run_prediction", "decide",
           "format_prediction"]

#: The implementations: ``mm.predict``, ``mm.fast.predict`` and ``torch.compile`` (``CompiledPredict``).
PREDICTION_IMPLS = ("taught", "fast", "compiled")

#: ``torch.compile`` replaces the fused pass if its prediction throughput is at least this fraction
#: of the fused pass's in every configuration measured.
REPLACE_AT = 0.9

#: The training rows of the one epoch that gives each configuration's model its weights.
TRAIN_ROWS = 20_000

SETUPS = {"taught": "mm.predict(model, x, batch_size=B)", "fast": "mm.fast.predict(model, x, batch_size=B)",
          "compiled": "CompiledPredict(model)(x, batch_size=B): torch.compile(model, dynamic=False"
                      "[, mode='reduce-overhead' on CUDA]) under torch.inference_mode()"}


def _model(meta: dict, ids, dense, labels, emb_dim: int, device: str) -> tuple[MMoE, EncodedFeatures]:
    """The configuration's model, trained for one epoch on :data:`TRAIN_ROWS` rows, and every row."""
    feats = ([SparseFeature(n, v, emb_dim) for n, v in zip(meta["sparse"], meta["vocab_sizes"])]
             + [DenseFeature(n, 1) for n in meta["dense"]])
    model = MMoE(ModelConfig(tuple(feats), task_names=tuple(TASKS), sparse_embeddings=True))
    x = EncodedFeatures(torch.from_numpy(ids), torch.from_numpy(dense))
    n = min(TRAIN_ROWS, meta["train_rows"])
    cfg = TrainConfig(epochs=1, batch_size=256, progress=False, device=device)
    fast.fit(model, (x.index(slice(0, n)), torch.from_numpy(labels[:n])), cfg)
    return model.eval(), x


def _predictors(model: MMoE, impls) -> dict:
    compiled = CompiledPredict(model)
    every = {"taught": lambda x, bs, dev: predict(model, x, batch_size=bs, device=dev),
             "fast": lambda x, bs, dev: fast.predict(model, x, batch_size=bs, device=dev),
             "compiled": lambda x, bs, dev: compiled(x, batch_size=bs, device=dev)}
    return {impl: every[impl] for impl in impls}


def _timed(fn, device: str) -> tuple[float, np.ndarray]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def predict_one(data_path, batch_size: int, emb_dim: int, impls=PREDICTION_IMPLS, repeats: int = 5,
                threads: int = 2, device: str = "cpu") -> list[dict]:
    """Every implementation of ``impls`` at one batch size and embedding dim, in this process (see
    the module's docstring); one record per implementation."""
    torch.set_num_threads(int(threads))
    meta, ids, dense, labels = load_data(data_path)
    model, x = _model(meta, ids, dense, labels, int(emb_dim), device)
    run = {impl: (lambda fn=fn: fn(x, int(batch_size), device)) for impl, fn in _predictors(model, impls).items()}
    first, preds = {}, {}
    for impl, fn in run.items():
        first[impl], preds[impl] = _timed(fn, device)
    seconds = {impl: [] for impl in run}
    for round_ in range(int(repeats)):
        for impl in (list(run) if round_ % 2 == 0 else list(run)[::-1]):
            seconds[impl].append(_timed(run[impl], device)[0])
    reference = preds.get("taught")
    records = []
    for impl in run:
        median = statistics.median(seconds[impl])
        records.append({
            "impl": impl, "model": "mmoe", "batch_size": int(batch_size), "emb_dim": int(emb_dim), "device": device,
            "threads": int(threads), "predict_rows": len(x), "predict_seconds": seconds[impl],
            "predict_samples_per_s": len(x) / median, "first_call_seconds": first[impl],
            "compile_seconds": first[impl] - median if impl == "compiled" else None,
            "over": {other: _paired(seconds[other], seconds[impl]) for other in run if other != impl},
            "max_abs_diff_vs_taught": None if reference is None else float(np.abs(preds[impl] - reference).max()),
            "setup": SETUPS[impl]})
    return records


def _paired(theirs: list[float], ours: list[float]) -> float:
    """How many times faster ``ours`` ran than ``theirs``: the median of the ratio within each round."""
    return statistics.median(t / o for t, o in zip(theirs, ours))


def _spawn(args: dict, out: Path) -> list[dict]:
    """One configuration in a fresh process, with a fresh TorchInductor cache."""
    with tempfile.TemporaryDirectory(prefix="mmoe_inductor_") as cache:
        env = dict(os.environ, OMP_NUM_THREADS=str(args["threads"]), MKL_NUM_THREADS=str(args["threads"]),
                   TORCHINDUCTOR_CACHE_DIR=cache)
        proc = subprocess.run([sys.executable, "-m", "mmoe_annotated.bench", "--prediction-worker",
                               json.dumps({**args, "out": str(out)})], env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"prediction worker batch={args['batch_size']} dim={args['emb_dim']} failed "
                           f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def prediction_worker(args: dict) -> None:
    """Entry point of a worker process (``python -m mmoe_annotated.bench --prediction-worker JSON``)."""
    records = predict_one(args["data"], args["batch_size"], args["emb_dim"], args["impls"], args["repeats"],
                          args["threads"], args["device"])
    Path(args["out"]).write_text(json.dumps(records))


def run_prediction(rows: int = 200_000, batch_sizes=(256, 4096), emb_dims=(4, 16), impls=PREDICTION_IMPLS,
                   repeats: int = 5, threads: int = 2, device: str = "cpu", seed: int = 0, tables: str = "catalog",
                   json_path=None, log=print, command: str | None = None) -> dict:
    """Time prediction by every implementation of ``impls`` at every configuration, each in its own
    process; return (and optionally write to ``json_path``) ``{"meta", "records", "decision"}``."""
    check_device(device)
    check_json_path(json_path)
    if not impls or set(impls) - set(PREDICTION_IMPLS):
        raise ValueError(f"impls must be a non-empty subset of {PREDICTION_IMPLS}, got {impls}")
    load_before, started, records = os.getloadavg(), time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="mmoe_prediction_") as tmp:
        data = Path(tmp) / "data.npz"
        log(f"generating and encoding {rows:,} rows ...")
        meta = prepare_data(rows, data, seed, tables)
        for bs in batch_sizes:
            for dim in emb_dims:
                args = {"data": str(data), "batch_size": int(bs), "emb_dim": int(dim), "impls": list(impls),
                        "repeats": int(repeats), "threads": int(threads), "device": device}
                for rec in _spawn(args, Path(tmp) / f"{bs}_{dim}.json"):
                    records.append(rec)
                    log(_record_line(rec))
    result = {"meta": {"command": command or "python -m mmoe_annotated.bench --prediction", "date_utc": utc_now(),
                       **provenance(), "machine": machine_info(device), "device": device, "threads": int(threads),
                       "repeats": int(repeats), "train_rows": min(TRAIN_ROWS, meta["train_rows"]), "data": meta,
                       "setups": {impl: SETUPS[impl] for impl in impls}, "niceness": os.nice(0),
                       "load_average_before": load_before,
                       "load_average_after": os.getloadavg(), "wall_seconds": time.perf_counter() - started},
              "records": records}
    result["decision"] = decide(result)
    write_json(result, json_path)
    return result


def _record_line(rec: dict) -> str:
    compile_s = f", compiled in {rec['compile_seconds']:.0f} s" if rec["compile_seconds"] is not None else ""
    taught = rec["over"].get("taught")
    return (f"  {rec['impl']:8s} batch {rec['batch_size']:5d} dim {rec['emb_dim']:3d}: "
            f"{rec['predict_samples_per_s']:11,.0f} samples/s"
            + (f" ({taught:.2f}x the taught path)" if taught else "") + compile_s)


def decide(result: dict) -> dict | None:
    """The rule of :data:`REPLACE_AT` on a result: ``compiled / fast`` per configuration (the median
    of the ratio within each round) and whether ``torch.compile`` should replace the fused pass."""
    ratios = [{"batch_size": r["batch_size"], "emb_dim": r["emb_dim"], "compiled_over_fast": r["over"]["fast"]}
              for r in result["records"] if r["impl"] == "compiled" and "fast" in r["over"]]
    if not ratios:
        return None
    return {"rule": f"torch.compile replaces the fused pass if compiled/fast >= {REPLACE_AT} in every configuration",
            "ratios": ratios, "replace": all(r["compiled_over_fast"] >= REPLACE_AT for r in ratios)}


def format_prediction(result: dict) -> str:
    """The printed table: samples/s per implementation, the ratios to the taught path and to the fast
    wing, compile seconds and the largest difference from the taught predictions; then the decision."""
    m = result["meta"]
    impls = [i for i in PREDICTION_IMPLS if any(r["impl"] == i for r in result["records"])]
    others = [i for i in impls if i != "taught"]
    threads = f"{m['threads']} thread{'s' if m['threads'] != 1 else ''}"
    lines = [f"MMoE prediction of {m['data']['rows']:,} rows; {threads} on {m['device']}; median of "
             f"{m['repeats']} turns in one process per configuration, the implementations taking turns",
             f"machine: {m['machine']['cpu']}{'; GPU ' + m['machine']['gpu'] if 'gpu' in m['machine'] else ''}; "
             f"torch {m['torch']}; mmoe-annotated {m['package_version']} ({(m['git_commit'] or 'no git')[:10]}); "
             f"{m['date_utc']}; load average {m['load_average_before'][0]:.2f} before, "
             f"{m['load_average_after'][0]:.2f} after", "",
             f"{'':9} | {'samples/s':^{10 * len(impls) - 1}} | {'over taught':^{9 * len(others) - 1}} |"
             f" {'compiled':>8} | {'compile':>7} | max |diff| vs taught",
             f"{'batch':>5} {'K':>3} | " + " ".join(f"{i:>9}" for i in impls) + " | "
             + " ".join(f"{i:>8}" for i in others) + f" | {'/ fast':>8} | {'seconds':>7} | "
             + " ".join(f"{i:>8}" for i in others)]
    for key in sorted({(r["batch_size"], r["emb_dim"]) for r in result["records"]}):
        runs = {r["impl"]: r for r in result["records"] if (r["batch_size"], r["emb_dim"]) == key}
        rates = " ".join(f"{runs[i]['predict_samples_per_s']:9,.0f}" for i in impls)
        over = " ".join(f"{runs[i]['over'].get('taught', float('nan')):7.2f}x" for i in others)
        comp = runs.get("compiled")
        versus = f"{comp['over']['fast']:7.2f}x" if comp and "fast" in comp["over"] else f"{'-':>8}"
        seconds = f"{comp['compile_seconds']:7.1f}" if comp else f"{'-':>7}"
        diffs = " ".join(f"{runs[i]['max_abs_diff_vs_taught'] or 0:8.1e}" for i in others)
        lines.append(f"{key[0]:>5} {key[1]:>3} | {rates} | {over} | {versus} | {seconds} | {diffs}")
    decision = result.get("decision")
    if decision:
        lines += ["", f"decision: {decision['rule']}: "
                  + ("replace" if decision["replace"] else "keep the fused pass")]
    load = max(m["load_average_before"][0], m["load_average_after"][0])
    if m["device"] == "cpu" and load > 0.5 * m["threads"]:
        lines.append(f"note: the load average reached {load:.2f}, so other work shared the CPU; absolute figures are "
                     "low and noisy" + (", and operators split over several threads suffer most" if m["threads"] > 1
                                        else ""))
    return "\n".join(lines)
