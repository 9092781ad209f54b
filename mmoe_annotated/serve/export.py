"""Exporting a trained model: one graph from encoded inputs to probabilities and gates, as ONNX or
as a ``torch.export`` program, with the encoder beside it.

Explained in the appendix "Serving the ranker" (``book/appendix_serving.ipynb``).

:func:`export` wraps the model in :class:`Scorer`, which ends the graph where :func:`mm.predict
<mmoe_annotated.train.inference.predict>` ends: the sigmoid of binary tasks' logits, regression
values as they are, and the gates. The graph takes ``ids`` ``(B, F)`` int64 and ``dense``
``(B, N)`` float32, as :class:`~mmoe_annotated.features.EncodedFeatures` holds them, with a
dynamic batch size ``B``. Two formats:

* ``"onnx"``: ``torch.onnx.export(..., dynamo=True)`` (it needs ``onnxscript``), run by
  onnxruntime; the file is a protobuf, which loading never executes;
* ``"torch"``: ``torch.export.export``, saved with ``torch.export.save`` and run by
  ``torch.export.load(...).module()`` (TorchScript, the older route, is deprecated).

The fitted :class:`~mmoe_annotated.features.FeatureEncoder` travels as ``encoder.json`` (the
checkpoint's encoder format), so the folder scores raw rows; chapter 11's fitted
:class:`~mmoe_annotated.train.calibration.Calibrator` and
:class:`~mmoe_annotated.train.fusion.Fusion` weights, when given, as ``calibrator.json`` and
``fusion.json`` (their checkpoint JSON), applied when the export is loaded; ``manifest.json``
holds what the export is and every file's SHA-256 (:mod:`mmoe_annotated.serve.manifest`).

Shape letters: ``B`` batch, ``F`` sparse fields, ``N`` dense width, ``T`` tasks, ``E`` experts.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..checkpoint.save import _ranking_parts, kind_of
from ..features.encoder import FeatureEncoder
from ..model.mmoe import MultiTaskModel
from ..runtime import package_version
from ..train.calibration import Calibrator
from ..train.fusion import Fusion
from .manifest import CALIBRATOR, ENCODER, FORMAT, FORMAT_VERSION, FUSION, MODEL_FILES, write_export

__all__ = ["FORMATS", "ONNX_OPSET", "Scorer", "scorer", "export", "export_bytes", "describe", "ranking_files"]

#: The formats :func:`export` writes.
FORMATS = ("onnx", "torch")
#: The ONNX opset the graph is written in (onnxruntime 1.17 and later run it).
ONNX_OPSET = 18
#: The batch size of the example inputs the exporters trace with (any size > 1 would do: a batch
#: of one would let the exporter treat the batch axis as the constant 1).
TRACE_ROWS = 8


class Scorer(nn.Module):
    """``model`` with the last step of
    :func:`mm.predict <mmoe_annotated.train.inference.predict>`:
    ``(ids (B, F), dense (B, N)) -> (probabilities (B, T), gates (B, T, E))``.

    The model's own ``forward`` runs unchanged inside. A model without sparse or
    without dense features takes only the other input (:func:`scorer`; ``inputs``
    names them)."""

    inputs = ("ids", "dense")

    def __init__(self, model: MultiTaskModel):
        super().__init__()
        self.model = model
        binary = torch.tensor([t == "binary" for t in model.config.task_types])  # (T,)
        self.register_buffer("binary", binary, persistent=False)

    def probabilities(self, ids, dense) -> tuple[torch.Tensor, torch.Tensor]:
        logits, gates = self.model(ids, dense)  # (B, T), (B, T, E)
        return torch.where(self.binary, torch.sigmoid(logits), logits), gates

    def forward(
        self, ids: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.probabilities(ids, dense)


class _IdsOnly(Scorer):
    inputs = ("ids",)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.probabilities(ids, None)


class _DenseOnly(Scorer):
    inputs = ("dense",)

    def forward(self, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.probabilities(None, dense)


def scorer(model: MultiTaskModel) -> Scorer:
    """The :class:`Scorer` of ``model``, taking the inputs it has."""
    layer = model.inputs
    cls = Scorer if layer.num_fields and layer.dense_dim else _IdsOnly if layer.num_fields else _DenseOnly
    return cls(model).eval()


def describe(model: MultiTaskModel, encoder: FeatureEncoder) -> dict:
    """What the manifest says about the model: kind, tasks, inputs and outputs, config."""
    c = model.config
    layer = model.inputs
    inputs = []  # in the graph's order
    if layer.num_fields:
        inputs.append({"name": "ids", "dtype": "int64", "shape": ["B", layer.num_fields],
                       "columns": [f.name for f in layer.sparse_features]})
    if layer.dense_dim:
        inputs.append({"name": "dense", "dtype": "float32", "shape": ["B", layer.dense_dim],
                       "columns": [f.name for f in layer.dense_features]})
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": package_version(),
            "torch_version": torch.__version__, "kind": kind_of(model),
            "tasks": [{"name": n, "type": t} for n, t in zip(c.task_names, c.task_types)],
            "inputs": inputs, "outputs": {"probabilities": ["B", c.num_tasks],
                                          "gates": ["B", c.num_tasks, model.num_experts]},
            "raw_columns": {"sparse": list(encoder.sparse), "dense": list(encoder.dense)},
            "config": c.to_dict()}


def _check(model, encoder, formats) -> tuple[str, ...]:
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"can only export the package's models, got {type(model).__name__}")
    kind_of(model)  # a subclass of the package's models is refused by name
    if not isinstance(encoder, FeatureEncoder):
        raise TypeError("export needs the fitted FeatureEncoder the model was built from (it scores raw "
                        f"rows), got {type(encoder).__name__}")
    if encoder.features != model.config.features:
        raise ValueError("the encoder does not match the model: encoder.features differs from "
                         "model.config.features; export the encoder the model was built from")
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"format must be one of {FORMATS} (or several of them), got {formats!r}")
    return tuple(dict.fromkeys(formats))


@contextlib.contextmanager
def _quiet_exporters():
    """The exporters' chatter that says nothing about this model: torch.onnx's note that
    torchvision's operators are not registered, the dynamic axis it names once for both inputs,
    and deprecation notices from inside torch."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch._export")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"# The axis name")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _example(wrapped: Scorer, encoder: FeatureEncoder) -> tuple[torch.Tensor, ...]:
    """Example inputs of :data:`TRACE_ROWS` rows of the right dtypes and widths (ids of known values)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for name in wrapped.inputs:
        if name == "ids":
            sizes = torch.tensor([f.vocab_size for f in wrapped.model.inputs.sparse_features])  # (F,)
            out.append((torch.rand(TRACE_ROWS, len(sizes), generator=g) * sizes).long())  # (B, F)
        else:
            out.append(torch.rand(TRACE_ROWS, wrapped.model.inputs.dense_dim, generator=g))  # (B, N)
    return tuple(out)


def _dynamic(wrapped: Scorer) -> tuple[dict, ...]:
    batch = torch.export.Dim("batch", min=1)
    return tuple({0: batch} for _ in wrapped.inputs)


def _torch_program(wrapped: Scorer, example) -> bytes:
    with _quiet_exporters():
        program = torch.export.export(wrapped, example, dynamic_shapes=_dynamic(wrapped))
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
    return buffer.getvalue()


def _onnx_model(wrapped: Scorer, example) -> bytes:
    if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
        raise ImportError("format='onnx' needs onnx and onnxscript (and onnxruntime to run the file): "
                          "pip install 'mmoe-annotated[serve]'")
    with _quiet_exporters(), contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(wrapped, example, dynamo=True, input_names=list(wrapped.inputs),
                                    output_names=["probabilities", "gates"], dynamic_shapes=_dynamic(wrapped),
                                    opset_version=ONNX_OPSET, verbose=False, report=False)
    proto = program.model_proto
    if proto.ByteSize() >= 2**31:
        raise ValueError("the model is larger than 2 GB, which one ONNX file cannot hold; use format='torch'")
    return proto.SerializeToString()


def _json(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, allow_nan=False).encode()


def ranking_files(model: MultiTaskModel, calibrator: Calibrator | None,
                  fusion: Fusion | None) -> dict[str, bytes]:
    """``calibrator.json`` and ``fusion.json`` (only those given), checked to serve
    the model's tasks as a checkpoint checks them."""
    parts = _ranking_parts(model, calibrator, fusion)
    if fusion is not None and "score" in model.config.task_names:
        raise ValueError("a task named 'score' would clash with the fused score the "
                         "service returns beside the tasks; rename the task")
    names = {"calibrator": CALIBRATOR, "fusion": FUSION}
    return {names[k]: _json(v) for k, v in parts.items() if v is not None}


