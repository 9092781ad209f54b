"""Prediction through one fused forward pass: the same numbers as ``model.forward``, faster.

Part of the opt-in fast wing (:mod:`mmoe_annotated.fast`).

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``).

:meth:`MultiTaskModel.forward <mmoe_annotated.model.MultiTaskModel.forward>` is the model the
chapters explain: experts, gates, mixing and towers as modules that autograd can differentiate.
When no gradient is wanted (:func:`mmoe_annotated.fast.predict` and
:func:`mmoe_annotated.fast.evaluate`), :func:`forward` computes **the same numbers**
(``tests/fast/test_fast.py`` checks it for every kind of model, gate, tower and activation) with
less work around the matrix multiplies:

* **contiguous activations**: every hidden activation is a contiguous ``(B, H)`` matrix, where
  the module path moves between ``(B, S, H)`` and ``(S, B, H)`` and pays strided copies;
* **one matrix multiply per expert** in the deeper layers instead of one batched multiply over
  all experts: with 3 experts on 2 threads ``bmm`` splits the batch of 3 unevenly between the
  threads, while each plain ``mm`` uses both;
* **every gate's final map in one matrix multiply**, with the maps side by side on a
  block-diagonal matrix, and **the gates computed transposed**, ``(G, E, B)``: a softmax over
  three experts along the rows of ``(B, G, E)``, and a matrix multiply with only ``G*E``
  output columns, both run far below the machine's speed;
* **mixing as a few multiply-adds** of whole ``(B, D)`` expert outputs, each scaled by its gate
  weights (``G*E`` of them), instead of :func:`~mmoe_annotated.model.gates.mix`'s batched product, a
  ``(T, E) @ (E, D)`` per row, and with no copy of the experts' outputs into one ``(B, E, D)``
  tensor;
* **built once per** :func:`batches`, **not once per batch**: the shared first layer's weight
  matrix, the block-diagonal gate map, each network's own weight matrices (split out of the
  stacked parameters), and every working tensor (reused by each batch of the
  same size, so a long prediction does not allocate and free them again and again);
* **in-place activations**, since nothing is kept for a backward pass;
* **on a GPU, one CUDA graph** (:func:`~mmoe_annotated.fast.graphs.graphed`): at batch 256 a GPU finishes each of the pass's
  thirty or so kernels faster than Python can launch the next, so the pass is captured once and
  each batch replays it with one launch (plus the copies of its inputs and outputs).

The first layers of all experts and all gates read the input in **one** matrix multiply
(in training, :class:`~mmoe_annotated.model.experts.StackedMLP` makes one for all experts and one
for all gates). Training keeps the module path and autograd: a hand-written backward was measured
too, and it was no faster at batch 256 or 4096 on a CPU of two cores, where the matrix multiplies take
most of the step.

**Guarded by numbers.** Since the pass computes the taught model again, an edit to the taught
code would leave it computing the old one: :func:`mmoe_annotated.fast.guard.agrees` runs both on a
few rows of the caller's input, once per model and state of its weights and code, and the wing's
``predict``, ``evaluate`` and ``gate_weights`` run ``model.forward`` (with a warning) wherever the
two disagree. :func:`supports` only says whether the pass can compute a model of this kind at all.

Shape letters: ``B`` batch, ``I`` input width, ``E`` experts, ``G`` gates, ``T`` tasks,
``H`` a hidden width, ``D`` expert output width, ``C`` the columns of the shared first layer.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..model.experts import Experts
from ..model.config import ModelOutput
from ..model.mmoe import MultiTaskModel
from ..model.towers import Towers
from ..model.gates import Gates

__all__ = ["supports", "forward", "batches"]

def supports(model: MultiTaskModel) -> str | None:
    """``None`` when the fused pass can compute this kind of model at all, else the reason it cannot
    (then the callers run ``model.forward``). A cheap look at the model's structure: whether it
    computes the *same numbers* is :func:`~mmoe_annotated.fast.guard.agrees`' question."""
    if not isinstance(model, MultiTaskModel):
        return f"not a MultiTaskModel: {type(model).__name__}"
    if type(model).forward is not MultiTaskModel.forward:
        return f"{type(model).__name__} has its own forward"
    if (type(model.experts) is not Experts or type(model.towers) is not Towers
            or (model.gates is not None and type(model.gates) is not Gates)):
        return "experts, gates or towers were replaced by other modules"
    if model.training and model.config.dropout > 0:
        return "dropout in training mode (the fused pass has no dropout masks; call model.eval())"
    if model.config.activation not in ("relu", "tanh", "sigmoid", "linear"):
        return f"activation {model.config.activation!r}"
    return None


