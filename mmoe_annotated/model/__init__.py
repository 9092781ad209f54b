"""Stage 3, the model: experts, gates and towers, and the models built from them.

================  ==================================================================  =======
module            what                                                                chapter
================  ==================================================================  =======
``experts``       many small MLPs as one batched operation (:class:`StackedMLP`)       4
``gates``         a softmax over experts per task, and the mixing step (:func:`mix`)   5
``towers``        one small network per task, returning logits                        6
``config``        :class:`ModelConfig` (validated once) and :class:`ModelOutput`       6
``mmoe``          MMoE and its ablations OMoE and Shared-Bottom                        1, 6
``ple``           CGC and PLE, MMoE's successors                                      10
``esmm``          ESMM, the conversion funnel: pCTR x pCVR over the entire space      12
``health``        gate statistics: utilisation, entropy, dead experts                  5, 10
================  ==================================================================  =======

:data:`MODELS` names every model kind; :func:`build_model` builds one by name (what
checkpoints, the experiments and the distributed trainer use).
"""
from __future__ import annotations

from .._moved import stage_getattr
from .config import TASK_TYPES, ModelConfig, ModelOutput
from .esmm import ESMM
from .experts import ACTIVATIONS, Experts, StackedMLP
from .gates import Gates, mix
from .mmoe import MMoE, MultiTaskModel, OMoE, SharedBottom
from .ple import CGC, PLE
from .towers import Towers

__all__ = ["TASK_TYPES", "ModelConfig", "ModelOutput", "MultiTaskModel", "MMoE", "OMoE", "SharedBottom",
           "CGC", "PLE", "ESMM", "Experts", "StackedMLP", "Gates", "Towers", "mix", "ACTIVATIONS", "MODELS",
           "build_model"]

#: Every model kind by the name checkpoints and the command lines use.
MODELS = {"mmoe": MMoE, "omoe": OMoE, "shared_bottom": SharedBottom, "cgc": CGC, "ple": PLE, "esmm": ESMM}


def build_model(kind: str, config: ModelConfig) -> MultiTaskModel:
    """``build_model("mmoe" | "omoe" | "shared_bottom" | "cgc" | "ple" | "esmm", config)``."""
    try:
        return MODELS[kind](config)
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {sorted(MODELS)}") from None

# Release 0.1 had a module model.py; the names it held that this stage does not list still
# resolve, with a DeprecationWarning, for one release (mmoe_annotated._moved).
__getattr__ = stage_getattr(__name__, ("mmoe_annotated.model.config", "mmoe_annotated.model.mmoe"))
