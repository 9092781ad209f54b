"""What made a shipped result: the package version, the git commit, torch's version, the device
and the exact command, recorded beside every run the book loads.

Used by the experiment commands (chapters 7-10); the book prints these records with the results.
"""
from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..runtime import package_version

__all__ = ["git_commit", "machine", "provenance", "reader_command"]


def git_commit() -> str:
    """The commit of the source tree that ran ("unknown" outside a git checkout), with a ``+dirty``
    mark when tracked files differ from it."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def machine(device: str) -> dict:
    """What ran it: enough to tell two machines' timings apart."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def reader_command(module: str, argv: list[str]) -> str:
    """``python -m MODULE ARGS`` as a reader would type it: the value of ``--out`` becomes ``DIR``."""
    args = [("DIR" if i and argv[i - 1] == "--out" else a) for i, a in enumerate(argv)]
    return " ".join(["python", "-m", module, *args])


def provenance(command: str, device: str = "cpu") -> dict:
    """The record a shipped result carries: version, commit, torch, device, machine, command, date."""
    return {"package_version": package_version(), "commit": git_commit(), "torch_version": torch.__version__,
            "device": device, "machine": machine(device), "command": command,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