class _Layout(NamedTuple):
    """How many layers each block has, and where each block's parameters sit in the flat list."""

    experts: int  # E
    gates: int  # G (0: Shared-Bottom)
    tasks: int  # T
    expert_layers: int
    gate_layers: int  # hidden layers of the gate MLP (0: the paper's linear gate)
    tower_layers: int  # hidden layers of the towers (0: a linear tower)
    activation: str

    def unpack(self, params):
        it = iter(params)
        take = lambda n: [next(it) for _ in range(n)]
        ew, eb = take(self.expert_layers), take(self.expert_layers)
        gw, gb = take(self.gate_layers), take(self.gate_layers)
        gout = next(it) if self.gates else None
        tw, tb = take(self.tower_layers), take(self.tower_layers)
        tout, tbias = next(it), next(it)
        return ew, eb, gw, gb, gout, tw, tb, tout, tbias


def _parameters(model: MultiTaskModel) -> tuple[_Layout, list[torch.Tensor]]:
    experts, gates, towers = model.experts, model.gates, model.towers
    gate_mlp = gates.mlp if gates is not None else None
    layout = _Layout(
        experts=experts.num_experts, gates=gates.num_gates if gates is not None else 0, tasks=model.num_tasks,
        expert_layers=len(experts.weights), gate_layers=len(gate_mlp.weights) if gate_mlp is not None else 0,
        tower_layers=len(towers.mlp.weights) if towers.mlp is not None else 0,
        activation=model.config.activation)
    params = [*experts.weights, *experts.biases]
    if gate_mlp is not None:
        params += [*gate_mlp.weights, *gate_mlp.biases]
    if gates is not None:
        params.append(gates.out)
    if towers.mlp is not None:
        params += [*towers.mlp.weights, *towers.mlp.biases]
    params += [towers.out, towers.bias]
    return layout, params


