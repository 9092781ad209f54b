"""The model's configuration and output: everything that fixes a model's shape, validated once.

Explained in chapter 6, "Towers and the whole model" (``book/06_towers.ipynb``). Every model
kind (:mod:`mmoe_annotated.model.mmoe`, :mod:`mmoe_annotated.model.ple`) is built from a
:class:`ModelConfig` and returns a :class:`ModelOutput`.

Shape letters: ``B`` batch, ``T`` tasks, ``E`` experts.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch

from ..features.encoder import FeatureEncoder
from ..features.inputs import DenseFeature, FeatureSpec, SparseFeature
from .experts import ACTIVATIONS

__all__ = ["TASK_TYPES", "ModelConfig", "ModelOutput"]

#: Task types and their losses: binary -> BCE with logits, regression -> MSE.
TASK_TYPES = ("binary", "regression")


def _is_int(value) -> bool:
    """Python or NumPy integers, not bools (``True`` is an int to Python, never a layer width)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a model's shape. Frozen and validated once, here.

    ``features`` come from a fitted :class:`~mmoe_annotated.features.encoder.FeatureEncoder`
    (``encoder.features``) or are written by hand. For :class:`SharedBottom`,
    ``expert_hidden`` is the shape of the one shared bottom and ``num_experts`` and
    ``gate_hidden`` are not used.

    One task is allowed for every model: it is the single-task baseline that multi-task
    models are compared with (Shared-Bottom with one task is a plain DNN; MMoE and OMoE with one task are the
    same single-gate mixture of experts). Comparing *multi*-task models needs ``>= 2``
    tasks, which is the default.
    """

    features: tuple[FeatureSpec, ...]
    task_names: tuple[str, ...] = ("finish", "like")
    task_types: tuple[str, ...] = ("binary", "binary")
    num_experts: int = 3
    #: CGC / PLE only (:mod:`mmoe_annotated.model.ple`): experts per task and shared experts at each
    #: level, and PLE's number of levels (DeepCTR-Torch's ``PLE`` defaults: 1, 1, 2).
    num_task_experts: int = 1
    num_shared_experts: int = 1
    num_levels: int = 2
    expert_hidden: tuple[int, ...] = (256, 128)
    gate_hidden: tuple[int, ...] = (64,)
    tower_hidden: tuple[int, ...] = (64,)
    activation: str = "relu"
    dropout: float = 0.0
    #: Std of the normal init of hidden weights and embeddings (DeepCTR-Torch: 1e-4);
    #: ``None`` keeps PyTorch's ``nn.Linear`` default for hidden weights (embeddings: 1e-4).
    init_std: float | None = 1e-4
    #: Sparse embedding gradients (only looked-up rows); Adagrad and SGD support them.
    sparse_embeddings: bool = False
    #: Seed for the initial weights; ``None`` draws from torch's global generator.
    seed: int | None = 1024

    def __post_init__(self):
        tuples = ("features", "task_names", "task_types", "expert_hidden", "gate_hidden", "tower_hidden")
        for name in tuples:
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"ModelConfig.{name} must be a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not self.features:
            raise ValueError("ModelConfig.features is empty: pass encoder.features or a list of "
                             "SparseFeature / DenseFeature")
        for f in self.features:
            if not isinstance(f, (SparseFeature, DenseFeature)):
                raise ValueError(f"ModelConfig.features must hold SparseFeature or DenseFeature, got {f!r}")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names must be unique, got {names}")
        if len(self.task_names) != len(self.task_types):
            raise ValueError(f"task_names ({len(self.task_names)}) and task_types ({len(self.task_types)}) "
                             "must have the same length")
        if len(self.task_names) < 1:
            raise ValueError("a model needs at least one task")
        if len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"task names must be unique, got {list(self.task_names)}")
        for t in self.task_types:
            if t not in TASK_TYPES:
                raise ValueError(f"unknown task type {t!r}; choose one of {TASK_TYPES}")
        if not _is_int(self.num_experts) or self.num_experts < 1:
            raise ValueError(f"num_experts must be a whole number >= 1, got {self.num_experts!r}")
        object.__setattr__(self, "num_experts", int(self.num_experts))
        for name in ("num_task_experts", "num_shared_experts", "num_levels"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("expert_hidden", "gate_hidden", "tower_hidden"):
            units = getattr(self, name)
            if any(not _is_int(u) or u < 1 for u in units):
                raise ValueError(f"ModelConfig.{name} must hold positive ints (layer widths), got {units}")
            object.__setattr__(self, name, tuple(int(u) for u in units))  # NumPy ints -> int, for JSON
        if not self.expert_hidden:
            raise ValueError("expert_hidden must have at least one layer (the expert output width D)")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init_std is not None and not float(self.init_std) > 0:
            raise ValueError(f"init_std must be positive or None, got {self.init_std}")

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def to_dict(self) -> dict:
        """JSON-safe dict; :meth:`from_dict` rebuilds the same config."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["features"] = [dict(asdict(f), type="sparse" if isinstance(f, SparseFeature) else "dense")
                         for f in self.features]
        for k in ("task_names", "task_types", "expert_hidden", "gate_hidden", "tower_hidden"):
            d[k] = list(d[k])
        return d

    def check_encoder(self, encoder: FeatureEncoder) -> None:
        """Refuse an ``encoder`` that is not the one this config was built from (``encoder.features``
        differs from :attr:`features`): its IDs would look up other values' embedding rows. The one
        comparison behind ``fit``, ``predict``, ``evaluate`` (taught and fast) and ``save_checkpoint``."""
        if not isinstance(encoder, FeatureEncoder):
            raise TypeError(f"encoder must be a FeatureEncoder, got {type(encoder).__name__}")
        theirs, mine = encoder.features, self.features
        if theirs == mine:
            return
        ours = {f.name: f for f in mine}
        diff = [f"{f.name!r}: encoder {_spec(f)} vs model {_spec(ours[f.name])}"
                for f in theirs if f.name in ours and f != ours[f.name]]
        names_e, names_m = [f.name for f in theirs], [f.name for f in mine]
        if names_e != names_m:
            diff.append(f"columns: encoder {names_e} vs model {names_m}")
        raise ValueError("the encoder does not match the model (encoder.features differs from "
                         f"model.config.features: {'; '.join(diff[:5])}{' ...' if len(diff) > 5 else ''}); "
                         "pass the encoder the model was built from (an encoder fitted on other rows "
                         "gives each ID another value's embedding row)")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        d = dict(d)
        feats = []
        for f in d.pop("features"):
            f = dict(f)
            kind = f.pop("type")
            feats.append(SparseFeature(**f) if kind == "sparse" else DenseFeature(**f))
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)}")
        return cls(features=tuple(feats), **d)


def _spec(f: FeatureSpec) -> str:
    return (f"vocab_size={f.vocab_size}, emb_dim={f.emb_dim}" if isinstance(f, SparseFeature)
            else f"dense dim={f.dim}")


class ModelOutput(NamedTuple):
    """What every model returns: ``logits`` ``(B, T)`` and ``gates`` ``(B, T, E)``."""

    logits: torch.Tensor
    gates: torch.Tensor
