"""The fast wing: the same signatures and numbers as the taught code, with the speed machinery.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``).

Opt in with ``mm.fast.fit``, ``mm.fast.predict``, ``mm.fast.evaluate`` and
``mm.fast.gate_weights`` in place of ``mm.fit``, ``mm.predict``, ``mm.evaluate`` and
``mm.gate_weights``. Everything here imports the taught modules, and none of them imports this
wing: the code the chapters show is the code that runs by default.

=================  ==================================================================
module             what it speeds up
=================  ==================================================================
``fused``          prediction in one fused forward pass
``graphs``         the fused pass captured once as a CUDA graph, replayed per batch
``guard``          no speed: the fused pass only where it gives ``model.forward``'s numbers
``threads``        small prediction batches side by side, one batch per thread
``inference``      predict / evaluate / gate_weights on the fused pass; chunked copies to a GPU
``optim``          fused Adagrad, and ``RowAdagrad`` for sparse embedding tables
``train``          ``fit``: block-wise gradients for large CPU batches, row L2 on the forward's lookup
=================  ==================================================================
"""
from . import fused, graphs, guard
from .optim import RowAdagrad
from .inference import evaluate, gate_weights, predict
from .train import fit

__all__ = ["fit", "predict", "evaluate", "gate_weights", "RowAdagrad", "fused", "graphs", "guard"]
