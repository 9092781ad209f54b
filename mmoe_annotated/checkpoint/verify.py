"""The checkpoint file format: its manifest, its SHA-256 checksum, and reading a file that proves intact.

Explained in the appendix "When things go wrong" (``book/appendix_troubleshooting.ipynb``).
:func:`read_verified` opens only regular files, reads them with ``torch.load(weights_only=True)``
(never unpickling objects), and returns the manifest and weights only after the checksum over
both matched; every other outcome is a :class:`CheckpointError` that names the problem.
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

import torch

from ..data.schema import DataError
from ..runtime import package_version
from .files import file_kind

__all__ = ["FORMAT", "FORMAT_VERSION", "READABLE_VERSIONS", "CheckpointError", "digest", "read_verified"]

#: What the manifest calls this kind of file, and the layout version this code reads and writes.
#: Bump ``FORMAT_VERSION`` when the layout changes in a way old readers cannot follow.
FORMAT = "mmoe-annotated-checkpoint"
FORMAT_VERSION = 3  # 2: the checksum covers the manifest too; 3: optional "calibrator" and "fusion"
#: The versions this code reads: a version-2 file is a version-3 file without calibrator or fusion.
READABLE_VERSIONS = (2, 3)


class CheckpointError(DataError):
    """A checkpoint file that cannot be used: missing, damaged, of another version or another config."""


def digest(manifest: str, state: dict[str, torch.Tensor]) -> str:
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
    if not newer and written_by == package_version():  # a development build of this very version
        return CheckpointError(f"was written in the earlier checkpoint format {version!r} by a development "
                               f"build of mmoe_annotated {written_by}; this build reads format "
                               f"{FORMAT_VERSION}: save the model again", path=path)
    return CheckpointError(
        f"was written in checkpoint format {version!r} by mmoe_annotated {written_by}, but this is "
        f"mmoe_annotated {package_version()}, which reads format {FORMAT_VERSION}; "
        + ("upgrade mmoe_annotated to load it" if newer else
           f"load it with mmoe_annotated {written_by} and save it again with this version"), path=path)


#: Names torch's writer puts in every checkpoint's pickle; a near miss of one is damage, not an object.
_TORCH_NAMES = ("torch._utils._rebuild_tensor_v2", "collections.OrderedDict", "torch.FloatStorage",
                "torch.LongStorage", "torch.DoubleStorage", "torch.IntStorage", "torch.BoolStorage")


#: torch's refusals of a pickled global, in both wordings: a global it does not allow ("Unsupported
#: global: GLOBAL os.getcwd was not an allowed global") and one from a module it blocks outright
#: ("Trying to load unsupported GLOBAL os.system whose module os is blocked").
_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)")


def _misspelt(name: str) -> bool:
    return (not name.isprintable() or name.startswith("torch.")
            or bool(difflib.get_close_matches(name, _TORCH_NAMES, n=1, cutoff=0.8)))


_DAMAGED = "is damaged: {}; nothing in it can be trusted, so nothing was loaded. Copy or save it again"


def read_verified(path: Path) -> tuple[dict, dict]:
    """The manifest and weights of a checkpoint, after its checksum proved them intact."""
    with _open(path) as fh:
        payload = _torch_load(fh, path)
    if isinstance(payload, dict) and payload and all(torch.is_tensor(v) for v in payload.values()):
        raise CheckpointError("is not an mmoe_annotated checkpoint (no manifest); a bare state_dict from "
                              "torch.save(model.state_dict()) loads with model.load_state_dict(...)", path=path)
    if not isinstance(payload, dict) or not isinstance(payload.get("manifest"), str):
        raise CheckpointError("is not an mmoe_annotated checkpoint, or it is damaged: it holds no manifest",
                              path=path)
    text, state, written = payload["manifest"], payload.get("state_dict"), payload.get("sha256")
    version, written_by = _format_of(text)
    if "sha256" not in payload and version is not None and version not in READABLE_VERSIONS:
        raise _version_error(version, written_by, path)  # older formats kept their checksum elsewhere
    if set(payload) != {"manifest", "state_dict", "sha256"} or not isinstance(written, str):
        raise CheckpointError(_DAMAGED.format(f"its entries are {sorted(map(str, payload))}, expected "
                                              "['manifest', 'sha256', 'state_dict']"), path=path)
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CheckpointError(_DAMAGED.format("its state_dict is not a dict of named tensors"), path=path)
    if written != digest(text, state):
        hint = ""
        if isinstance(version, int) and version > FORMAT_VERSION:
            hint = (f" (or it was written in the newer checkpoint format {version} by mmoe_annotated "
                    f"{written_by}: then upgrade mmoe_annotated)")
        raise CheckpointError(_DAMAGED.format("its contents (manifest, config, encoder or weights) do not "
                                              "match the SHA-256 checksum written with them" + hint), path=path)
    return _manifest(text, path), state


def _torch_load(fh, path: Path):
    """The file's contents by ``torch.load(weights_only=True)``, which rebuilds tensors, numbers,
    strings, lists and dicts and nothing else; whatever it trips over is a :class:`CheckpointError`."""
    try:
        return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _GLOBAL.search(str(exc))
        if found and _misspelt(found.group(1)):  # a name torch writes, with a byte changed
            raise CheckpointError(_DAMAGED.format(f"it names {ascii(found.group(1)[:80])}, which no "
                                                  "tensor file written by torch holds"), path=path) from exc
        if found:  # a pickled object: say so, and never suggest weights_only=False
            raise CheckpointError(f"holds a Python object ({found.group(1)}); loading it could run code, so "
                                  "refusing to unpickle it (a checkpoint holds only tensors, numbers and "
                                  "strings). Only load checkpoints written by save_checkpoint", path=path) from exc
        raise CheckpointError("is not a checkpoint written by save_checkpoint, or it is damaged (truncated "
                              "or corrupt: the reader found bytes that are not a tensor file)", path=path) from exc
    except Exception as exc:  # zip or pickle damage: whatever torch's reader trips over
        raise CheckpointError(f"is damaged (truncated or corrupt) and cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}); save it again",
                              path=path) from exc


def _manifest(text: str, path: Path) -> dict:
    """The manifest, once the checksum matched: JSON, of this format, in the version this code reads."""
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"has a manifest that is not JSON ({exc})", path=path) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError("is not an mmoe_annotated checkpoint (unknown format)", path=path)
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise _version_error(manifest.get("format_version"), manifest.get("package_version", "an unknown "
                                                                                          "version"), path)
    return manifest
