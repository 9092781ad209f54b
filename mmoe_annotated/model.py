"""The models: MMoE, and its two ablations OMoE and Shared-Bottom, built from the same parts.

Explained in chapter 6, "Towers and the whole model" (``book/06_towers.ipynb``); the
paper's view of the three is in chapter 1 (``book/01_paper.ipynb``).

=============  ==========================  =================================
model          experts                     gates
=============  ==========================  =================================
Shared-Bottom  one shared bottom network    none (every task reads the bottom)
OMoE           ``E`` experts               one gate shared by all tasks
MMoE           ``E`` experts               one gate per task
=============  ==========================  =================================

The paper's equations: Shared-Bottom is Eq. 1 (§3.1, ``y_k = h^k(f(x))``); OMoE puts the
mixture of Eq. 5 (§4.1) in place of ``f``; MMoE is Eq. 6-8 (§4.2, ``y_k = h^k(f^k(x))`` with a
gate ``g^k`` per task). ``MultiTaskModel.forward`` computes them in that order.

All three take ``(ids, dense)`` and return :class:`ModelOutput`: per-task **logits**
``(B, T)`` and the gate weights ``(B, T, E)`` (for Shared-Bottom, ones of shape
``(B, T, 1)``). The defaults are DeepCTR-Torch's ``MMOE`` defaults, so the tutorial's
example translates one to one; ``gate_hidden=()`` gives the paper's linear gate.

Shape letters: ``B`` batch, ``F`` sparse fields, ``N`` dense width, ``I`` input width,
``E`` experts, ``D`` expert output, ``G`` gates, ``T`` tasks.
"""
from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple, Sequence

import torch
from torch import nn

from .experts import ACTIVATIONS, Experts
from .inputs import DenseFeature, EncodedFeatures, FeatureSpec, InputLayer, SparseFeature
from .gates import Gates, mix
from .towers import Towers

__all__ = ["TASK_TYPES", "ModelConfig", "ModelOutput", "MultiTaskModel", "MMoE", "OMoE", "SharedBottom",
           "CGC", "PLE", "build_model", "MODELS"]

#: Task types and their losses: binary -> BCE with logits, regression -> MSE.
TASK_TYPES = ("binary", "regression")


