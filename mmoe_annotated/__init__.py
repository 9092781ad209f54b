"""mmoe_annotated: the companion package of "The Annotated Multi-Task Ranker".

MMoE (Ma et al., KDD 2018, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts") and its ablations OMoE and Shared-Bottom, with the
ByteRec data pipeline and a trainer. Each module names the book chapter that explains it:

=================  ==========================================
module             chapter
=================  ==========================================
``data``           2. The data (the strict file loader)
``example_data``   2. The data (the embedded, generated dataset)
``features``       3. Feature transforms (the encoders)
``inputs``         3. Feature transforms (what the model reads)
``experts``        4. Experts
``gates``          5. Gates
``towers``         6. Towers and the whole model
``model``          6. Towers and the whole model (and 1. The paper)
``fused``          Appendix: Performance (prediction in one fused pass)
``train``          7. Training (``RowAdagrad``: Appendix: Performance)
``inspect``        5. Gates, 7. Training
``checkpoint``     Appendix: When things go wrong
``stream``         Appendix: Scaling out (files larger than memory)
``distributed``    Appendix: Scaling out (DistributedDataParallel)
=================  ==========================================
"""
from .data import COLUMNS, DENSE_FEATURES, SPARSE_FEATURES, TASKS, DataError, load_byterec, split_by_row, write_byterec
from .example_data import ByteRecSizes, load_example, make_byterec
from .inputs import DenseFeature, EncodedFeatures, InputLayer, SparseFeature, input_dim
from .features import MISSING, NUM_RESERVED, OOV, PAD, FeatureEncoder, HashBuckets, MinMax, Vocabulary
from .runtime import resolve_device, seed_everything
from .experts import Experts, StackedMLP
from .gates import Gates, mix
from .towers import Towers
from .model import MMoE, MODELS, ModelConfig, ModelOutput, MultiTaskModel, OMoE, SharedBottom, build_model
from . import fused
from .train import History, RowAdagrad, TrainConfig, evaluate, fit, predict, task_losses
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .inspect import (expert_utilization, gate_entropy, gate_weights, plot_architecture, plot_gate_distributions,
                      plot_gate_heatmap, plot_history)
from .source import show_source, source_of
from . import synthetic

__version__ = "0.1.0"
