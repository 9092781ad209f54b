"""Loading an export: its files verified, then run by onnxruntime or by the ``torch.export`` program.

Explained in the appendix "Serving the ranker" (``book/appendix_serving.ipynb``).

:func:`load_export` reads the folder :func:`~mmoe_annotated.serve.export` wrote, checks every file
against the manifest (:func:`~mmoe_annotated.serve.manifest.read_verified`) and builds the runtime
from the very bytes it checked. :meth:`Exported.predict` then scores raw rows (a DataFrame) as
:func:`mm.predict <mmoe_annotated.train.inference.predict>` does: the same encoder, the same
probabilities, passed through the export's calibrator when it carries one (chapter 11's
:class:`~mmoe_annotated.train.calibration.Calibrator`, the very numbers of
``calibrator.transform(mm.predict(...))``); :meth:`Exported.fused` turns them into the ranking
score of its :class:`~mmoe_annotated.train.fusion.Fusion` weights. A torch program is also checked to hold nothing that ``torch.export.load`` would
unpickle (its tensors are raw bytes), since that loader falls back to full unpickling for
anything else.

Shape letters: ``B`` batch, ``F`` sparse fields, ``N`` dense width, ``T`` tasks, ``E`` experts.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..checkpoint import load_checkpoint
from ..features.encoder import FeatureEncoder
from ..features.inputs import EncodedFeatures
from ..model.config import ModelConfig
from ..train.calibration import Calibrator
from ..train.fusion import Fusion
from .export import FORMATS, _quiet_exporters, export_bytes
from .manifest import CALIBRATOR, ENCODER, FUSION, ExportError, file_entry, manifest_digest, read_verified

__all__ = ["Exported", "load_export"]


class Exported:
    """A verified export, ready to score. ``runtime`` is ``"onnx"`` or ``"torch"``; ``checksum``
    is the export's SHA-256 (the manifest's); ``tasks`` the task names, in output order;
    ``calibrator`` and ``fusion`` chapter 11's, or None when the export carries none."""

    def __init__(self, manifest: dict, checksum: str, encoder: FeatureEncoder, runtime: str, model_bytes: bytes,
                 *, path: Path | None = None, threads: int | None = None,
                 calibrator: Calibrator | None = None, fusion: Fusion | None = None):
        self.manifest, self.checksum, self.encoder, self.runtime, self.path = manifest, checksum, encoder, runtime, path
        self.calibrator, self.fusion = calibrator, fusion
        self.kind = manifest["kind"]
        self.tasks = tuple(t["name"] for t in manifest["tasks"])
        self.inputs = tuple(i["name"] for i in manifest["inputs"])  # ("ids", "dense"), or one of them
        where = path if path is not None else "the export"
        try:
            self._run = (_onnx_runner(model_bytes, threads) if runtime == "onnx"
                         else _torch_runner(model_bytes, where))
        except (ExportError, ImportError):
            raise
        except Exception as exc:  # the runtime could not build the graph
            raise ExportError(f"holds a {runtime} model that {runtime} cannot load ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else 'no detail'})",
                              path=where) from exc

    def score(self, x: EncodedFeatures, calibrated: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities ``(B, T)`` (calibrated when the export carries a calibrator, unless
        ``calibrated=False``) and gates ``(B, T, E)`` of encoded rows (``B >= 1``)."""
        arrays = [np.ascontiguousarray(x.ids.numpy(), dtype=np.int64) if name == "ids"
                  else np.ascontiguousarray(x.dense.numpy(), dtype=np.float32) for name in self.inputs]
        probabilities, gates = self._run(arrays)  # (B, T), (B, T, E)
        if calibrated and self.calibrator is not None:
            probabilities = self.calibrator.transform(probabilities)  # (B, T) float64
        return probabilities, gates

    def fused(self, probabilities) -> np.ndarray | None:
        """The ranking score ``(B,)`` of probabilities ``(B, T)`` by the export's fusion
        weights, or None when it carries none."""
        return None if self.fusion is None else self.fusion.score(probabilities, self.tasks)

    def predict(self, df: pd.DataFrame, batch_size: int = 8192, calibrated: bool = True) -> np.ndarray:
        """Probabilities ``(M, T)`` of raw rows, encoded with the export's encoder (calibrated as
        :meth:`score` says)."""
        x = self.encoder.transform(df)
        if len(x) == 0:
            return np.zeros((0, len(self.tasks)), dtype=np.float32)
        return np.concatenate([self.score(x.index(slice(s, s + batch_size)), calibrated)[0]
                               for s in range(0, len(x), batch_size)])

    def metadata(self) -> dict:
        """What the service's ``GET /metadata`` returns."""
        m = self.manifest
        return {"kind": self.kind, "tasks": m["tasks"], "package_version": m["package_version"],
                "checksum": self.checksum, "runtime": self.runtime, "format_version": m["format_version"],
                "formats": sorted(m["formats"]), "inputs": m["inputs"], "columns": m["raw_columns"],
                "calibrated": self.calibrator is not None,
                "calibration": None if self.calibrator is None else self.calibrator.method,
                "fusion": None if self.fusion is None else self.fusion.to_dict()}

    def __repr__(self) -> str:
        return f"Exported(kind={self.kind!r}, tasks={list(self.tasks)}, runtime={self.runtime!r}, " \
               f"checksum={self.checksum[:12]}...)"


