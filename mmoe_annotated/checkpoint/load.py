"""Loading a checkpoint: the model rebuilt (or filled) from a file whose checksum proved it intact.

Explained in the appendix "When things go wrong" (``book/appendix_troubleshooting.ipynb``).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import NamedTuple

import torch
from torch.nn.modules.module import register_module_parameter_registration_hook

from ..features.encoder import FeatureEncoder
from ..model import MODELS
from ..model.config import ModelConfig
from ..model.mmoe import MultiTaskModel
from ..runtime import resolve_device
from ..train.calibration import Calibrator
from ..train.fusion import Fusion
from .save import kind_of
from .verify import CheckpointError, read_verified

__all__ = ["Checkpoint", "load_checkpoint"]


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns. ``model`` is in eval mode with the saved weights;
    ``calibrator`` and ``fusion`` are None when the file holds none (every format-2 file)."""

    model: MultiTaskModel
    encoder: FeatureEncoder | None
    kind: str
    config: ModelConfig
    package_version: str
    extra: dict
    calibrator: Calibrator | None = None
    fusion: Fusion | None = None


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
    manifest, state = read_verified(path)
    written_by = manifest.get("package_version", "an unknown version")
    kind, extra = _kind_and_extra(manifest, path)
    config, encoder = _config_and_encoder(manifest, path)
    if model is None:
        _check_shapes(kind, config, state, path)  # before a single weight is allocated
    model = _rebuilt(kind, config, path) if model is None else _matching(model, kind, config, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"holds weights that do not fit its config ({str(exc).splitlines()[0]} ...)",
                              path=path) from exc
    if target is not None:
        model.to(target)
    model.eval()
    calibrator, fusion = _ranking_parts(manifest, config, path)
    return Checkpoint(model, encoder, kind, config, str(written_by), dict(extra), calibrator, fusion)


def _ranking_parts(manifest: dict, config: ModelConfig, path: Path) -> tuple[Calibrator | None, Fusion | None]:
    """The calibrator and fusion weights a format-3 file may hold (a format-2 file holds neither)."""
    try:
        calibrator = None if manifest.get("calibrator") is None else Calibrator.from_dict(manifest["calibrator"])
        fusion = None if manifest.get("fusion") is None else Fusion.from_dict(manifest["fusion"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"has a damaged calibrator or fusion entry ({exc})", path=path) from exc
    if calibrator is not None and calibrator.task_names != tuple(config.task_names):
        raise CheckpointError(f"holds a calibrator for tasks {calibrator.task_names}, but its model has "
                              f"{tuple(config.task_names)}", path=path)
    return calibrator, fusion


def _kind_and_extra(manifest: dict, path: Path) -> tuple[str, dict]:
    kind = manifest.get("kind")
    extra = manifest.get("extra") or {}
    if not isinstance(extra, dict):
        raise CheckpointError(f"has a damaged extra= entry (a {type(extra).__name__}, not a dict)", path=path)
    if not isinstance(kind, str) or kind not in MODELS:
        raise CheckpointError(f"names an unknown model kind {kind!r}; known: {sorted(MODELS)}", path=path)
    return kind, extra


def _config_and_encoder(manifest: dict, path: Path) -> tuple[ModelConfig, FeatureEncoder | None]:
    """The saved model config and encoder, rebuilt from their JSON; the encoder must feed that config."""
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
    return config, encoder


class _Larger(Exception):
    """The declared model has outgrown the tensors the file holds (raised while it is being built)."""


def _check_shapes(kind: str, config: ModelConfig, state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a config whose model does not have exactly the stored tensors' names, shapes and dtypes,
    before building it: the checksum's recipe is public, so a small file can declare any size.

    The declared model is built on the meta device (shapes only, no memory). Every parameter
    of it must be one of the stored tensors, so the build stops the moment it declares more
    parameters, or more values, than the file holds (a declared depth of a million levels stops
    after as many parameters as the file has tensors)."""
    held_tensors, held_values = len(state), sum(t.numel() for t in state.values())
    declared: dict[tuple[int, str], int] = {}  # (module, name) -> values
    me = threading.get_ident()

    def count(module, name, param):
        if param is None or threading.get_ident() != me:
            return
        declared[(id(module), name)] = param.numel()
        if len(declared) > held_tensors or sum(declared.values()) > held_values:
            raise _Larger

    handle = register_module_parameter_registration_hook(count)
    try:
        with torch.device("meta"):
            skeleton = MODELS[kind](config)
    except _Larger:
        raise CheckpointError(f"declares a model larger than the weights it holds (its config asks for more "
                              f"than the {held_tensors} tensors of {held_values:,} values in the file); "
                              "nothing was built", path=path) from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"has a model config this version cannot build ({exc})", path=path) from exc
    finally:
        handle.remove()
    expected = {k: (tuple(v.shape), v.dtype) for k, v in skeleton.state_dict().items()}
    held = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    diff = ([f"missing {k}" for k in expected if k not in held]
            + [f"unexpected {k}" for k in held if k not in expected]
            + [f"{k}: stored {tuple(held[k][0])} {held[k][1]}, config {tuple(expected[k][0])} {expected[k][1]}"
               for k in expected if k in held and held[k] != expected[k]])
    if diff:
        raise CheckpointError(f"holds weights that do not fit its config ({'; '.join(diff[:4])}"
                              f"{' ...' if len(diff) > 4 else ''}); nothing was built", path=path)


def _rebuilt(kind: str, config: ModelConfig, path: Path) -> MultiTaskModel:
    """A new model of the saved kind and config (its weights are loaded next)."""
    try:
        return MODELS[kind](config)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"has a model config this version cannot build ({exc})", path=path) from exc


def _matching(model: MultiTaskModel, kind: str, config: ModelConfig, path: Path) -> MultiTaskModel:
    """The ``model=`` given, once its kind and config are the saved ones (the differences named if not)."""
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"model must be an MMoE / OMoE / SharedBottom, got {type(model).__name__}")
    if kind_of(model) != kind:
        raise CheckpointError(f"holds a {kind!r} model, but the model given is a {kind_of(model)!r}",
                              path=path)
    if model.config != config:
        mine, theirs = model.config.to_dict(), config.to_dict()
        diff = [f"{k}: checkpoint {theirs[k]!r} vs model {mine[k]!r}" for k in theirs if theirs[k] != mine[k]]
        raise CheckpointError("is a checkpoint of another config than the model given; differences: "
                              + "; ".join(diff) + ". Omit model= to rebuild the saved model", path=path)
    return model
