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

import torch
from torch import nn

from ..features.inputs import EncodedFeatures, InputLayer
from .config import ModelConfig, ModelOutput
from .experts import Experts
from .gates import Gates, mix
from .towers import Towers

__all__ = ["MultiTaskModel", "MMoE", "OMoE", "SharedBottom"]


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
        self.inputs = InputLayer(c.features, init_std=c.init_std or 1e-4,
                                 sparse=c.sparse_embeddings)
        I = self.inputs.output_dim
        num_experts = 1 if self.gating == "none" else c.num_experts
        self.experts = Experts(I, num_experts, c.expert_hidden, c.activation, c.dropout,
                               c.init_std)
        if self.gating == "none":
            self.gates = None
        else:
            num_gates = c.num_tasks if self.gating == "per_task" else 1
            self.gates = Gates(I, num_experts, num_gates, c.gate_hidden, c.activation,
                               c.dropout, c.init_std)
        self.towers = Towers(c.expert_hidden[-1], c.num_tasks, c.tower_hidden,
                             c.activation, c.dropout,
                             c.init_std)

    @property
    def num_tasks(self) -> int:
        return self.config.num_tasks

    @property
    def num_experts(self) -> int:
        return self.experts.num_experts

    def forward(self, ids: torch.Tensor | EncodedFeatures | None,
                dense: torch.Tensor | None = None) -> ModelOutput:
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
            if g.shape[1] != T:  # OMoE's one gate serves every task
                # A real copy: bmm is about 10x slower on an expanded (stride-0) view.
                g = g.repeat(1, T, 1)  # (B, T, E)
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
    """One-gate Mixture-of-Experts, the paper's ablation: the same experts, one gate for
    all tasks."""

    gating = "shared"


class SharedBottom(MultiTaskModel):
    """Shared-Bottom (Caruana 1997): one bottom network shared by all tasks, then task towers.

    ``config.expert_hidden`` is the bottom's shape; ``num_experts`` and ``gate_hidden`` are unused.
    Its ``gates`` output is ones of shape ``(B, T, 1)``."""

    gating = "none"
