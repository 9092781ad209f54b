"""mmoe_annotated: the companion package of "The Annotated Multi-Task Ranker".

MMoE (Ma et al., KDD 2018, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts") and its ablations OMoE and Shared-Bottom, with the
ByteRec data pipeline and a trainer. Each module names the book chapter that explains it:

=================  ==========================================
module             chapter
=================  ==========================================
``schema``         2. The data (columns, tasks, ``DataError``)
``reader``         2. The data (a file's bytes, chunk by chunk; ``parse``: each chunk's values checked)
``data``           2. The data (the strict file loader, the real sample, the split)
``example_data``   2. The data (the embedded, generated dataset)
``features``       3. Feature transforms (the encoders)
``inputs``         3. Feature transforms (what the model reads)
``experts``        4. Experts
``gates``          5. Gates
``towers``         6. Towers and the whole model
``model``          6. Towers and the whole model (and 1. The paper)
``ple``            10. Beyond MMoE (CGC and PLE)
``dataset``        7. Training (in-memory data as tensors)
``losses``         7. Training (task losses and L2)
``train``          7. Training (``fit``)
``inference``      7. Training (``predict``, ``evaluate``)
``health``         5. Gates, 10. Beyond MMoE (gate health)
``inspect``        5. Gates, 7. Training
``census``         9. The paper on real data: Census-Income
``checkpoint``     Appendix: When things go wrong
``stream``         Appendix: Scaling out (files larger than memory)
``distributed``    Appendix: Scaling out (DistributedDataParallel)
``fast``           Appendix: Performance (the opt-in fast wing)
=================  ==========================================

``runtime`` (devices and seeds) serves every module. ``mm.fast`` is imported on first use:
importing the package, or any taught module, never loads it.
"""
from .data import (COLUMNS, DENSE_FEATURES, SPARSE_FEATURES, TASKS, DataError, load_byterec, load_byterec_sample,
                   split_by_row, write_byterec)
from .example_data import ByteRecSizes, load_example, make_byterec
from .inputs import DenseFeature, EncodedFeatures, InputLayer, SparseFeature, input_dim
from .features import MISSING, NUM_RESERVED, OOV, PAD, FeatureEncoder, HashBuckets, MinMax, Vocabulary
from .runtime import resolve_device, seed_everything
from .experts import Experts, StackedMLP
from .gates import Gates, mix
from .towers import Towers
from .model import CGC, PLE, MMoE, MODELS, ModelConfig, ModelOutput, MultiTaskModel, OMoE, SharedBottom, build_model
from .losses import regularization, task_losses
from .dataset import as_dataset
from .inference import evaluate, predict
from .train import History, TrainConfig, fit
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .inspect import (dead_experts, expert_utilization, gate_entropy, gate_statistics, gate_weights,
                      plot_architecture, plot_gate_distributions, plot_gate_health, plot_gate_heatmap, plot_history,
                      polarized_gates)
from .source import show_source, source_of
from . import synthetic

__version__ = "0.1.0"

# The fast wing loads on first use (PEP 562), so that `import mmoe_annotated` runs the taught code only.
_LAZY = {"fast": ("mmoe_annotated.fast", None), "fused": ("mmoe_annotated.fast.fused", None),
         "RowAdagrad": ("mmoe_annotated.fast.optim", "RowAdagrad")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'mmoe_annotated' has no attribute {name!r}")
    import importlib
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    return getattr(value, attr) if attr else value
