"""The export folder's format: a manifest with every file's SHA-256, written atomically, checked
before anything loads.

Explained in the appendix "Serving the ranker" (``book/appendix_serving.ipynb``), beside the
checkpoint format of :mod:`mmoe_annotated.checkpoint`, whose promises it keeps:

* **A crash never leaves a half-written file in place.** Every file is written into a temporary
  file beside it, flushed to disk and renamed over the target
  (:mod:`mmoe_annotated.checkpoint.files`); the manifest goes last. A reader sees the old export,
  the new one, or (between two renames) files that do not match the manifest, which it refuses.
* **A damaged export never loads.** ``manifest.json`` names each file with its size and SHA-256,
  and carries a SHA-256 over the manifest itself (format, versions, model kind, tasks, input
  widths, the files' checksums): that one checksum stands for the whole export, and is what the
  service reports. :func:`read_verified` reads each file once into memory, checks it, and hands
  on exactly the bytes it checked.
* **Problems are named.** Every refusal is an :class:`ExportError` (a
  :class:`~mmoe_annotated.checkpoint.CheckpointError`) that says which file and what is wrong.

The checksum catches damage (a truncated copy, a flipped byte, an edited vocabulary), not a
forgery: whoever can rewrite the files can rewrite the manifest too. Only serve exports you made.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from ..checkpoint.files import file_kind, remove_stale_temps, write_all, write_atomically
from ..checkpoint.verify import CheckpointError
from ..runtime import package_version

__all__ = ["FORMAT", "FORMAT_VERSION", "READS", "MANIFEST", "ENCODER", "CALIBRATOR", "FUSION", "MODEL_FILES",
           "ExportError", "canonical", "manifest_digest", "write_export", "read_verified"]

#: What the manifest calls this kind of folder, and the layout version this code reads and writes.
FORMAT = "mmoe-annotated-export"
FORMAT_VERSION = 2
#: The layout versions this code reads: 1 (graph and encoder), 2 (also an optional calibrator and
#: fusion weights, as JSON beside the graph). A format-1 export reads as before, with neither.
READS = (1, 2)
#: The manifest's file name, the encoder's, and the model file of each format.
MANIFEST = "manifest.json"
ENCODER = "encoder.json"
#: Chapter 11's fitted calibrator and fusion weights (format 2, each only when exported with one).
CALIBRATOR = "calibrator.json"
FUSION = "fusion.json"
MODEL_FILES = {"onnx": "model.onnx", "torch": "model.pt2"}
#: A manifest is a few kilobytes; anything far larger is not one.
MAX_MANIFEST_BYTES = 1 << 20


class ExportError(CheckpointError):
    """An export folder that cannot be served: missing, damaged, or of another format version."""


def canonical(manifest: dict) -> bytes:
    """The manifest as the bytes its checksum covers: JSON with sorted keys and no spaces."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def manifest_digest(manifest: dict) -> str:
    """SHA-256 over the format's name and the canonical manifest (which holds every file's SHA-256)."""
    return hashlib.sha256(FORMAT.encode() + b"|" + canonical(manifest)).hexdigest()


