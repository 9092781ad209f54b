"""ESMM, the Entire Space Multi-Task Model (Ma et al., SIGIR 2018): the funnel.

Explained in chapter 12, "The conversion funnel: ESMM" (``book/12_funnel.ipynb``).

A conversion (``z``) is only seen after a click (``y``). A conversion-rate model trained
on the clicked rows alone and scored on every row suffers *sample-selection bias*; it
also sees few positives (*data sparsity*). ESMM models the funnel over the entire space:

* two towers, pCTR ``= p(y=1 | x)`` and pCVR ``= p(z=1 | y=1, x)``, read the same
  shared embeddings;
* their product is pCTCVR ``= p(y=1, z=1 | x) = pCTR * pCVR``;
* the loss is trained on every row through pCTR (label: click) and pCTCVR (label: click
  and conversion), never on pCVR directly.

The package's convention holds: models return **logits**, and the sigmoid lives in
prediction and in the loss. So the second task's output is the logit of the product,
``logit(pCTR * pCVR)``, computed in log space from the two towers' logits
(:func:`ctcvr_logit`). ``BCEWithLogits`` on it is binary cross-entropy on pCTCVR itself,
with no clamp and no division. :meth:`ESMM.funnel` gives all three logits.

The model's two tasks are the click and the click-and-conversion labels, in that order
(``ModelConfig(task_names=("ctr", "ctcvr"))``, both binary). Only ``tower_hidden``,
``activation``, ``dropout``, ``init_std`` and ``seed`` shape it; the expert and gate
settings are unused. Shape letters: ``B`` batch, ``I`` input width.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..features.inputs import EncodedFeatures, InputLayer
from .config import ModelConfig, ModelOutput
from .mmoe import MultiTaskModel
from .towers import Towers

__all__ = ["ESMM", "ctcvr_logit"]


def ctcvr_logit(ctr: torch.Tensor, cvr: torch.Tensor) -> torch.Tensor:
    """``logit(sigmoid(ctr) * sigmoid(cvr))`` from the two logits, stably, in log space.

    ``log pCTCVR = log pCTR + log pCVR``, and ``1 - pCTR pCVR = (1 - pCTR) + pCTR (1 -
    pCVR)``, a sum of two positive terms: ``log(1 - pCTCVR)`` is a ``logaddexp`` of
    log-sigmoids, with no ``log(0)`` and no cancellation for any logits."""
    log_ctr, log_cvr = F.logsigmoid(ctr), F.logsigmoid(cvr)  # log pCTR, log pCVR
    log_yes = log_ctr + log_cvr  # log pCTCVR
    log_no = torch.logaddexp(F.logsigmoid(-ctr), log_ctr + F.logsigmoid(-cvr))
    return log_yes - log_no  # log pCTCVR - log(1 - pCTCVR)


class ESMM(MultiTaskModel):
    """Entire Space Multi-Task Model: shared embeddings, a pCTR and a pCVR tower; the
    output logits are CTR's and CTCVR's (module docstring). Built from the package's
    :class:`InputLayer` and :class:`Towers`; ``gates`` are ones ``(B, 2, 1)``, as for
    Shared-Bottom."""

    gating = "none"

    def _build(self, c: ModelConfig) -> None:
        if c.num_tasks != 2 or any(t != "binary" for t in c.task_types):
            raise ValueError(
                "ESMM models the funnel with two binary tasks, the click and the "
                "click-and-conversion labels (e.g. task_names=('ctr', 'ctcvr')); got "
                f"{list(c.task_names)} with types {list(c.task_types)}")
        self.inputs = InputLayer(c.features, init_std=c.init_std or 1e-4,
                                 sparse=c.sparse_embeddings)
        self.experts = None  # no experts and no gates: both towers read the input
        self.gates = None
        self.towers = Towers(self.inputs.output_dim, 2, c.tower_hidden, c.activation,
                             c.dropout, c.init_std)

    @property
    def num_experts(self) -> int:
        return 1

    def funnel(self, ids: torch.Tensor | EncodedFeatures | None,
               dense: torch.Tensor | None = None) -> torch.Tensor:
        """The three logits ``(B, 3)``: CTR, CVR and CTCVR (their sigmoids are pCTR,
        pCVR and pCTCVR = pCTR * pCVR)."""
        if isinstance(ids, EncodedFeatures):
            ids, dense = ids
        x = self.inputs(ids, dense)  # (B, I): the shared embeddings and dense inputs
        both = x.unsqueeze(1).expand(-1, 2, -1)  # (B, 2, I): each tower reads x
        ctr, cvr = self.towers(both).unbind(1)  # (B,), (B,)
        return torch.stack([ctr, cvr, ctcvr_logit(ctr, cvr)], dim=1)  # (B, 3)

    def forward(self, ids: torch.Tensor | EncodedFeatures | None,
                dense: torch.Tensor | None = None) -> ModelOutput:
        logits = self.funnel(ids, dense)[:, [0, 2]]  # (B, 2): the trained CTR, CTCVR
        gates = logits.new_ones(logits.shape[0], 2, 1)  # (B, 2, 1): no gates
        return ModelOutput(logits, gates)

    def extra_repr(self) -> str:
        c = self.config
        return (f"tasks={list(c.task_names)}, towers=pCTR and pCVR "
                f"{list(c.tower_hidden)}, outputs=CTR and CTCVR logits")
