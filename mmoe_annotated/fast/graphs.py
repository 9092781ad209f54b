"""The fused pass on a GPU, captured once as a CUDA graph and replayed for every batch.

Part of the opt-in fast wing (:mod:`mmoe_annotated.fast`); explained in the appendix
"Performance" (``book/appendix_performance.ipynb``). At batch 256 a GPU finishes each of the
fused pass's thirty or so kernels faster than Python can launch the next, so
:func:`~mmoe_annotated.fast.inference.predict` captures :func:`~mmoe_annotated.fast.fused.batches`
once and replays it with one launch per batch (plus the copies of its inputs and outputs).

Shape letters: ``B`` batch, ``F`` sparse fields, ``N`` dense width.
"""
from __future__ import annotations

import torch

from ..model.config import ModelOutput
from ..model.mmoe import MultiTaskModel
from .fused import _check, batches

__all__ = ["graphed"]


class _Graphed:
    """A captured pass and everything its kernels read or write (see :func:`graphed`)."""

    def __init__(self, run, static, graph, out):
        # The graph holds raw addresses: the pass's weight matrices and working tensors (kept by
        # ``run``), its inputs and its outputs must live as long as the graph does.
        self.run, self.static, self.graph, self.out = run, static, graph, out

    def __call__(self, ids: torch.Tensor | None, dense: torch.Tensor | None = None) -> ModelOutput:
        for buffer, t in zip(self.static, (ids, dense)):
            if buffer is not None:
                if t is None or t.shape != buffer.shape:
                    raise ValueError(f"this graph takes batches of shape {tuple(buffer.shape)}, got "
                                     f"{None if t is None else tuple(t.shape)}")
                buffer.copy_(t, non_blocking=True)
        self.graph.replay()
        return self.out


def graphed(model: MultiTaskModel, batch_size: int, ids_like: torch.Tensor | None,
            dense_like: torch.Tensor | None):
    """CUDA only: :func:`batches` captured once as a CUDA graph for batches of exactly ``batch_size``
    rows shaped like ``ids_like`` / ``dense_like`` (their widths and dtypes; any device).

    Returns a function ``(ids, dense) -> ModelOutput`` that copies the batch into the graph's input
    tensors and replays the graph: a handful of launches per batch instead of one per kernel. The
    outputs it returns are the graph's own tensors, **overwritten by the next call**: copy them out
    first (as :func:`~mmoe_annotated.fast.inference` does, into its result). Do not change the
    weights or the model while using it."""
    _check(model)
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise ValueError(f"CUDA graphs need the model on a CUDA device, not {device}")
    # Zeros are valid inputs: id 0 exists in every field's vocabulary.
    static = [None if t is None else torch.zeros(batch_size, t.shape[1], dtype=t.dtype, device=device)
              for t in (ids_like, dense_like)]  # (B, F) ids, (B, N) dense
    run = batches(model)  # its own working tensors: the graph reads and writes exactly these
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(2):
            run(*static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run(*static)
    return _Graphed(run, static, graph, out)
