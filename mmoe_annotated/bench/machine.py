"""The machine a benchmark runs on: its peak memory, its matrix-multiply speed, what it is, and
which code it ran.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``).
"""
from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..runtime import package_version

__all__ = ["check_device", "sync", "peak_rss_mb", "matmul_gflops", "flops_per_sample", "train_gflops", "machine_info",
           "deepctr_version", "provenance"]


def check_device(device: str) -> None:
    """A plain error when CUDA is asked for and absent (instead of a failure deep inside a worker)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but CUDA is not available here "
                         "(torch.cuda.is_available() is False); run with --device cpu")


def sync(device: str) -> None:
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
        sync(device)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            sync(device)
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


def train_gflops(meta: dict, emb_dim: int, samples_per_s: float) -> float:
    """Training GFLOP/s: three times the forward matrix multiplies of one row, times the rate."""
    width = len(meta["sparse"]) * emb_dim + len(meta["dense"])  # I = F*K + N
    return 3 * flops_per_sample(width, num_tasks=len(meta["tasks"])) * samples_per_s / 1e9


def deepctr_version() -> str | None:
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
            "python": platform.python_version(), "torch": torch.__version__, "deepctr_torch": deepctr_version()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def provenance() -> dict:
    """Which code made a result: the package's version, the git commit of the checkout it runs from
    (None outside a git checkout) and the package files that differ from that commit, and torch's
    version."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.rstrip("\n") if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "mmoe_annotated") if commit else None
    return {"package_version": package_version(), "git_commit": commit,
            "git_changed_files": [line[3:] for line in changed.splitlines()] if changed else [],
            "torch": torch.__version__}
