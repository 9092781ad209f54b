"""Fast prediction and evaluation: the same signatures and numbers as :mod:`mmoe_annotated.train.inference`.

Part of the opt-in fast wing (:mod:`mmoe_annotated.fast`); explained in the appendix
"Performance". Where the taught :func:`~mmoe_annotated.train.inference.predict` runs
``model.forward`` batch by batch, this runs the fused pass (:mod:`~mmoe_annotated.fast.fused`): on
a CPU small batches side by side on the threads (:mod:`~mmoe_annotated.fast.threads`); on a GPU
one CUDA graph replayed per batch, with the input moved in chunks of :data:`CHUNK_ROWS` rows.
Where the fused pass does not apply (a model with its own forward, dropout in training mode) or
does not give ``model.forward``'s numbers on the first rows of the input
(:func:`~mmoe_annotated.fast.guard.agrees`: the taught code was edited), it runs ``model.forward``,
so a change to the taught code always reaches the predictions.

Shape letters: ``B`` batch, ``M`` rows of a split, ``T`` tasks, ``E`` experts.
"""
from __future__ import annotations

import numpy as np
import torch

from ..features.encoder import FeatureEncoder
from ..features.inputs import EncodedFeatures
from ..model.mmoe import MultiTaskModel
from ..train.inference import check_outputs, metrics, outputs, prediction_inputs, probabilities
from . import fused, graphs, guard
from .threads import SIDE_BY_SIDE_ROWS, side_by_side

__all__ = ["predict", "evaluate", "gate_weights", "GRAPH_MIN_BATCHES", "CHUNK_ROWS"]

#: On a GPU, prediction replays a CUDA graph (:func:`~mmoe_annotated.fast.graphs.graphed`) when it
#: has at least this many full batches: capturing costs about as much as a few batches run kernel by kernel.
GRAPH_MIN_BATCHES = 4

#: Prediction moves its input to the device this many rows at a time (a whole number of batches).
CHUNK_ROWS = 1 << 20


def predict(model: MultiTaskModel, data, *, encoder: FeatureEncoder | None = None, batch_size: int = 8192,
            return_gates: bool = False, device=None):
    """:func:`mmoe_annotated.train.inference.predict`, fast: predictions ``(M, T)`` (and gates ``(M, T, E)``)."""
    x, _, batch_size, dev = prediction_inputs(model, data, encoder, batch_size, device, labels=False)
    logits, gates = fast_outputs(model, x, batch_size, dev, return_gates)
    preds = probabilities(model, logits).numpy()
    return (preds, gates.numpy()) if return_gates else preds


def evaluate(model: MultiTaskModel, data, *, encoder: FeatureEncoder | None = None, batch_size: int = 8192,
             device=None) -> dict[str, dict[str, float]]:
    """:func:`mmoe_annotated.train.inference.evaluate`, fast: metrics over the whole split, per task."""
    x, y, batch_size, dev = prediction_inputs(model, data, encoder, batch_size, device, labels=True)
    logits, _ = fast_outputs(model, x, batch_size, dev, False)
    return metrics(model, y, logits)


def gate_weights(model: MultiTaskModel, data, *, encoder: FeatureEncoder | None = None,
                 batch_size: int = 8192) -> np.ndarray:
    """:func:`mmoe_annotated.train.inspect.gate_weights`, fast: gate weights ``(M, T, E)``."""
    _, gates = predict(model, data, encoder=encoder, batch_size=batch_size, return_gates=True)
    return gates


def fast_outputs(model: MultiTaskModel, x: EncodedFeatures, batch_size: int, device: torch.device,
                 want_gates: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits ``(M, T)`` and gates ``(M, T, E)`` through the fused pass where it applies, else
    through the taught :func:`~mmoe_annotated.train.inference.outputs` (``model.forward``)."""
    was_training = model.training
    model.eval()
    try:
        first = x.index(slice(0, guard.CHECK_ROWS)).to(device)
        if guard.agrees(model, first.ids, first.dense) is not None:  # a warning has said why, once
            return outputs(model, x, batch_size, device, want_gates)
        n, T = len(x), model.num_tasks
        E = model.num_experts if model.gates is not None else 1
        # Each batch's outputs go straight into the result (on a GPU they stay there until the
        # end: one copy back, no sync per batch).
        logits = torch.empty(n, T, device=device)  # (M, T)
        gates = torch.empty(n, T, E, device=device) if want_gates else None  # (M, T, E)
        if device.type == "cpu" and batch_size <= SIDE_BY_SIDE_ROWS and n > batch_size and torch.get_num_threads() > 1:
            side_by_side(model, x, batch_size, logits, gates)
        else:
            _one_batch_at_a_time(model, x, batch_size, device, logits, gates)
    finally:
        model.train(was_training)
    check_outputs(model, logits)
    return logits.cpu(), (gates.cpu() if want_gates else None)


@torch.inference_mode()
def _one_batch_at_a_time(model: MultiTaskModel, x: EncodedFeatures, batch_size: int, device: torch.device,
                         logits: torch.Tensor, gates: torch.Tensor | None) -> None:
    network = fused.batches(model)
    replay = None  # the graph keeps its own working tensors: a smaller last batch through
    # `network` must not resize the ones the graph reads and writes
    if device.type == "cuda" and len(x) // batch_size >= GRAPH_MIN_BATCHES:
        replay = graphs.graphed(model, batch_size, x.ids, x.dense)
    chunk = max(1, CHUNK_ROWS // batch_size) * batch_size
    for first in range(0, len(x), chunk):
        xc = x.index(slice(first, first + chunk)).to(device)  # one copy per chunk (none on a CPU)
        for start in range(0, len(xc), batch_size):
            xb = xc.index(slice(start, start + batch_size))
            run = replay if replay is not None and len(xb) == batch_size else network
            out = run(xb.ids, xb.dense)  # a graph's outputs are copied out below, before its next replay
            rows = slice(first + start, first + start + len(xb))
            logits[rows].copy_(out.logits)
            if gates is not None:
                gates[rows].copy_(out.gates)
