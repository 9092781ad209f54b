"""Saving a checkpoint: one file, written atomically, with a checksum over everything it holds.

Explained in the appendix "When things go wrong" (``book/appendix_troubleshooting.ipynb``).
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import torch

from ..features.encoder import FeatureEncoder
from ..model import MODELS
from ..model.mmoe import MultiTaskModel
from ..runtime import package_version
from .files import Sink, file_kind, raise_clearly, remove_stale_temps, temp_file
from .verify import FORMAT, FORMAT_VERSION, digest

__all__ = ["save_checkpoint", "kind_of"]


def kind_of(model: MultiTaskModel) -> str:
    for kind, cls in MODELS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"can only save the package's models {sorted(MODELS)}, got {type(model).__name__}")


def save_checkpoint(path: str | os.PathLike, model: MultiTaskModel, encoder: FeatureEncoder | None = None, *,
                    extra: dict | None = None) -> Path:
    """Write ``model`` (and the fitted ``encoder`` that feeds it) to ``path``, atomically.

    ``extra`` is any JSON-serialisable dict (metrics, notes); it comes back as ``.extra``.
    A file replaced keeps its permission bits; a new file gets ``0o666`` less the umask."""
    path = Path(path)
    kind = kind_of(model)
    if encoder is not None:
        if not isinstance(encoder, FeatureEncoder):
            raise TypeError(f"encoder must be a FeatureEncoder, got {type(encoder).__name__}")
        if encoder.features != model.config.features:
            raise ValueError("the encoder does not match the model: encoder.features differs from "
                             "model.config.features; save the encoder the model was built from")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name such as {path / 'model.ckpt'}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent} does not exist; create the directory first")
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    except OSError as exc:
        raise_clearly(exc, path)
    if old is not None and not stat.S_ISREG(old.st_mode):
        raise ValueError(f"{path} exists and is a {file_kind(old.st_mode)}, not a regular file; "
                         "give the path of a file")
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": package_version(),
        "torch_version": torch.__version__,
        "kind": kind,
        "config": model.config.to_dict(),
        "encoder": None if encoder is None else encoder.to_dict(),
        "extra": dict(extra or {}),
    }
    try:
        text = json.dumps(manifest, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save: the config, encoder or extra= is not JSON-serialisable ({exc})") from exc
    payload = {"manifest": text, "state_dict": state, "sha256": digest(text, state)}
    remove_stale_temps(path)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "wb", buffering=0) as raw:
            sink = Sink(raw)
            try:
                torch.save(payload, sink)
            except RuntimeError as exc:
                if sink.error is None:
                    raise
                raise sink.error from exc
            os.fsync(raw.fileno())
        if old is not None:
            os.chmod(tmp, stat.S_IMODE(old.st_mode))  # keep the mode of the file replaced
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise_clearly(exc, path)
        raise
    return path
