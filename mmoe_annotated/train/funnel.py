"""The funnel's three predictions from an ESMM: pCTR, pCVR and pCTCVR on every row.

Explained in chapter 12, "The conversion funnel: ESMM" (``book/12_funnel.ipynb``).
:func:`~mmoe_annotated.train.inference.predict` gives the two trained outputs (pCTR and pCTCVR,
the model's tasks); :func:`predict_funnel` adds pCVR, the tower that is never trained on a
label of its own, for the rows of a split, batch by batch under ``torch.inference_mode()``.

Shape letters: ``M`` rows of a split.
"""
from __future__ import annotations

import numpy as np
import torch

from ..features.encoder import FeatureEncoder
from ..model.esmm import ESMM
from .inference import prediction_inputs

__all__ = ["FUNNEL", "predict_funnel"]

#: The columns of :func:`predict_funnel`'s output, in order.
FUNNEL = ("ctr", "cvr", "ctcvr")


@torch.inference_mode()
def predict_funnel(model: ESMM, data, *, encoder: FeatureEncoder | None = None, batch_size: int = 8192,
                   device=None) -> np.ndarray:
    """``(M, 3)`` probabilities: pCTR, pCVR and pCTCVR = pCTR * pCVR (:data:`FUNNEL`)."""
    if not isinstance(model, ESMM):
        raise TypeError(f"predict_funnel needs an ESMM (the only model with a pCVR tower), got {type(model).__name__}")
    x, _, batch_size, dev = prediction_inputs(model, data, encoder, batch_size, device, labels=False)
    was_training = model.training
    model.eval()
    try:
        logits = [model.funnel(*x.index(slice(s, s + batch_size)).to(dev)).cpu()
                  for s in range(0, max(len(x), 1), batch_size)]
    finally:
        model.train(was_training)
    return torch.sigmoid(torch.cat(logits)).numpy()  # (M, 3)
