"""Checkpoints: one file holding everything needed to predict again, and nothing that can run code.

Explained in the appendix "When things go wrong" (``book/appendix_troubleshooting.ipynb``).

A checkpoint bundles the model kind, its :class:`~mmoe_annotated.model.ModelConfig`, the
fitted :class:`~mmoe_annotated.features.FeatureEncoder` (as JSON), the weights and the
package version. Four promises:

* **Loading never runs code.** Python's pickle can execute anything on load, and a
  checkpoint is exactly the kind of file people download and pass around. The file is
  read with ``torch.load(..., weights_only=True)``, which only rebuilds tensors, numbers,
  strings, lists and dicts; config and encoder travel as a JSON string, not as objects.
* **A crash never leaves a corrupt checkpoint in place.** The bytes go to a temporary
  file in the same directory, are flushed to disk, and only then renamed over the target
  with ``os.replace`` (atomic on one file system): readers see the old file or the new
  one, never half of one.
* **A damaged file never loads.** A SHA-256 checksum over everything the file holds (the
  manifest's exact text with kind, config, encoder, versions and ``extra``, and every
  tensor's name, dtype, shape and bytes) is written beside them and compared before
  anything is built: one changed byte that still parses (an encoder value, a config
  number) is refused, not loaded as a different model.
* **Problems are named.** A truncated or damaged file, a checkpoint written by an
  incompatible version, weights that do not match the config, or a checkpoint of another
  config than the model it is loaded into each raise :class:`CheckpointError` saying so;
  so do paths that are not regular files (a FIFO, a device) and unreadable ones. A save
  that finds no space left on the device says so with ``errno.ENOSPC``.

A save that was killed leaves its temporary file ``.<name>.<pid>.<hex>.tmp`` behind; the
next save to the same target deletes such files once their process has ended and they
have not been written for :data:`STALE_AFTER_S` seconds. A file replaced keeps its
permission bits; a new one gets ``0o666`` less the umask, like any file ``open()`` makes.
"""
from __future__ import annotations

import difflib
import errno
import hashlib
import json
import os
import pickle
import re
import stat
from pathlib import Path
from typing import NamedTuple

import torch

from .data import DataError
from .features import FeatureEncoder
from .model import MODELS, ModelConfig, MultiTaskModel
from .runtime import resolve_device
from .safe_files import STALE_AFTER_S, Sink, file_kind, raise_clearly, remove_stale_temps, temp_file

__all__ = ["CheckpointError", "Checkpoint", "save_checkpoint", "load_checkpoint", "FORMAT", "FORMAT_VERSION", "STALE_AFTER_S"]

#: What the manifest calls this kind of file, and the layout version this code reads and writes.
#: Bump ``FORMAT_VERSION`` when the layout changes in a way old readers cannot follow.
FORMAT = "mmoe-annotated-checkpoint"
FORMAT_VERSION = 2  # 2: the checksum covers the manifest too, not only the weights


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


