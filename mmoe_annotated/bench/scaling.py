"""Measured numbers for the appendix "Scaling out": throughput and memory of
``mmoe_annotated.scale.distributed`` with 1 and 2 processes, and the stream's peak memory as the file grows.

Run (it writes a generated file, trains, and saves what it saw)::

    python -m mmoe_annotated.bench.scaling --rows 200000 --json scaling_cpu.json
    python -m mmoe_annotated.bench.scaling --memory-files byterec_2m.txt byterec_10m.txt --json scaling_cpu.json

Each run is the real command (``python -m torch.distributed.run --nproc_per_node N -m
mmoe_annotated.scale.distributed``) in fresh processes; peak memory is each process's peak resident set
size (``getrusage``), as ``metrics.json`` reports it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

__all__ = ["run_command", "command_line", "load_results", "RESULTS"]

#: The committed measurements the appendix shows.
RESULTS = "results/scaling_cpu.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_line(data, out, nproc: int, epochs: int = 1, batch_size: int = 1024, device: str = "cpu",
                 extra: tuple[str, ...] = ()) -> list[str]:
    """The launch command, as a reader would type it (plus a free localhost port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            "-m", "mmoe_annotated.scale.distributed", "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), "--batch-size", str(batch_size), "--device", device, *extra]


def run_command(data, nproc: int, **kwargs) -> dict:
    """Run the command in fresh processes; its metrics.json plus the wall-clock seconds."""
    with tempfile.TemporaryDirectory(prefix="mmoe-scaling-") as out:
        cmd = command_line(data, out, nproc, **kwargs)
        load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    metrics["wall_seconds"] = time.perf_counter() - start
    # other programs on the machine compete for its cores: keep what the load was
    metrics["load_average_before_after"] = [load_before, os.getloadavg() if load_before else None]
    metrics["command"] = " ".join(["python"] + cmd[1:5] + cmd[9:]).replace(str(out), "run/")
    return metrics


def _machine() -> str:
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores visible"


def load_results() -> dict:
    """The committed measurements (package data)."""
    return json.loads(resources.files("mmoe_annotated.bench").joinpath(RESULTS).read_text())


def main(argv=None) -> int:
    from ..experiments.arguments import int_at_least, out_file, positive_int

    p = argparse.ArgumentParser(prog="python -m mmoe_annotated.bench.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int_at_least(0), default=0,
                   help="generate a file of this many rows and time 1 and 2 processes")
    p.add_argument("--memory-files", nargs="*", default=[], help="ByteRec files to train one epoch on (1 process)")
    p.add_argument("--batch-size", type=positive_int, default=1024)
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--json", type=out_file, default=None, help="update this JSON file with what was measured")
    args = p.parse_args(argv)
    from ..data import make_byterec, write_byterec

    found = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else {}
    found["machine"] = _machine()
    if args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            data = write_byterec(make_byterec(args.rows, seed=0), Path(tmp) / "byterec.txt")
            table = []
            for nproc in (1, 2):
                m = run_command(data, nproc, epochs=args.epochs, batch_size=args.batch_size)
                m["command"] = m["command"].replace(str(data), "byterec.txt")
                table.append({k: m[k] for k in ("world_size", "samples_per_second", "train_seconds", "wall_seconds",
                                                "peak_rss_mib_per_process", "tasks", "command", "steps_per_epoch",
                                                "load_average_before_after")})
                print(f"{nproc} process(es): {m['samples_per_second']:,.0f} samples/s, peak RSS "
                      f"{m['peak_rss_mib_per_process']} MiB", flush=True)
        found["processes"] = {"rows": args.rows, "batch_size": args.batch_size, "epochs": args.epochs, "runs": table}
    for path in args.memory_files:
        m = run_command(path, 1, epochs=args.epochs, batch_size=args.batch_size)
        rows = sum(1 for _ in open(path, "rb"))
        entry = {"rows": rows, "file_mib": os.path.getsize(path) / 2**20,
                 "peak_rss_mib": m["peak_rss_mib_per_process"][0],
                 "peak_rss_mib_after_training": m["peak_rss_mib_after_training_per_process"][0],
                 "samples_per_second": m["samples_per_second"],
                 "load_average_before_after": m["load_average_before_after"],
                 "command": m["command"].replace(str(path), "FILE")}
        found.setdefault("stream_memory", [])
        found["stream_memory"] = [e for e in found["stream_memory"] if e["rows"] != rows] + [entry]
        print(f"{rows:,} rows ({entry['file_mib']:.0f} MiB): peak RSS {entry['peak_rss_mib']:.0f} MiB", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(found, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
