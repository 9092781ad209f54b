"""Where and how reproducibly the code runs: devices, seeds and the package's version.

Explained in chapter 7, "Training" (``book/07_training.ipynb``). Every module that places a
model on a device, seeds a run or records which version wrote a file takes these from here.
"""
from __future__ import annotations

import random
from importlib import metadata

import numpy as np
import torch

__all__ = ["seed_everything", "resolve_device", "parse_device", "package_version"]

#: The distribution name under which pip installs the package.
DISTRIBUTION = "mmoe-annotated"


def package_version() -> str:
    """The installed package's version, from its metadata (``pyproject.toml`` sets it once).

    Source code imported without installing the package has no metadata: its version is
    ``"0+unknown"``, which no release ever carries."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA).

    On CPU this is enough: the same seed gives bit-identical weights and predictions
    (``tests/train/test_reproducibility.py`` checks it in two fresh processes). On CUDA
    some kernels are nondeterministic (atomic adds in embedding backward, scatter, some
    cuBLAS paths); for bit-identical CUDA runs also

    * set the environment variable ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` before CUDA
      starts;
    * call ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic
      version then raises instead of silently varying);
    * set ``torch.backends.cudnn.benchmark = False``;
    * keep the same GPU model, driver, CUDA and torch versions, and the same batch size.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... with a plain error when CUDA is absent."""
    dev = parse_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} was asked for, but CUDA is not available here "
                         "(torch.cuda.is_available() is False); use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(dev)!r} was asked for, but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device 'mps' was asked for, but Apple's MPS backend is not available here; "
                         "use device='cpu'")
    if dev.type == "meta":  # shapes without values: everything would "work" and nothing could predict
        raise ValueError("device 'meta' holds tensor shapes but no values, so a model there cannot train "
                         "or predict; use 'cpu' or 'cuda'")
    if dev.type not in ("cpu", "cuda", "mps"):
        backend = getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if not (callable(available) and available()):
            raise ValueError(f"device {str(dev)!r} was asked for, but this torch has no usable "
                             f"{dev.type!r} backend here; use 'cpu' or 'cuda'")
    return dev


def parse_device(device) -> torch.device:
    """``torch.device(device)`` with a plain error for strings torch does not know."""
    try:
        return torch.device("cpu" if device is None or device == "" else device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from exc
