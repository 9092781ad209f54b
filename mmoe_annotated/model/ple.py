"""CGC and PLE (Tang et al., RecSys 2020): MMoE's successors, built from the same blocks.

Explained in chapter 10, "Beyond MMoE: CGC, PLE and the seesaw" (``book/10_beyond_mmoe.ipynb``).

Progressive Layered Extraction (Tang, Liu, Zhao and Gong, "Progressive Layered Extraction (PLE):
A Novel Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020) splits
MMoE's experts into **task-specific** experts, which only their own task's gate may use, and
**shared** experts, which every task's gate may use.

* **CGC** (Customized Gate Control, §4.1): one extraction layer. Task ``k``'s gate mixes
  ``g^k(x) = w^k(x) S^k(x)`` (eq. 2) with ``w^k(x) = Softmax(W^k_g x)`` (eq. 3) and ``S^k(x)``
  the outputs of task ``k``'s own ``m_k`` experts stacked on the ``m_s`` shared experts
  (eq. 4); the task's tower reads it, ``y^k(x) = t^k(g^k(x))`` (eq. 5).
* **PLE** (§4.2): CGC layers stacked ``N`` deep. Level ``j``'s gate of task ``k`` reads the
  previous level's output of task ``k``: ``g^{k,j}(x) = w^{k,j}(g^{k,j-1}(x)) S^{k,j}(x)``
  (eq. 6), and ``y^k(x) = t^k(g^{k,N}(x))`` (eq. 7). Every level but the last also has a
  **shared gate** over **all** experts of the level, every task's and the shared ones; its
  output is what the next level's shared experts (and shared gate) read. The last level has no
  shared gate: nothing would read it.

The blocks are the package's own: each level's experts are one
:class:`~mmoe_annotated.model.experts.StackedMLP` (all ``E = T*m_k + m_s`` experts of the level at
once), the gates are :class:`~mmoe_annotated.model.gates.Gates` and the mixing is
:func:`~mmoe_annotated.model.gates.mix`: a task gate's weights are written into a row of length ``E``
with zeros at the experts the task may not use, so one batched product mixes every gate.

**Gates returned.** ``ModelOutput.gates`` is the *last level's* task gates, ``(B, T, E)`` over
all ``E`` experts of that level in the order ``[task 0's experts, task 1's experts, ...,
shared experts]``, exactly zero where task ``k`` cannot see an expert. Each row sums to 1, so
:func:`~mmoe_annotated.model.health.expert_utilization` reads it like an MMoE gate.
:meth:`PLE.all_gates` returns every level's gates, shared gates included.

Expert order, gate weights and defaults (one shared and one task expert per task, two levels)
follow DeepCTR-Torch 0.3.0's ``PLE``, whose weights copy one to one
(``tests/model/test_parity_ple.py``); the two differ where DeepCTR-Torch has a bug
(``shared_expert_num != specific_expert_num``, see that test).

Shape letters: ``B`` batch, ``I`` input width, ``E`` experts of a level, ``D`` expert output,
``T`` tasks, ``G`` gates, ``H`` hidden width.
"""
from __future__ import annotations

import torch
from torch import nn

from .experts import StackedMLP
from .gates import Gates, mix
from ..features.inputs import EncodedFeatures, InputLayer
from .config import ModelConfig, ModelOutput
from .mmoe import MultiTaskModel
from .towers import Towers

__all__ = ["PLE", "CGC", "ExtractionLevel", "RoutedGates"]


