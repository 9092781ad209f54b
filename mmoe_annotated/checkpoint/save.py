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
from ..train.calibration import Calibrator
from ..train.fusion import Fusion
from .files import Sink, file_kind, remove_stale_temps, write_atomically
from .verify import FORMAT, FORMAT_VERSION, digest

__all__ = ["save_checkpoint", "kind_of"]


def kind_of(model: MultiTaskModel) -> str:
    for kind, cls in MODELS.items():
        if type(model) is cls:
            return kind
    raise TypeError(f"can only save the package's models {sorted(MODELS)}, got {type(model).__name__}")


def save_checkpoint(path: str | os.PathLike, model: MultiTaskModel,
                    encoder: FeatureEncoder | None = None, *,
                    extra: dict | None = None, calibrator: Calibrator | None = None,
                    fusion: Fusion | None = None) -> Path:
    """Write ``model`` (and the fitted ``encoder`` that feeds it) to ``path``,
    atomically.

    ``extra`` is any JSON-serialisable dict (metrics, notes); it comes back as
    ``.extra``. A file replaced keeps its permission bits; a new file gets ``0o666``
    less the umask. ``calibrator`` (a fitted
    :class:`~mmoe_annotated.train.calibration.Calibrator`) and ``fusion``
    (:class:`~mmoe_annotated.train.fusion.Fusion` weights) travel as JSON in the
    manifest, under the checksum, and come back as ``.calibrator`` and ``.fusion``
    (chapter 11)."""
    path = Path(path)
    kind = kind_of(model)
    _check_encoder(encoder, model)
    old = _replaced(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    text = _manifest(kind, model, encoder, extra,
                     _ranking_parts(model, calibrator, fusion))
    payload = {"manifest": text, "state_dict": state, "sha256": digest(text, state)}
    remove_stale_temps(path)
    _write(path, payload, old)
    return path


def _check_encoder(encoder: FeatureEncoder | None, model: MultiTaskModel) -> None:
    """A saved encoder must be the one the model was built from (:meth:`ModelConfig.check_encoder`,
    the check ``fit``, ``predict`` and ``evaluate`` make too)."""
    if encoder is not None:
        model.config.check_encoder(encoder)


def _replaced(path: Path) -> os.stat_result | None:
    """The status of the file the save will replace (None: no file yet), after checking that
    ``path`` can name a checkpoint at all: not a directory, in a directory that exists, and
    not something other than a regular file."""
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
    return old


def _ranking_parts(model: MultiTaskModel, calibrator: Calibrator | None, fusion: Fusion | None) -> dict:
    """The calibrator and fusion weights as JSON, once they are checked to serve the model's tasks."""
    tasks = tuple(model.config.task_names)
    if calibrator is not None:
        if not isinstance(calibrator, Calibrator) or not calibrator.fitted:
            raise TypeError(f"calibrator must be a fitted Calibrator, got {calibrator!r}")
        if calibrator.task_names != tasks:
            raise ValueError(f"the calibrator was fitted for tasks {calibrator.task_names}, the model has {tasks}")
    if fusion is not None:
        if not isinstance(fusion, Fusion):
            raise TypeError(f"fusion must be a Fusion, got {type(fusion).__name__}")
        unknown = [t for t, _ in fusion.weights if t not in tasks]
        if unknown:
            raise ValueError(f"the fusion weights name tasks {unknown} the model does not have ({tasks})")
    return {"calibrator": None if calibrator is None else calibrator.to_dict(),
            "fusion": None if fusion is None else fusion.to_dict()}


def _manifest(kind: str, model: MultiTaskModel, encoder: FeatureEncoder | None, extra: dict | None,
              ranking: dict | None = None) -> str:
    """The manifest's JSON text: what the file is, who wrote it, and how to rebuild the model."""
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": package_version(),
        "torch_version": torch.__version__,
        "kind": kind,
        "config": model.config.to_dict(),
        "encoder": None if encoder is None else encoder.to_dict(),
        "extra": dict(extra or {}),
        **(ranking or {"calibrator": None, "fusion": None}),  # format 3
    }
    try:
        return json.dumps(manifest, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot save: the config, encoder or extra= is not JSON-serialisable ({exc})") from exc


def _write(path: Path, payload: dict, old: os.stat_result | None) -> None:
    """``payload`` written atomically (:func:`~.files.write_atomically`); a replaced file keeps
    its mode."""
    def fill(raw) -> None:
        sink = Sink(raw)
        try:
            torch.save(payload, sink)
        except RuntimeError as exc:
            if sink.error is None:
                raise
            raise sink.error from exc  # the OS's own error, not torch's "unexpected pos"

    write_atomically(path, fill, None if old is None else stat.S_IMODE(old.st_mode))
