"""Prediction with ``torch.compile``: the taught model, compiled by PyTorch instead of fused by hand.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``), where
:mod:`mmoe_annotated.bench.prediction` times it beside the taught ``mm.predict`` and the fast
wing's fused pass (:mod:`mmoe_annotated.fast.fused`).

:class:`CompiledPredict` does what :func:`~mmoe_annotated.train.inference.predict` does (the same
argument checks, eval mode, batches under ``torch.inference_mode()``, the same check of the
outputs and the same probabilities), with ``torch.compile(model)`` in place of the model: on a
CPU TorchInductor writes and compiles C++ kernels for the whole forward pass; on a GPU
``mode="reduce-overhead"`` also captures them as a CUDA graph, replayed once per batch. Each
batch shape gets its own static graph (``dynamic=False``): the full batches' and the last one's.
The first call compiles, which takes seconds to a minute; later calls of the same shapes reuse
the compiled code.

Shape letters: ``M`` rows, ``T`` tasks.
"""
from __future__ import annotations

import numpy as np
import torch

from ..features.encoder import FeatureEncoder
from ..model.mmoe import MultiTaskModel
from ..train.inference import check_outputs, prediction_inputs, probabilities

__all__ = ["CompiledPredict"]


class CompiledPredict:
    """``mm.predict(model, ...)`` through ``torch.compile(model)``, compiled on the first call.

    ``predict = CompiledPredict(model)``, then ``predict(data, encoder=..., batch_size=...)`` returns
    the predictions ``(M, T)`` as ``mm.predict`` does. Do not change the model's structure while
    using it (new weights are fine: the compiled code reads the parameters)."""

    def __init__(self, model: MultiTaskModel):
        self.model = model
        self.compiled = None

    def __call__(self, data, *, encoder: FeatureEncoder | None = None, batch_size: int = 8192,
                 device=None) -> np.ndarray:
        model = self.model
        x, _, batch_size, dev = prediction_inputs(model, data, encoder, batch_size, device, labels=False)
        if self.compiled is None:
            mode = "reduce-overhead" if dev.type == "cuda" else None  # on a GPU: CUDA graphs
            self.compiled = torch.compile(model, mode=mode, dynamic=False)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                logits = torch.empty(len(x), model.num_tasks, device=dev)  # (M, T)
                for start in range(0, len(x), batch_size):
                    xb = x.index(slice(start, start + batch_size)).to(dev)
                    # copied out at once: a CUDA graph's outputs are overwritten by its next replay
                    logits[start:start + len(xb)].copy_(self.compiled(xb.ids, xb.dense).logits)
        finally:
            model.train(was_training)
        logits = logits.cpu()
        check_outputs(model, logits)
        return probabilities(model, logits).numpy()