def _activate_(h: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "relu":
        return h.clamp_min_(0)
    if kind == "tanh":
        return h.tanh_()
    if kind == "sigmoid":
        return h.sigmoid_()
    return h


def _side_by_side(weights: list[torch.Tensor], biases: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """First layers of networks that read the same input, ``(S, I, H)`` each, side by side as one
    ``(I, C)`` matrix and its ``(C,)`` bias (a missing bias is zeros: the paper's linear gate)."""
    I = weights[0].shape[1]
    first_w = weights[0].new_empty(I, sum(w.shape[0] * w.shape[2] for w in weights))  # (I, C)
    first_b = weights[0].new_zeros(first_w.shape[1])  # (C,)
    start = 0
    for w, b in zip(weights, biases):
        S, _, H = w.shape
        first_w[:, start:start + S * H].view(I, S, H).copy_(w.transpose(0, 1))
        if b is not None:
            first_b[start:start + S * H].copy_(b.reshape(-1))
        start += S * H
    return first_w, first_b


class _Scratch:
    """The pass's working tensors by name, kept from one batch to the next so that a long
    prediction allocates them once (a new shape, such as a smaller last batch, replaces them).
    Nothing the pass returns lives in them."""

    def __init__(self):
        self._held: dict = {}

    def __call__(self, key, like: torch.Tensor, *shape: int) -> torch.Tensor:
        held = self._held.get(key)
        if held is None or held.shape != shape:
            held = self._held[key] = like.new_empty(shape)
        return held


def _stacked(block: torch.Tensor, S: int, layers: list, act: str, scratch: _Scratch, name: str
             ) -> list[torch.Tensor]:
    """The deeper layers of ``S`` networks whose first-layer activations sit side by side in
    ``block`` ``(B, S*H)``: one GEMM per network and layer (``layers``: per layer, each network's
    weight and bias). Returns each network's output, ``S x (B, H_last)``, kept apart: mixing reads
    them one by one, so stacking them into one ``(B, S, H_last)`` tensor would only add a copy."""
    # The second layer reads each network's column block of `block` where it lies: a matrix
    # multiply takes a row stride wider than its rows, so no copy is needed (copying the blocks
    # out first made prediction 6-9 % slower in paired runs at batch 256 and 4096). Every output
    # is a contiguous (B, H) matrix: with strided outputs the process's peak memory jumped by
    # 30-190 MiB in some runs.
    B, width = block.shape[0], block.shape[1] // S
    h = [block[:, s * width:(s + 1) * width] for s in range(S)]  # S x (B, H), strided views
    for layer, (w, b) in enumerate(layers, start=1):
        h = [_activate_(torch.addmm(b[s], h[s], w[s], out=scratch((name, layer, s), block, B, w[s].shape[1])), act)
             for s in range(S)]
    return h


class _Prepared(NamedTuple):
    """A model's parameters as the fused pass reads them, built once: the shared first layer, the
    gates' final maps in one matrix, and every other layer split into one ``(H_in, H_out)`` matrix
    per network (splitting a stacked ``(S, H_in, H_out)`` parameter costs an operation per network;
    at batch 256, where one pass takes about a millisecond, such small costs add up)."""

    layout: _Layout
    first_w: torch.Tensor  # (I, C)
    first_b: torch.Tensor  # (C,)
    expert_cols: int  # E*H: the experts' columns of the first layer's output; the gates' follow
    hidden: int  # the columns the activation applies to (the paper's linear gates' logits follow)
    experts: list  # per deeper layer: (E weights (H, H'), E biases (H',))
    gates: list  # per deeper hidden layer of the gate MLPs: (G weights, G biases)
    gate_out_t: torch.Tensor | None  # (G*E, G*H): every gate's final map, block-diagonal and transposed
    # (None: the paper's linear gates, whose map is part of the first layer)
    towers: list  # per hidden layer of the towers: (T weights, T biases)
    tower_out: tuple  # T x (H,)
    tower_bias: torch.Tensor  # (T,)


def _prepare(model: MultiTaskModel) -> _Prepared:
    layout, params = _parameters(model)
    ew, eb, gw, gb, gout, tw, tb, tout, tbias = layout.unpack(params)
    firsts = [(ew[0], eb[0])] + ([(gw[0], gb[0])] if gw else [(gout, None)] if layout.gates else [])
    split = lambda ws, bs: [(w.unbind(0), b.unbind(0)) for w, b in zip(ws, bs)]  # per network
    with torch.no_grad():
        first_w, first_b = _side_by_side(*zip(*firsts))  # (I, C), (C,)
        gate_out_t = torch.block_diag(*gout).t().contiguous() if layout.gates and gw else None  # (G*E, G*H)
    expert_cols = layout.experts * ew[0].shape[2]
    return _Prepared(
        layout, first_w, first_b, expert_cols=expert_cols,
        hidden=expert_cols + (layout.gates * gw[0].shape[2] if gw else 0),
        experts=split(ew[1:], eb[1:]), gates=split(gw[1:], gb[1:]), gate_out_t=gate_out_t,
        towers=split(tw, tb), tower_out=tout.unbind(0), tower_bias=tbias)


def _network(x: torch.Tensor, prepared: _Prepared, scratch: _Scratch | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Experts, gates, mixing and towers: ``x (B, I)`` -> ``logits (B, T)``, ``gates (B, T, E)``.
    ``scratch``: working tensors reused across batches (see :func:`batches`)."""
    scratch = scratch or _Scratch()
    p = prepared
    E, G, T, act = p.layout.experts, p.layout.gates, p.layout.tasks, p.layout.activation
    B = x.shape[0]
    # The first layer of every expert and every gate reads x: one GEMM for all of them.
    a = torch.addmm(p.first_b, x, p.first_w, out=scratch("first", x, B, p.first_w.shape[1]))  # (B, C)
    _activate_(a if p.hidden == a.shape[1] else a[:, :p.hidden], act)

    # Experts: deeper layers, one GEMM per expert.
    h = _stacked(a[:, :p.expert_cols], E, p.experts, act, scratch, "experts")  # E x (B, D)
    if G:
        gates = _gates(a, p, scratch)  # (G, E, B)
        z = _mix(h, gates, scratch)  # G x (B, D)
        z = z if G == T else z * T  # T x (B, D): OMoE's one mixture serves every task
    else:
        gates = None
        z = h * T  # T x (B, D): Shared-Bottom, every tower reads the one bottom

    # Towers: one small MLP per task, then a bias-free linear output and the task's bias.
    for layer, (w, b) in enumerate(p.towers):
        z = [_activate_(torch.addmm(b[t], z[t], w[t], out=scratch(("towers", layer, t), x, B, w[t].shape[1])), act)
             for t in range(T)]
    logits = torch.stack([zt @ out for zt, out in zip(z, p.tower_out)], dim=1) + p.tower_bias  # (B, T)

    if gates is None:
        return logits, logits.new_ones(B, T, 1)
    gates = gates.permute(2, 0, 1)  # (B, G, E), a view
    return logits, (gates if G == T else gates.expand(B, T, E))  # (B, T), (B, T, E)


def _gates(a: torch.Tensor, p: _Prepared, scratch: _Scratch) -> torch.Tensor:
    """The gates from the first layer's output ``a`` ``(B, C)``: softmax over experts, one gate per
    task (MMoE) or one for all (OMoE), transposed: ``(G, E, B)``.

    With only a few experts per row, a softmax along the rows of a ``(B, G, E)`` tensor and a matrix
    multiply with ``G*E`` output columns both run far below the machine's speed, while the
    transposed GEMM has ``B`` output columns and the softmax runs along contiguous rows of ``B``
    values (default MMoE, batch 4096, 2 threads: GEMM and softmax took 0.77 ms per batch as
    ``(B, G, E)``, 0.18 ms transposed)."""
    B, G, E = a.shape[0], p.layout.gates, p.layout.experts
    if p.gate_out_t is None:  # the paper's linear gate: its map is part of the first GEMM
        return torch.softmax(a[:, p.hidden:].t().view(G, E, B), dim=1)
    g_cols = a[:, p.expert_cols:p.hidden]  # (B, G*H): with one hidden layer, read where it lies
    if p.gates:
        g_hidden = _stacked(g_cols, G, p.gates, p.layout.activation, scratch, "gates")  # G x (B, H)
        g_cols = torch.cat(g_hidden, dim=1, out=scratch("gate hidden", a, B, sum(t.shape[1] for t in g_hidden)))
    logits = torch.mm(p.gate_out_t, g_cols.t(),  # every gate's final map in one GEMM
                      out=scratch("gate logits", a, G * E, B)).view(G, E, B)
    return torch.softmax(logits, dim=1)  # (G, E, B)


def _mix(h: list[torch.Tensor], gates: torch.Tensor, scratch: _Scratch) -> list[torch.Tensor]:
    """Each gate's mixture, a gate-weighted sum of the experts' outputs ``E x (B, D)`` with the
    gates ``(G, E, B)``, as multiply-adds of whole ``(B, D)`` matrices: ``G x (B, D)``."""
    z = []
    for g, weights in enumerate(gates.unsqueeze(-1).unbind(0)):  # G x (E, B, 1)
        weights = weights.unbind(0)  # E x (B, 1)
        zg = torch.mul(h[0], weights[0], out=scratch(("mixed", g), h[0], *h[0].shape))  # (B, D)
        for e in range(1, len(h)):
            zg.addcmul_(h[e], weights[e])
        z.append(zg)
    return z


def _no_grad() -> None:
    if torch.is_grad_enabled():
        raise RuntimeError("fused.forward computes no gradients: call it under torch.inference_mode() or "
                           "torch.no_grad(), or call the model itself for training")


def _check(model: MultiTaskModel) -> None:
    _no_grad()
    reason = supports(model)
    if reason is not None:
        raise ValueError(f"fused.forward does not apply to this model: {reason}")


def forward(model: MultiTaskModel, ids: torch.Tensor | None, dense: torch.Tensor | None = None) -> ModelOutput:
    """``model(ids, dense)`` without autograd, fused (see :func:`supports`). Runs under
    ``torch.no_grad()`` / ``torch.inference_mode()`` only: for training, call the model."""
    _check(model)
    return ModelOutput(*_network(model.inputs(ids, dense), _prepare(model)))


def batches(model: MultiTaskModel):
    """A function ``(ids, dense) -> ModelOutput`` for many batches through the same, unchanging
    weights (what :func:`~mmoe_annotated.fast.inference` needs): the model is checked, the shared
    first layer's weight matrix assembled and the working tensors allocated once, not once per
    batch. The outputs of each call are new tensors, never overwritten by a later call. Do not
    change the weights or the model while using it."""
    _check(model)
    prepared = _prepare(model)
    scratch = _Scratch()  # working tensors, allocated once and reused by every batch

    def run(ids: torch.Tensor | None, dense: torch.Tensor | None = None) -> ModelOutput:
        _no_grad()
        return ModelOutput(*_network(model.inputs(ids, dense), prepared, scratch))
    return run