def export_bytes(model: MultiTaskModel, encoder: FeatureEncoder, format="onnx", *,
                 calibrator: Calibrator | None = None,
                 fusion: Fusion | None = None) -> tuple[dict, dict[str, bytes]]:
    """The manifest (without the files' checksums) and the files of an export, in memory:
    what :func:`export` writes, and what the service runs when it is given a checkpoint."""
    formats = _check(model, encoder, format)
    extra = ranking_files(model, calibrator, fusion)
    model = copy.deepcopy(model).cpu().eval()  # the caller's model keeps its device and mode
    wrapped = scorer(model)
    example = _example(wrapped, encoder)
    files = {ENCODER: _json(encoder.to_dict()), **extra}
    manifest = describe(model, encoder)
    manifest["formats"] = {}
    for fmt in formats:
        if fmt == "onnx":
            files[MODEL_FILES[fmt]] = _onnx_model(wrapped, example)
            manifest["formats"][fmt] = {"file": MODEL_FILES[fmt], "opset": ONNX_OPSET}
        else:
            files[MODEL_FILES[fmt]] = _torch_program(wrapped, example)
            manifest["formats"][fmt] = {"file": MODEL_FILES[fmt]}
    return manifest, files


def export(model: MultiTaskModel, encoder: FeatureEncoder, path: str | os.PathLike, format="onnx", *,
           calibrator: Calibrator | None = None, fusion: Fusion | None = None) -> Path:
    """Export ``model`` and its fitted ``encoder`` into the folder ``path`` and return it.

    ``format`` is ``"onnx"``, ``"torch"`` or both (``("onnx", "torch")``). The folder receives
    the model file of each format (``model.onnx``, ``model.pt2``), ``encoder.json``, a fitted
    ``calibrator`` as ``calibrator.json`` and ``fusion`` weights as ``fusion.json`` (chapter 11;
    the loaded export calibrates its probabilities and fuses them into one score), and
    ``manifest.json``, each written atomically; an earlier export in the folder is replaced, and a
    folder that holds other files is refused. Load it with
    :func:`~mmoe_annotated.serve.load_export`, or serve it with ``python -m mmoe_annotated.serve
    --model PATH``."""
    manifest, files = export_bytes(model, encoder, format, calibrator=calibrator, fusion=fusion)
    path = Path(path)
    write_export(path, manifest, files)
    return path