def _is_int(value) -> bool:
    """Python or NumPy integers, not bools (``True`` is an int to Python, never a layer width)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a model's shape. Frozen and validated once, here.

    ``features`` come from a fitted :class:`~mmoe_annotated.features.FeatureEncoder`
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
    #: CGC / PLE only (:mod:`mmoe_annotated.ple`): experts per task and shared experts at each
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


class ModelOutput(NamedTuple):
    """What every model returns: ``logits`` ``(B, T)`` and ``gates`` ``(B, T, E)``."""

    logits: torch.Tensor
    gates: torch.Tensor


class MultiTaskModel(nn.Module):
    """Input layer -> experts -> gates -> mixing -> towers. Subclasses choose the gates."""

    #: How many gates: "per_task" (MMoE), "shared" (OMoE) or "none" (Shared-Bottom).
    gating = "per_task"

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"expected a ModelConfig, got {type(config).__name__}")
        self.config = config
        generator_state = torch.random.fork_rng(devices=[]) if config.seed is not None else None
        if generator_state is not None:
            generator_state.__enter__()
            torch.manual_seed(config.seed)
        try:
            self._build(config)
        finally:
            if generator_state is not None:
                generator_state.__exit__(None, None, None)

    def _build(self, c: ModelConfig) -> None:
        self.inputs = InputLayer(c.features, init_std=c.init_std or 1e-4, sparse=c.sparse_embeddings)
        I = self.inputs.output_dim
        num_experts = 1 if self.gating == "none" else c.num_experts
        self.experts = Experts(I, num_experts, c.expert_hidden, c.activation, c.dropout, c.init_std)
        if self.gating == "none":
            self.gates = None
        else:
            num_gates = c.num_tasks if self.gating == "per_task" else 1
            self.gates = Gates(I, num_experts, num_gates, c.gate_hidden, c.activation, c.dropout, c.init_std)
        self.towers = Towers(c.expert_hidden[-1], c.num_tasks, c.tower_hidden, c.activation, c.dropout,
                             c.init_std)

    @property
    def num_tasks(self) -> int:
        return self.config.num_tasks

    @property
    def num_experts(self) -> int:
        return self.experts.num_experts

    def forward(self, ids: torch.Tensor | EncodedFeatures | None, dense: torch.Tensor | None = None) -> ModelOutput:
        if isinstance(ids, EncodedFeatures):
            ids, dense = ids
        x = self.inputs(ids, dense)  # (B, I)
        h = self.experts(x)  # (B, E, D)
        B, T = x.shape[0], self.num_tasks
        if self.gates is None:
            g = h.new_ones(B, T, 1)  # (B, T, 1): every task reads the one bottom
            z = h.expand(B, T, h.shape[-1])  # (B, T, D)
        else:
            g = self.gates(x)  # (B, G, E): G = T for MMoE, 1 for OMoE
            if g.shape[1] != T:  # OMoE's one gate serves every task; a real copy, since bmm is
                g = g.repeat(1, T, 1)  # about 10x slower on an expanded (stride-0) view. (B, T, E)
            z = mix(g, h)  # (B, T, D)
        return ModelOutput(self.towers(z), g)  # (B, T), (B, T, E)

    # -- parameter roles (for L2 and for the book), never chosen by name strings --
    def parameter_roles(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``embedding`` (the table), ``weights`` (every weight matrix of
        experts, gates and towers) and ``biases``. L2 is chosen by these roles."""
        blocks = [m for m in (self.experts, self.gates, self.towers) if m is not None]
        weights, biases = [], []
        for block in blocks:
            mlp = block if isinstance(block, Experts) else block.mlp
            if mlp is not None:
                weights.extend(mlp.weights)
                biases.extend(mlp.biases)
            if not isinstance(block, Experts):
                weights.append(block.out)
        biases.append(self.towers.bias)
        roles = {"embedding": [self.inputs.table.weight] if self.inputs.table is not None else [],
                 "weights": weights, "biases": biases}
        assert sum(p.numel() for ps in roles.values() for p in ps) == sum(p.numel() for p in self.parameters())
        return roles

    def num_parameters(self, include_embedding: bool = True) -> int:
        roles = self.parameter_roles()
        return sum(p.numel() for role, ps in roles.items() for p in ps
                   if include_embedding or role != "embedding")

    def extra_repr(self) -> str:
        c = self.config
        return (f"tasks={list(c.task_names)}, experts={self.num_experts}x{list(c.expert_hidden)}, "
                f"gates={self.gating}, towers={list(c.tower_hidden)}")


class MMoE(MultiTaskModel):
    """Multi-gate Mixture-of-Experts (Ma et al., KDD 2018): ``E`` shared experts, one softmax
    gate per task. Explained in chapters 4-6."""

    gating = "per_task"


class OMoE(MultiTaskModel):
    """One-gate Mixture-of-Experts, the paper's ablation: the same experts, one gate for all tasks."""

    gating = "shared"


class SharedBottom(MultiTaskModel):
    """Shared-Bottom (Caruana 1997): one bottom network shared by all tasks, then task towers.

    ``config.expert_hidden`` is the bottom's shape; ``num_experts`` and ``gate_hidden`` are unused.
    Its ``gates`` output is ones of shape ``(B, T, 1)``."""

    gating = "none"


from .ple import CGC, PLE  # noqa: E402  (built on MultiTaskModel above; chapter 10)

MODELS = {"mmoe": MMoE, "omoe": OMoE, "shared_bottom": SharedBottom, "cgc": CGC, "ple": PLE}


def build_model(kind: str, config: ModelConfig) -> MultiTaskModel:
    """``build_model("mmoe" | "omoe" | "shared_bottom" | "cgc" | "ple", config)``."""
    try:
        return MODELS[kind](config)
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(MODELS)}") from None