def _digest(manifest: str, state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over everything the file holds: the manifest's exact text (kind, config, encoder,
    versions, extra) and each tensor's name, dtype, shape and bytes. Lengths go in before the
    parts, so no two different contents hash the same bytes."""
    h = hashlib.sha256()
    text = manifest.encode("utf-8", "surrogatepass")
    h.update(f"{FORMAT}|manifest|{len(text)}|".encode())
    h.update(text)
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"|{len(name)}|{name}|{t.dtype}|{tuple(t.shape)}|".encode("utf-8", "surrogatepass"))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: MultiTaskModel, encoder: FeatureEncoder | None = None, *,
                    extra: dict | None = None) -> Path:
    """Write ``model`` (and the fitted ``encoder`` that feeds it) to ``path``, atomically.

    ``extra`` is any JSON-serialisable dict (metrics, notes); it comes back as ``.extra``.
    A file replaced keeps its permission bits; a new file gets ``0o666`` less the umask."""
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
        "package_version": _package_version(),
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
    payload = {"manifest": text, "state_dict": state, "sha256": _digest(text, state)}
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


def _open(path: Path):
    """Open ``path`` for reading only if it is a regular, non-empty file; never block on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        if os.path.islink(path):
            raise CheckpointError(f"is a symbolic link to {os.readlink(path)!r}, which does not exist",
                                  path=path) from None
        raise CheckpointError("no such checkpoint file", path=path) from None
    except PermissionError as exc:
        raise CheckpointError(f"cannot be read: permission denied ({exc.strerror}); check the file's "
                              "and its directories' permissions", path=path) from exc
    except IsADirectoryError:
        raise CheckpointError("is a directory, not a checkpoint file", path=path) from None
    except OSError as exc:
        reason = "a loop of symbolic links" if exc.errno == errno.ELOOP else exc.strerror
        raise CheckpointError(f"cannot be opened ({reason})", path=path) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise CheckpointError("is a directory, not a checkpoint file", path=path)
        raise CheckpointError(f"is a {file_kind(st.st_mode)}, not a regular file; a checkpoint is a "
                              "file written by save_checkpoint", path=path)
    if st.st_size == 0:
        os.close(fd)
        raise CheckpointError("is empty (0 bytes): the save never finished; save it again", path=path)
    return os.fdopen(fd, "rb")


def _format_of(text) -> tuple:
    """(format_version, package_version) from a manifest text, or (None, None) if it does not parse."""
    try:
        manifest = json.loads(text)
    except (TypeError, ValueError):
        return None, None
    if not isinstance(manifest, dict):
        return None, None
    return manifest.get("format_version"), manifest.get("package_version", "an unknown version")


def _version_error(version, written_by, path: Path) -> CheckpointError:
    newer = isinstance(version, int) and version > FORMAT_VERSION
    if not newer and written_by == _package_version():  # a development build of this very version
        return CheckpointError(f"was written in the earlier checkpoint format {version!r} by a development "
                               f"build of mmoe_annotated {written_by}; this build reads format "
                               f"{FORMAT_VERSION}: save the model again", path=path)
    return CheckpointError(
        f"was written in checkpoint format {version!r} by mmoe_annotated {written_by}, but this is "
        f"mmoe_annotated {_package_version()}, which reads format {FORMAT_VERSION}; "
        + ("upgrade mmoe_annotated to load it" if newer else
           f"load it with mmoe_annotated {written_by} and save it again with this version"), path=path)


#: Names torch's writer puts in every checkpoint's pickle; a near miss of one is damage, not an object.
_TORCH_NAMES = ("torch._utils._rebuild_tensor_v2", "collections.OrderedDict", "torch.FloatStorage",
                "torch.LongStorage", "torch.DoubleStorage", "torch.IntStorage", "torch.BoolStorage")


def _misspelt(name: str) -> bool:
    return (not name.isprintable() or name.startswith("torch.")
            or bool(difflib.get_close_matches(name, _TORCH_NAMES, n=1, cutoff=0.8)))


_DAMAGED = "is damaged: {}; nothing in it can be trusted, so nothing was loaded. Copy or save it again"