class RoutedGates(Gates):
    """:class:`~mmoe_annotated.model.gates.Gates` whose ``g``-th gate may read its own input.

    ``(B, I) -> (B, G, E)`` as before (every gate reads ``x``), or ``(B, G, I) -> (B, G, E)``:
    at PLE's levels after the first, task ``k``'s gate reads task ``k``'s output of the level
    below (eq. 6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return super().forward(x)  # (B, G, E)
        h = self.mlp(x) if self.mlp is not None else x  # (B, G, H)
        logits = torch.bmm(h.transpose(0, 1), self.out).transpose(0, 1)  # (G, B, H) @ (G, H, E) -> (B, G, E)
        return torch.softmax(logits, dim=-1)  # (B, G, E)


class ExtractionLevel(nn.Module):
    """One CGC layer: ``T*m_k + m_s`` experts, ``T`` task gates and
    (``shared_gate=True``) one shared gate over all of them.

    ``forward`` takes ``x`` ``(B, I)`` (the first level: everything reads the input) or
    the level below's outputs ``(B, T+1, I)`` (one per task, then the shared one), and
    returns this level's outputs ``(B, T+1, D)`` and gates ``(B, T+1, E)`` (task gates,
    then the shared gate), or ``(B, T, D)`` and ``(B, T, E)`` without a shared gate."""

    def __init__(self, input_dim: int, c: ModelConfig, shared_gate: bool):
        super().__init__()
        T, mk, ms = c.num_tasks, c.num_task_experts, c.num_shared_experts
        E = T * mk + ms
        self.num_tasks, self.num_experts = T, E
        self.experts = StackedMLP(input_dim, E, c.expert_hidden, c.activation,
                                  c.dropout, c.init_std)
        self.task_gates = RoutedGates(input_dim, mk + ms, T, c.gate_hidden,
                                      c.activation, c.dropout, c.init_std)
        # The paper's shared gate: over ALL E experts of the level, not only the shared
        # ones (§4.2).
        self.shared_gate = (RoutedGates(input_dim, E, 1, c.gate_hidden, c.activation,
                                        c.dropout, c.init_std)
                            if shared_gate else None)
        shared = list(range(T * mk, E))
        # sees[k]: the experts task k's gate weighs, its own m_k then the m_s shared
        # ones (eq. 4)
        sees = torch.tensor([list(range(k * mk, (k + 1) * mk)) + shared
                             for k in range(T)])  # (T, m_k + m_s)
        # reads[e]: which output of the level below expert e reads (its task's, or the
        # shared one)
        reads = torch.tensor([e // mk for e in range(T * mk)] + [T] * ms)  # (E,)
        self.register_buffer("sees", sees, persistent=False)
        self.register_buffer("reads", reads, persistent=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.num_tasks
        first = z.dim() == 2
        h = self.experts(z if first else z[:, self.reads])  # (B, E, D)
        # (B, T, m_k + m_s), eq. 3 / eq. 6's w^{k,j}
        w = self.task_gates(z if first else z[:, :T])
        B = w.shape[0]
        g = w.new_zeros(B, T, self.num_experts).scatter(
            2, self.sees.expand(B, -1, -1), w)  # (B, T, E)
        if self.shared_gate is not None:
            # (B, 1, E): over all E experts
            s = self.shared_gate(z if first else z[:, T:])
            g = torch.cat([g, s], dim=1)  # (B, T+1, E)
        # (B, T+1, D) and (B, T+1, E); without a shared gate (B, T, D) and (B, T, E)
        return mix(g, h), g


class PLE(MultiTaskModel):
    """Progressive Layered Extraction: ``config.num_levels`` CGC layers, then the task towers.

    Per level: ``config.num_task_experts`` experts per task and ``config.num_shared_experts``
    shared experts, each of shape ``config.expert_hidden``; ``config.num_experts`` is not used.
    Returns per-task logits ``(B, T)`` and the last level's task gates ``(B, T, E)`` (module
    docstring)."""

    gating = "ple"

    def _levels(self, c: ModelConfig) -> int:
        return c.num_levels

    def _build(self, c: ModelConfig) -> None:
        self.inputs = InputLayer(c.features, init_std=c.init_std or 1e-4, sparse=c.sparse_embeddings)
        L, D = self._levels(c), c.expert_hidden[-1]
        self.levels = nn.ModuleList([ExtractionLevel(self.inputs.output_dim if j == 0 else D, c, j < L - 1)
                                     for j in range(L)])
        self.towers = Towers(D, c.num_tasks, c.tower_hidden, c.activation, c.dropout, c.init_std)

    @property
    def num_experts(self) -> int:
        """Experts per level, ``T * num_task_experts + num_shared_experts`` (the gates' last axis)."""
        return self.levels[-1].num_experts

    def forward(self, ids: torch.Tensor | EncodedFeatures | None,
                dense: torch.Tensor | None = None) -> ModelOutput:
        if isinstance(ids, EncodedFeatures):
            ids, dense = ids
        z = self.inputs(ids, dense)  # (B, I)
        for level in self.levels:
            z, gates = level(z)  # (B, T+1, D) between levels, (B, T, D) after the last
        # (B, T), the last level's task gates (B, T, E)
        return ModelOutput(self.towers(z), gates)

    @torch.no_grad()
    def all_gates(self, ids: torch.Tensor | EncodedFeatures | None, dense: torch.Tensor | None = None
                  ) -> list[torch.Tensor]:
        """Every level's gates: ``(B, T+1, E)`` (task gates, then the shared gate) for each level but
        the last, ``(B, T, E)`` for the last."""
        if isinstance(ids, EncodedFeatures):
            ids, dense = ids
        z, out = self.inputs(ids, dense), []
        for level in self.levels:
            z, gates = level(z)
            out.append(gates)
        return out

    def parameter_roles(self) -> dict[str, list[nn.Parameter]]:
        """As :meth:`MultiTaskModel.parameter_roles`: embedding table, weight matrices, biases."""
        weights, biases = [], []
        for level in self.levels:
            weights.extend(level.experts.weights)
            biases.extend(level.experts.biases)
            for gate in (level.task_gates, level.shared_gate):
                if gate is None:
                    continue
                if gate.mlp is not None:
                    weights.extend(gate.mlp.weights)
                    biases.extend(gate.mlp.biases)
                weights.append(gate.out)
        if self.towers.mlp is not None:
            weights.extend(self.towers.mlp.weights)
            biases.extend(self.towers.mlp.biases)
        weights.append(self.towers.out)
        biases.append(self.towers.bias)
        roles = {"embedding": [self.inputs.table.weight] if self.inputs.table is not None else [],
                 "weights": weights, "biases": biases}
        assert sum(p.numel() for ps in roles.values() for p in ps) == sum(p.numel() for p in self.parameters())
        return roles

    def extra_repr(self) -> str:
        c = self.config
        return (f"tasks={list(c.task_names)}, levels={len(self.levels)}, experts per level="
                f"{c.num_tasks}x{c.num_task_experts} task + {c.num_shared_experts} shared, "
                f"each {list(c.expert_hidden)}, towers={list(c.tower_hidden)}")


class CGC(PLE):
    """Customized Gate Control (§4.1): PLE with one level, so no shared gate; ``num_levels`` is unused."""

    def _levels(self, c: ModelConfig) -> int:
        return 1
