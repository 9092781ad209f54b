"""Checkpoints: one file holding everything needed to predict again, and nothing that can run code.

Explained in the appendix "When things go wrong" (``book/appendix_troubleshooting.ipynb``).

A checkpoint bundles the model kind, its :class:`~mmoe_annotated.model.ModelConfig`, the
fitted :class:`~mmoe_annotated.features.FeatureEncoder` (as JSON), the weights and the
package version. Three promises:

* **Loading never runs code.** Python's pickle can execute anything on load, and a
  checkpoint is exactly the kind of file people download and pass around. The file is
  read with ``torch.load(..., weights_only=True)``, which only rebuilds tensors, numbers,
  strings, lists and dicts; config and encoder travel as a JSON string, not as objects.
* **A crash never leaves a corrupt checkpoint in place.** The bytes go to a temporary
  file in the same directory, are flushed to disk, and only then renamed over the target
  with ``os.replace`` (atomic on one file system): readers see the old file or the new
  one, never half of one.
* **Problems are named.** A truncated or damaged file, a checkpoint written by an
  incompatible version, weights that do not match the config, or a checkpoint of another
  config than the model it is loaded into each raise :class:`CheckpointError` saying so.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch

from .data import DataError
from .features import FeatureEncoder
from .model import MODELS, ModelConfig, MultiTaskModel
from .runtime import resolve_device

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "FORMAT", "FORMAT_VERSION"]

#: What the manifest calls this kind of file, and the layout version this code reads and writes.
#: Bump ``FORMAT_VERSION`` when the layout changes in a way old readers cannot follow.
FORMAT = "mmoe-annotated-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(DataError):
    """A checkpoint file that cannot be used: missing, damaged, of another version or another config."""


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns. ``model`` is in eval mode with the saved weights."""

    model: MultiTaskModel
    encoder: FeatureEncoder | None
    kind: str
    config: ModelConfig
    package_version: str
    extra: dict


def _package_version() -> str:
    from . import __version__  # the package's own version; imported late to avoid a cycle

    return __version__


def _kind_of(model: MultiTaskModel) -> str:
    for kind, cls in MODELS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"can only save the package's models {sorted(MODELS)}, got {type(model).__name__}")


def _digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes: catches damage that still unpickles."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: MultiTaskModel, encoder: FeatureEncoder | None = None, *,
                    extra: dict | None = None) -> Path:
    """Write ``model`` (and the fitted ``encoder`` that feeds it) to ``path``, atomically.

    ``extra`` is any JSON-serialisable dict (metrics, notes); it comes back as ``.extra``."""
    path = Path(path)
    kind = _kind_of(model)
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
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "torch_version": torch.__version__,
        "kind": kind,
        "config": model.config.to_dict(),
        "encoder": None if encoder is None else encoder.to_dict(),
        "sha256": _digest(state),
        "extra": dict(extra or {}),
    }
    try:
        text = json.dumps(manifest, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save: the config, encoder or extra= is not JSON-serialisable ({exc})") from exc
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"manifest": text, "state_dict": state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _read(path: Path) -> tuple[dict, dict]:
    if not path.exists():
        raise CheckpointError("no such checkpoint file", path=path)
    if path.is_dir():
        raise CheckpointError("is a directory, not a checkpoint file", path=path)
    if path.stat().st_size == 0:
        raise CheckpointError("is empty (0 bytes): the save never finished; save it again", path=path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:  # a pickled object: say so, and never suggest weights_only=False
            raise CheckpointError(f"holds a Python object ({found.group(1)}), not just tensors, numbers and "
                                  "strings; refusing to unpickle it, because loading it could run code. Only "
                                  "load checkpoints written by save_checkpoint", path=path) from exc
        raise CheckpointError("is not a checkpoint written by save_checkpoint, or it is truncated or "
                              "corrupt (the reader found bytes that are not a tensor file)", path=path) from exc
    except Exception as exc:  # zip or pickle damage: whatever torch's reader trips over
        raise CheckpointError(f"is truncated or corrupt and cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); save it again",
                              path=path) from exc
    if not isinstance(payload, dict) or "manifest" not in payload or "state_dict" not in payload:
        raise CheckpointError("is not an mmoe_annotated checkpoint (no manifest); a bare state_dict from "
                              "torch.save(model.state_dict()) loads with model.load_state_dict(...)", path=path)
    try:
        manifest = json.loads(payload["manifest"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"has a damaged manifest ({exc})", path=path) from exc
    state = payload["state_dict"]
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError("is not an mmoe_annotated checkpoint (unknown format)", path=path)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError("has a damaged state_dict (not a dict of tensors)", path=path)
    return manifest, state


def load_checkpoint(path: str | os.PathLike, *, model: MultiTaskModel | None = None,
                    device: str | torch.device | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Without ``model`` the model is rebuilt from the saved kind and config. With ``model``
    the weights are loaded into it, and its kind and config must equal the saved ones.
    ``device`` moves the model (default: CPU). Raises :class:`CheckpointError` on any problem."""
    path = Path(path)
    manifest, state = _read(path)
    version = manifest.get("format_version")
    written_by = manifest.get("package_version", "an unknown version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CheckpointError(
            f"was written in checkpoint format {version!r} by mmoe_annotated {written_by}, but this is "
            f"mmoe_annotated {_package_version()}, which reads format {FORMAT_VERSION}; "
            + ("upgrade mmoe_annotated to load it" if newer else
               f"load it with mmoe_annotated {written_by} and save it again with this version"), path=path)
    if manifest.get("sha256") != _digest(state):
        raise CheckpointError("its weights do not match the checksum written with them: the file is "
                              "damaged; save it again", path=path)
    kind = manifest.get("kind")
    if kind not in MODELS:
        raise CheckpointError(f"names an unknown model kind {kind!r}; known: {sorted(MODELS)}", path=path)
    try:
        config = ModelConfig.from_dict(manifest["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"has a damaged or incompatible model config ({exc})", path=path) from exc
    try:
        encoder = None if manifest.get("encoder") is None else FeatureEncoder.from_dict(manifest["encoder"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"has a damaged or incompatible feature encoder ({exc})", path=path) from exc
    if model is None:
        model = MODELS[kind](config)
    else:
        if not isinstance(model, MultiTaskModel):
            raise TypeError(f"model must be an MMoE / OMoE / SharedBottom, got {type(model).__name__}")
        if _kind_of(model) != kind:
            raise CheckpointError(f"holds a {kind!r} model, but the model given is a {_kind_of(model)!r}",
                                  path=path)
        if model.config != config:
            mine, theirs = model.config.to_dict(), config.to_dict()
            diff = [f"{k}: checkpoint {theirs[k]!r} vs model {mine[k]!r}" for k in theirs if theirs[k] != mine[k]]
            raise CheckpointError("is a checkpoint of another config than the model given; differences: "
                                  + "; ".join(diff) + ". Omit model= to rebuild the saved model", path=path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"holds weights that do not fit its config ({str(exc).splitlines()[0]} ...)",
                              path=path) from exc
    if device is not None:
        model.to(resolve_device(device))
    model.eval()
    return Checkpoint(model, encoder, kind, config, str(written_by), dict(manifest.get("extra") or {}))