def _read(path: Path) -> tuple[dict, dict]:
    """The manifest and weights of a checkpoint, after its checksum proved them intact."""
    with _open(path) as fh:
        try:
            payload = torch.load(fh, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            if found and _misspelt(found.group(1)):  # a name torch writes, with a byte changed
                raise CheckpointError(_DAMAGED.format(f"it names {ascii(found.group(1)[:80])}, which no "
                                                      "tensor file written by torch holds"), path=path) from exc
            if found:  # a pickled object: say so, and never suggest weights_only=False
                raise CheckpointError(f"holds a Python object ({found.group(1)}), not just tensors, numbers and "
                                      "strings; refusing to unpickle it, because loading it could run code. Only "
                                      "load checkpoints written by save_checkpoint", path=path) from exc
            raise CheckpointError("is not a checkpoint written by save_checkpoint, or it is damaged (truncated "
                                  "or corrupt: the reader found bytes that are not a tensor file)", path=path) from exc
        except Exception as exc:  # zip or pickle damage: whatever torch's reader trips over
            raise CheckpointError(f"is damaged (truncated or corrupt) and cannot be read ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}); save it again",
                                  path=path) from exc
    if isinstance(payload, dict) and payload and all(torch.is_tensor(v) for v in payload.values()):
        raise CheckpointError("is not an mmoe_annotated checkpoint (no manifest); a bare state_dict from "
                              "torch.save(model.state_dict()) loads with model.load_state_dict(...)", path=path)
    if not isinstance(payload, dict) or not isinstance(payload.get("manifest"), str):
        raise CheckpointError("is not an mmoe_annotated checkpoint, or it is damaged: it holds no manifest",
                              path=path)
    text, state, digest = payload["manifest"], payload.get("state_dict"), payload.get("sha256")
    version, written_by = _format_of(text)
    if "sha256" not in payload and version is not None and version != FORMAT_VERSION:
        raise _version_error(version, written_by, path)  # older formats kept their checksum elsewhere
    if set(payload) != {"manifest", "state_dict", "sha256"} or not isinstance(digest, str):
        raise CheckpointError(_DAMAGED.format(f"its entries are {sorted(map(str, payload))}, expected "
                                              "['manifest', 'sha256', 'state_dict']"), path=path)
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(_DAMAGED.format("its state_dict is not a dict of named tensors"), path=path)
    if digest != _digest(text, state):
        hint = ""
        if isinstance(version, int) and version > FORMAT_VERSION:
            hint = (f" (or it was written in the newer checkpoint format {version} by mmoe_annotated "
                    f"{written_by}: then upgrade mmoe_annotated)")
        raise CheckpointError(_DAMAGED.format("its contents (manifest, config, encoder or weights) do not "
                                              "match the SHA-256 checksum written with them" + hint), path=path)
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"has a manifest that is not JSON ({exc})", path=path) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError("is not an mmoe_annotated checkpoint (unknown format)", path=path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise _version_error(manifest.get("format_version"), manifest.get("package_version", "an unknown "
                                                                                          "version"), path)
    return manifest, state


def load_checkpoint(path: str | os.PathLike, *, model: MultiTaskModel | None = None,
                    device: str | torch.device | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Without ``model`` the model is rebuilt from the saved kind and config. With ``model``
    the weights are loaded into it, and its kind and config must equal the saved ones.
    ``device`` moves the model (default: CPU); ``"meta"`` and devices this torch cannot use
    raise ``ValueError`` before the file is read. Raises :class:`CheckpointError` on any
    problem with the file."""
    path = Path(path)
    target = None if device is None else resolve_device(device)  # a bad device fails before any reading
    manifest, state = _read(path)
    written_by = manifest.get("package_version", "an unknown version")
    kind = manifest.get("kind")
    extra = manifest.get("extra") or {}
    if not isinstance(extra, dict):
        raise CheckpointError(f"has a damaged extra= entry (a {type(extra).__name__}, not a dict)", path=path)
    if not isinstance(kind, str) or kind not in MODELS:
        raise CheckpointError(f"names an unknown model kind {kind!r}; known: {sorted(MODELS)}", path=path)
    try:
        config = ModelConfig.from_dict(manifest["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"has a damaged or incompatible model config ({exc})", path=path) from exc
    try:
        encoder = None if manifest.get("encoder") is None else FeatureEncoder.from_dict(manifest["encoder"])
        features = None if encoder is None else encoder.features
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"has a damaged or incompatible feature encoder ({exc})", path=path) from exc
    if encoder is not None and features != config.features:
        raise CheckpointError("holds a feature encoder that does not match its model config", path=path)
    if model is None:
        try:
            model = MODELS[kind](config)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"has a model config this version cannot build ({exc})", path=path) from exc
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
    if target is not None:
        model.to(target)
    model.eval()
    return Checkpoint(model, encoder, kind, config, str(written_by), dict(extra))
