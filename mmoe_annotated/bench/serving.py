"""Serving latency: one MMoE scored by the taught path, the fast wing, the exported torch program and
onnxruntime, and through the HTTP service.

Explained in the appendix "Serving the ranker" (``book/appendix_serving.ipynb``), which reads the
shipped result (``load_committed("serving_cpu")``) instead of timing anything live.

``python -m mmoe_annotated.bench.serving [--json PATH]`` fits the encoder on the embedded data, builds
the tutorial's MMoE, trains it one epoch (its weights do not change the time, but they make the
differences between runtimes meaningful) and exports it in both formats. Then:

* **in process**, the latency of one call at batch 1 and batch 256, on one thread and on two
  (``torch.set_num_threads``; onnxruntime's intra-op threads), by ``taught``
  (``mm.predict(model, x, batch_size=B)``, the baseline), ``fast`` (``mm.fast.predict``), ``torch``
  (the ``torch.export`` program, :meth:`~mmoe_annotated.serve.Exported.score`) and ``onnx``
  (onnxruntime, the same method); every call on encoded rows, timed alone, the four taking turns
  round after round so that a change of load hits them alike; p50 and p99 in milliseconds and their
  ratio to the baseline's in the same run;
* **the encoder** alone (raw rows to ids and dense values), which every request pays first;
* **through the service**, a bounded load on loopback: ``--clients`` threads send ``--requests``
  requests each of 1 and of 256 raw rows as JSON to ``python -m mmoe_annotated.serve`` (one scoring
  thread, each runtime); requests per second, rows per second, and each request's latency as the
  client sees it (JSON and HTTP included).

The load average before and after is recorded with the result: on a machine busy with other
work the absolute figures are low and noisy, the ratios less so.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from .. import fast
from ..data import DENSE_FEATURES, SPARSE_FEATURES, load_example, split_by_row
from ..features import FeatureEncoder
from ..model import MMoE, ModelConfig
from ..serve import ServiceProcess, export, load_export
from ..train import TrainConfig, fit, predict
from .machine import machine_info, provenance
from ..experiments.arguments import int_at_least, out_file, positive_int
from .spec import MIN_ROWS
from .run import check_json_path, utc_now, write_json

__all__ = ["IMPLS", "SETUPS", "run_serving", "format_serving"]

#: The in-process implementations, the baseline first.
IMPLS = ("taught", "fast", "torch", "onnx")
SETUPS = {"taught": "mm.predict(model, x, batch_size=B)", "fast": "mm.fast.predict(model, x, batch_size=B)",
          "torch": "load_export(folder, 'torch').score(x): torch.export.load(...).module() under inference_mode",
          "onnx": "load_export(folder, 'onnx', threads=T).score(x): onnxruntime, CPUExecutionProvider"}


def _versions() -> dict:
    out = {}
    for name in ("onnx", "onnxruntime", "onnxscript", "starlette", "uvicorn", "httpx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _stats(seconds: list[float], rows: int) -> dict:
    ms = np.array(seconds) * 1e3
    return {"calls": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "rows_per_s": float(rows * len(ms) / ms.sum() * 1e3)}


def _callables(model, folder, threads: int) -> dict:
    exported = {"torch": load_export(folder, "torch"), "onnx": load_export(folder, "onnx", threads=threads)}
    return {"taught": lambda x: predict(model, x, batch_size=len(x)),
            "fast": lambda x: fast.predict(model, x, batch_size=len(x)),
            "torch": lambda x: exported["torch"].score(x)[0], "onnx": lambda x: exported["onnx"].score(x)[0]}


def _in_process(model, folder, x, batch_sizes, threads_list, calls: dict, rounds: int, log) -> list[dict]:
    records = []
    for threads in threads_list:
        torch.set_num_threads(threads)
        run = _callables(model, folder, threads)
        for bs in batch_sizes:
            starts = np.arange(0, len(x) - bs + 1, bs)
            batches = [x.index(slice(int(s), int(s) + bs)) for s in starts]
            reference = run["taught"](batches[0])
            diffs = {impl: float(np.abs(run[impl](batches[0]) - reference).max()) for impl in IMPLS}
            times = {impl: [] for impl in IMPLS}
            per_round = max(1, calls[bs] // rounds)
            for impl in IMPLS:  # warm-up: thread pools, allocators, the fast wing's guard
                for b in batches[:10]:
                    run[impl](b)
            k = 0
            for _ in range(rounds):
                for impl in IMPLS:
                    for _ in range(per_round):
                        b = batches[k % len(batches)]
                        k += 1
                        start = time.perf_counter()
                        run[impl](b)
                        times[impl].append(time.perf_counter() - start)
            base = _stats(times["taught"], bs)
            for impl in IMPLS:
                rec = {"impl": impl, "batch_size": bs, "threads": threads, **_stats(times[impl], bs),
                       "max_abs_diff_vs_taught": diffs[impl]}
                rec["p50_speedup_vs_taught"] = base["p50_ms"] / rec["p50_ms"]
                rec["p99_speedup_vs_taught"] = base["p99_ms"] / rec["p99_ms"]
                records.append(rec)
                log(f"  {impl:6s} batch {bs:4d} threads {threads}: p50 {rec['p50_ms']:7.3f} ms, "
                    f"p99 {rec['p99_ms']:7.3f} ms ({rec['p50_speedup_vs_taught']:.2f}x the taught p50)")
    return records


def _encoding(enc, df, batch_sizes, calls: dict, log) -> list[dict]:
    """The encoder alone (raw rows, a DataFrame, to ids and dense values): what every request pays
    before the model runs."""
    records = []
    for bs in batch_sizes:
        frames = [df.iloc[s:s + bs] for s in range(0, len(df) - bs + 1, bs)][:50]
        for f in frames[:5]:
            enc.transform(f)
        seconds = []
        for k in range(calls[bs]):
            start = time.perf_counter()
            enc.transform(frames[k % len(frames)])
            seconds.append(time.perf_counter() - start)
        rec = {"batch_size": bs, **_stats(seconds, bs)}
        records.append(rec)
        log(f"  encode batch {bs:4d}: p50 {rec['p50_ms']:7.3f} ms, p99 {rec['p99_ms']:7.3f} ms")
    return records


def _through_service(folder, rows: list[dict], expected: np.ndarray, runtimes, sizes, clients: int,
                     requests: int, log) -> list[dict]:
    import httpx

    records = []
    for runtime in runtimes:
        with ServiceProcess(folder, "--runtime", runtime, "--threads", "1") as service:
            for size in sizes:
                def one_client(seed: int) -> tuple[list[float], float, int]:
                    rng = np.random.default_rng(seed)
                    seconds, worst, errors = [], 0.0, 0
                    with httpx.Client(base_url=service.url, timeout=60) as client:
                        for i in range(requests + 5):
                            start_row = int(rng.integers(0, len(rows) - size + 1))
                            started = time.perf_counter()
                            reply = client.post("/score", json={"rows": rows[start_row:start_row + size]})
                            took = time.perf_counter() - started
                            if reply.status_code != 200:
                                errors += 1
                                continue
                            got = np.array([[r[t] for t in ("finish", "like")] for r in reply.json()["scores"]])
                            worst = max(worst, float(np.abs(got - expected[start_row:start_row + size]).max()))
                            if i >= 5:  # the first few warm the connection and the service
                                seconds.append(took)
                    return seconds, worst, errors

                started = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    results = list(pool.map(one_client, range(clients)))
                wall = time.perf_counter() - started
                seconds = [s for r in results for s in r[0]]
                total = clients * (requests + 5)
                rec = {"runtime": runtime, "rows_per_request": size, "client_threads": clients,
                       "requests": total, "seconds": wall, "requests_per_s": total / wall,
                       "rows_per_s": total * size / wall, **{k: v for k, v in _stats(seconds, size).items()
                                                             if k in ("p50_ms", "p99_ms", "mean_ms")},
                       "errors": sum(r[2] for r in results),
                       "max_abs_diff_vs_taught": max(r[1] for r in results)}
                records.append(rec)
                log(f"  service {runtime:5s} {size:4d} rows/request: {rec['requests_per_s']:7.1f} requests/s, "
                    f"p50 {rec['p50_ms']:.2f} ms, p99 {rec['p99_ms']:.2f} ms")
        if service.process.returncode != 0:
            raise RuntimeError(f"the {runtime} service did not stop cleanly: {service.stderr[-2000:]}")
    return records


def run_serving(rows: int = 10_000, batch_sizes=(1, 256), threads=(1, 2), calls_1: int = 2000,
                calls_256: int = 300, rounds: int = 5, clients: int = 4, requests: int = 250,
                json_path=None, command: str | None = None, log=print) -> dict:
    """Time everything the module docstring lists; return (and write to ``json_path``) the result."""
    check_json_path(json_path)
    load_before, started = os.getloadavg(), time.perf_counter()
    previous_threads = torch.get_num_threads()
    df = load_example(rows)
    train, test = split_by_row(df, 0.8)
    enc = FeatureEncoder(SPARSE_FEATURES, DENSE_FEATURES, emb_dim=4).fit(train)
    model = MMoE(ModelConfig(enc.features))
    # one epoch, so that the predictions spread and the differences between runtimes mean something
    fit(model, train, TrainConfig(batch_size=256, epochs=1, progress=False), encoder=enc)
    model.eval()
    x = enc.transform(df)
    calls = {1: calls_1, 256: calls_256}
    calls.update({b: calls_256 for b in batch_sizes if b not in calls})
    try:
        with tempfile.TemporaryDirectory(prefix="mmoe_serving_") as tmp:
            log("exporting the MMoE (ONNX and torch.export) ...")
            folder = export(model, enc, os.path.join(tmp, "mmoe"), format=("onnx", "torch"))
            log("in process:")
            latency = _in_process(model, folder, x, batch_sizes, threads, calls, rounds, log)
            torch.set_num_threads(previous_threads)
            log("the encoder (raw rows to model inputs):")
            encoding = _encoding(enc, df, batch_sizes, calls, log)
            log("through the service (loopback):")
            payload = json.loads(test.to_json(orient="records"))  # the rows as a client sends them
            expected = predict(model, test, encoder=enc)
            service = _through_service(folder, payload, expected, ("onnx", "torch"), batch_sizes, clients,
                                       requests, log)
    finally:
        torch.set_num_threads(previous_threads)
    meta = {"command": command or "python -m mmoe_annotated.bench.serving", "date_utc": utc_now(), **provenance(),
            "versions": _versions(), "machine": machine_info("cpu"), "device": "cpu",
            "threads": list(threads), "model": {"kind": "mmoe", "config": "mm.ModelConfig(enc.features): 3 experts "
                                                "(256, 128), gates (64,), towers (64,), K=4; trained one "
                                                "epoch on 80% of the rows",
                                                "parameters": model.num_parameters()},
            "rows": rows, "calls": {str(k): v for k, v in calls.items() if k in batch_sizes}, "rounds": rounds,
            "setups": SETUPS, "baseline": "taught",
            "service": {"command": "python -m mmoe_annotated.serve --model DIR --runtime R --threads 1",
                        "client_threads": clients, "requests_per_client": requests + 5, "warm_up_requests": 5,
                        "client": "httpx.Client per thread, keep-alive, JSON rows of the embedded data"},
            "niceness": os.nice(0), "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "wall_seconds": time.perf_counter() - started}
    result = {"meta": meta, "latency": latency, "encoding": encoding, "service": service}
    write_json(result, json_path)
    return result


def format_serving(result: dict) -> str:
    """The printed tables: in-process latency (p50 / p99 ms, ratio to the taught p50) and the service."""
    m = result["meta"]
    lines = [f"MMoE serving latency; {m['machine']['cpu']}, {m['machine']['logical_cpus']} logical CPUs; torch "
             f"{m['torch']}, onnxruntime {m['versions']['onnxruntime']}; mmoe-annotated {m['package_version']} "
             f"({(m['git_commit'] or 'no git')[:10]}); {m['date_utc']}; load average "
             f"{m['load_average_before'][0]:.2f} before, {m['load_average_after'][0]:.2f} after", "",
             f"{'batch':>5} {'threads':>7} | " + " | ".join(f"{i:^23}" for i in IMPLS),
             f"{'':>5} {'':>7} | " + " | ".join(f"{'p50 ms':>7} {'p99 ms':>7} {'x':>6}" for _ in IMPLS)]
    for bs in sorted({r["batch_size"] for r in result["latency"]}):
        for t in sorted({r["threads"] for r in result["latency"]}):
            runs = {r["impl"]: r for r in result["latency"] if (r["batch_size"], r["threads"]) == (bs, t)}
            lines.append(f"{bs:>5} {t:>7} | " + " | ".join(
                f"{runs[i]['p50_ms']:7.3f} {runs[i]['p99_ms']:7.3f} {runs[i]['p50_speedup_vs_taught']:5.2f}x"
                for i in IMPLS))
    lines += ["", "the encoder, raw rows to model inputs (every request pays it): " + ", ".join(
        f"batch {r['batch_size']}: p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms" for r in result["encoding"])]
    lines += ["", f"service on loopback, {m['service']['client_threads']} client threads:",
              f"{'runtime':>7} {'rows/request':>12} | {'requests/s':>10} {'rows/s':>9} | {'p50 ms':>7} {'p99 ms':>7}"]
    for r in result["service"]:
        lines.append(f"{r['runtime']:>7} {r['rows_per_request']:>12} | {r['requests_per_s']:10.1f} "
                     f"{r['rows_per_s']:9.0f} | {r['p50_ms']:7.2f} {r['p99_ms']:7.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m mmoe_annotated.bench.serving", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int_at_least(MIN_ROWS), default=10_000, help="rows of the embedded data (default 10,000)")
    ap.add_argument("--threads", type=positive_int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    ap.add_argument("--calls-1", type=positive_int, default=2000, help="timed calls at batch 1 per implementation")
    ap.add_argument("--calls-256", type=positive_int, default=300, help="timed calls at batch 256 per implementation")
    ap.add_argument("--rounds", type=positive_int, default=5, help="turns the implementations take (default 5)")
    ap.add_argument("--clients", type=positive_int, default=4, help="client threads of the service load (default 4)")
    ap.add_argument("--requests", type=positive_int, default=250, help="timed requests per client (default 250)")
    ap.add_argument("--json", metavar="PATH", type=out_file, help="write the result to this JSON file")
    args = ap.parse_args(argv)
    command = "python -m mmoe_annotated.bench.serving " + shlex.join(argv) if argv else None
    result = run_serving(args.rows, (1, 256), tuple(args.threads), args.calls_1, args.calls_256, args.rounds,
                         args.clients, args.requests, json_path=args.json, command=command)
    print()
    print(format_serving(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