def _onnx_runner(data: bytes, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("the ONNX runtime needs onnxruntime: pip install 'mmoe-annotated[serve]'") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(arrays):
        probabilities, gates = session.run(["probabilities", "gates"], dict(zip(names, arrays)))
        return probabilities, gates

    return run


def _check_no_pickles(data: bytes, where) -> None:
    """Refuse a torch program that holds anything ``torch.export.load`` would unpickle with
    ``weights_only=False``: tensors marked ``use_pickle``, or a pickle that only loads that way."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        for name in names:
            if name.endswith("_config.json"):
                config = json.loads(archive.read(name)).get("config", {})
                if any(isinstance(v, dict) and v.get("use_pickle") for v in config.values()):
                    raise ExportError(f"holds a torch program whose {name.rsplit('/', 1)[-1]} stores tensors as "
                                      "pickles, which loading could run as code; refusing it", path=where)
            elif name.endswith(".pt"):
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"holds a torch program that is not a plain torch.export archive ({type(exc).__name__}); "
                          "refusing it", path=where) from exc


def _torch_runner(data: bytes, where):
    _check_no_pickles(data, where)
    with _quiet_exporters():
        module = torch.export.load(io.BytesIO(data)).module()

    @torch.inference_mode()
    def run(arrays):
        probabilities, gates = module(*(torch.from_numpy(a) for a in arrays))
        return probabilities.numpy(), gates.numpy()

    return run


def _choose_runtime(manifest: dict, runtime: str | None, where) -> str:
    have = sorted(manifest.get("formats") or {})
    if runtime is None:
        return "onnx" if "onnx" in have else "torch"
    if runtime not in FORMATS:
        raise ValueError(f"runtime must be one of {FORMATS}, got {runtime!r}")
    if runtime not in have:
        raise ExportError(f"holds no {runtime} model (it holds {have}); export it with format={runtime!r}, "
                          f"or serve it with runtime={have[0]!r}", path=where)
    return runtime


def _encoder(data: bytes, manifest: dict, where) -> FeatureEncoder:
    try:
        encoder = FeatureEncoder.from_dict(json.loads(data))
        features = encoder.features
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError) as exc:
        raise ExportError(f"holds an encoder this version cannot read ({exc})", path=where) from exc
    try:
        config = ModelConfig.from_dict(manifest["config"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ExportError(f"holds a model config this version cannot read ({exc})", path=where) from exc
    if features != config.features:
        raise ExportError("holds an encoder that does not match its model", path=where)
    return encoder


def _ranking(files: dict[str, bytes], manifest: dict, where: Path) -> tuple[Calibrator | None, Fusion | None]:
    """The calibrator and fusion weights a format-2 export may carry, checked against its tasks."""
    tasks = tuple(t["name"] for t in manifest["tasks"])
    out = []
    for name, cls in ((CALIBRATOR, Calibrator), (FUSION, Fusion)):
        if name not in files:
            out.append(None)
            continue
        try:
            obj = cls.from_dict(json.loads(files[name]))
            names = obj.task_names if cls is Calibrator else tuple(t for t, _ in obj.weights)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ExportError(f"holds a {name[:-5]} this version cannot read ({exc})", path=where / name) from exc
        if (names != tasks) if cls is Calibrator else not set(names) <= set(tasks):
            raise ExportError(f"is for tasks {list(names)}, but the model has {list(tasks)}", path=where / name)
        out.append(obj)
    return out[0], out[1]


def load_export(path: str | os.PathLike, runtime: str | None = None, *, threads: int | None = None) -> Exported:
    """The export folder at ``path``, verified and loaded for ``runtime`` (``"onnx"`` or ``"torch"``;
    default: ONNX when the folder holds it). ``threads`` sets onnxruntime's intra-op threads (torch
    uses ``torch.set_num_threads``). Raises :class:`~mmoe_annotated.serve.ExportError` for any
    problem with the files; nothing is built from a file before its checksum matched."""
    path = Path(path)
    manifest, checksum, _ = read_verified(path, names=[])
    runtime = _choose_runtime(manifest, runtime, path)
    model_file = manifest["formats"][runtime]["file"]
    ranking = [n for n in (CALIBRATOR, FUSION) if n in manifest["files"]]  # format 2, when exported with them
    manifest, second, files = read_verified(path, names=[ENCODER, model_file, *ranking])
    if second != checksum:  # another export was written in between: the files match the second manifest
        raise ExportError("was replaced by another export while it was read; load it again", path=path)
    encoder = _encoder(files[ENCODER], manifest, path / ENCODER)
    calibrator, fusion = _ranking(files, manifest, path)
    return Exported(manifest, checksum, encoder, runtime, files[model_file], path=path, threads=threads,
                    calibrator=calibrator, fusion=fusion)


def from_checkpoint(path: str | os.PathLike, runtime: str | None = None, *, threads: int | None = None) -> Exported:
    """A checkpoint (:func:`mm.save_checkpoint <mmoe_annotated.checkpoint.save_checkpoint>`, verified by
    :func:`~mmoe_annotated.checkpoint.load_checkpoint`) exported in memory for ``runtime`` (default ONNX),
    with the calibrator and fusion weights a format-3 checkpoint carries."""
    ckpt = load_checkpoint(path)
    if ckpt.encoder is None:
        raise ExportError("holds no feature encoder, so it cannot score raw rows; save it with its encoder",
                          path=path)
    runtime = runtime or "onnx"
    manifest, files = export_bytes(ckpt.model, ckpt.encoder, runtime, calibrator=ckpt.calibrator, fusion=ckpt.fusion)
    manifest = dict(manifest, files={name: file_entry(data) for name, data in sorted(files.items())})
    return Exported(manifest, manifest_digest(manifest), ckpt.encoder, runtime, files[manifest["formats"][runtime]["file"]],
                    path=Path(path), threads=threads, calibrator=ckpt.calibrator, fusion=ckpt.fusion)