def file_entry(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def _raise_clearly(exc: OSError, path: Path):
    """The operating system's error again, saying which export file and what to do."""
    if isinstance(exc, PermissionError):
        raise PermissionError(exc.errno, f"cannot write the export file {path}: no permission to write in "
                              f"{path.parent} ({exc.strerror})", str(path)) from exc
    raise OSError(exc.errno, f"cannot write the export file {path}: {exc.strerror}; nothing was replaced",
                  str(path)) from exc


def _write_atomically(path: Path, data: bytes) -> None:
    """``data`` into a temporary file beside ``path``, flushed to disk, then renamed over it."""
    remove_stale_temps(path)
    write_atomically(path, lambda raw: write_all(raw, data), clearly=_raise_clearly)


def _prepare_folder(folder: Path) -> None:
    """``folder`` exists afterwards, and is new, empty, or an earlier export (never other files)."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder; an export is a folder of files: "
                                 f"give a new folder's name")
    if not folder.parent.is_dir():
        raise FileNotFoundError(f"{folder.parent} does not exist; create it first")
    folder.mkdir(exist_ok=True)
    ours = {MANIFEST, ENCODER, CALIBRATOR, FUSION, *MODEL_FILES.values()}
    others = sorted(p.name for p in folder.iterdir() if p.name not in ours and not p.name.endswith(".tmp"))
    if others:
        raise FileExistsError(f"{folder} holds files that are not part of an export ({others[:5]}); "
                              "give an empty or a new folder")


def write_export(folder: Path, manifest: dict, files: dict[str, bytes]) -> str:
    """Write ``files`` and then the manifest (with their checksums added) into ``folder``; remove
    the model file of a format (and a calibrator or fusion file) an earlier export there had and
    this one has not. Returns the export's checksum."""
    folder = Path(folder)
    _prepare_folder(folder)
    manifest = dict(manifest, files={name: file_entry(data) for name, data in sorted(files.items())})
    checksum = manifest_digest(manifest)
    for name, data in files.items():
        _write_atomically(folder / name, data)
    text = json.dumps({"manifest": manifest, "sha256": checksum}, indent=1, sort_keys=True, allow_nan=False)
    _write_atomically(folder / MANIFEST, (text + "\n").encode("ascii"))
    for name in {CALIBRATOR, FUSION, *MODEL_FILES.values()} - set(files):
        try:
            os.unlink(folder / name)
        except FileNotFoundError:
            pass
    if hasattr(os, "O_DIRECTORY"):  # the renames themselves reach the disk
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
    return checksum


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

_DAMAGED = "is damaged: {}; nothing in it can be trusted, so nothing was loaded. Export the model again"


def _read_file(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file (never blocking on a FIFO), or an :class:`ExportError` saying why not."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ExportError("is missing from the export folder", path=path) from None
    except PermissionError as exc:
        raise ExportError(f"cannot be read: permission denied ({exc.strerror})", path=path) from exc
    except OSError as exc:
        raise ExportError(f"cannot be opened ({exc.strerror})", path=path) from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ExportError(f"is a {file_kind(st.st_mode)}, not a regular file", path=path)
        if limit is not None and st.st_size > limit:
            raise ExportError(f"is {st.st_size} bytes, far larger than a manifest ({limit} at most)", path=path)
        try:
            return fh.read()
        except OSError as exc:
            raise ExportError(f"cannot be read ({exc.strerror})", path=path) from exc


def _checked_manifest(folder: Path) -> tuple[dict, str]:
    """The manifest, once its own checksum matched, and that checksum."""
    path = folder / MANIFEST
    raw = _read_file(path, MAX_MANIFEST_BYTES)
    try:
        outer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ExportError(_DAMAGED.format("it is not JSON"), path=path) from None
    if not isinstance(outer, dict) or set(outer) != {"manifest", "sha256"} or not isinstance(
            outer.get("manifest"), dict) or not isinstance(outer.get("sha256"), str):
        raise ExportError(_DAMAGED.format("it does not hold a manifest and its sha256"), path=path)
    manifest = outer["manifest"]
    if manifest.get("format") != FORMAT:
        raise ExportError(f"is not an mmoe_annotated export manifest (format {manifest.get('format')!r})",
                          path=path)
    try:
        ok = manifest_digest(manifest) == outer["sha256"]
    except (TypeError, ValueError):
        ok = False
    version, written_by = manifest.get("format_version"), manifest.get("package_version", "an unknown version")
    if not ok:
        hint = (f" (or it was written in the newer export format {version} by mmoe_annotated {written_by}: "
                "then upgrade mmoe_annotated)" if isinstance(version, int) and version > max(READS) else "")
        raise ExportError(_DAMAGED.format("its contents do not match the SHA-256 written with them" + hint),
                          path=path)
    if version not in READS or isinstance(version, bool):
        raise ExportError(f"was written in export format {version!r} by mmoe_annotated {written_by}; this is "
                          f"mmoe_annotated {package_version()}, which reads formats {list(READS)}: export the "
                          "model again with this version", path=path)
    files = manifest.get("files")
    if not isinstance(files, dict) or ENCODER not in files or not any(f in files for f in MODEL_FILES.values()):
        raise ExportError(_DAMAGED.format("its manifest lists no encoder or no model file"), path=path)
    return manifest, outer["sha256"]


def read_verified(folder, names: list[str] | None = None) -> tuple[dict, str, dict[str, bytes]]:
    """The manifest, the export's checksum and the bytes of the files ``names`` (default: all the
    manifest lists), each read once and compared with its size and SHA-256 in the manifest."""
    folder = Path(folder)
    if not folder.exists():
        raise ExportError("no such export folder", path=folder)
    if not folder.is_dir():
        raise ExportError("is a file, not an export folder (mm.export writes a folder with manifest.json; "
                          "a checkpoint loads with mm.load_checkpoint)", path=folder)
    manifest, checksum = _checked_manifest(folder)
    files = manifest["files"]
    out = {}
    for name in (sorted(files) if names is None else names):
        entry = files.get(name)
        if entry is None:
            raise ExportError(f"holds no {name} (its manifest lists {sorted(files)})", path=folder)
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise ExportError(_DAMAGED.format(f"its manifest names a file outside the folder ({name!r})"),
                              path=folder / MANIFEST)
        data = _read_file(folder / name)
        if not isinstance(entry, dict) or len(data) != entry.get("bytes"):
            raise ExportError(_DAMAGED.format(f"it is {len(data)} bytes, the manifest says "
                                              f"{entry.get('bytes') if isinstance(entry, dict) else '?'}"),
                              path=folder / name)
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise ExportError(_DAMAGED.format("its bytes do not match the SHA-256 in manifest.json"),
                              path=folder / name)
        out[name] = data
    return manifest, checksum, out
