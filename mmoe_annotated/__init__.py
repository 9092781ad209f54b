"""mmoe_annotated: the companion package of "The Annotated Multi-Task Ranker".

MMoE (Ma et al., KDD 2018, "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts"), its ablations OMoE and Shared-Bottom and its successors CGC and
PLE, with the ByteRec data pipeline and a trainer. The folders are the book's stages, in its
order; every module names the chapter that explains it:

===============  ======================================================================
folder           stage
===============  ======================================================================
``data``         1. files read strictly, the embedded example, the paper's datasets (ch. 2, 8, 9)
``features``     2. raw columns to model inputs: encoders and the embedding lookup (ch. 3)
``model``        3. experts, gates, towers; MMoE, OMoE, Shared-Bottom, CGC, PLE (ch. 1, 4-6, 10)
``train``        4. the loop, losses, prediction, evaluation, inspection, ranking (ch. 5, 7, 10, 11)
``checkpoint``   one verified file per trained model (appendix "When things go wrong")
``scale``        files larger than memory, several processes (appendix "Scaling out")
``experiments``  the paper's studies and the seesaw, on top of the stages (ch. 8-10)
``bench``        the taught path, the fast wing and DeepCTR-Torch side by side (appendix)
``fast``         the opt-in fast wing: the same numbers, faster (appendix "Performance")
===============  ======================================================================

``runtime`` (devices, seeds, the version) and ``source`` (``show_source``) serve every stage.
Each stage imports only the stages before it; ``mm.fast`` is imported on first use, and
importing the package, or any taught module, never loads it.
"""
from . import _moved
from .runtime import package_version, resolve_device, seed_everything
from .source import show_source, source_of
from .data import (COLUMNS, DENSE_FEATURES, SPARSE_FEATURES, TASKS, ByteRecSizes, DataError,
                   load_byterec, load_byterec_sample, load_example, make_byterec, split_by_row,
                   synthetic, write_byterec)
from .features import (MISSING, NUM_RESERVED, OOV, PAD, DenseFeature, EncodedFeatures,
                       FeatureEncoder, HashBuckets, InputLayer, MinMax, SparseFeature, Vocabulary,
                       input_dim)
from .model import (CGC, ESMM, MODELS, PLE, Experts, Gates, MMoE, ModelConfig, ModelOutput,
                    MultiTaskModel, OMoE, SharedBottom, StackedMLP, Towers, build_model, mix)
from .model.health import (dead_experts, expert_utilization, gate_distance, gate_entropy,
                           gate_statistics, polarized_gates)
from .train import (EarlyStopping, History, TrainConfig, as_dataset, evaluate, fit, gate_weights,
                    plot_architecture, plot_gate_distributions, plot_gate_health,
                    plot_gate_heatmap, plot_history, predict, regularization, task_losses,
                    use_book_style)
from .train import stats
from .train.ranking import GroupScore, group_auc, ndcg_at_k, ranking_metrics, recall_at_k
from .train.calibration import Calibrator, expected_calibration_error, plot_reliability, reliability
from .train.fusion import Fusion, plot_frontier, rank
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

__version__ = package_version()

_moved.install()  # release 0.1's module paths, for one release

# The fast wing loads on first use (PEP 562), so that `import mmoe_annotated` runs the taught code only.
_LAZY = {"fast": ("mmoe_annotated.fast", None), "fused": ("mmoe_annotated.fast.fused", None),
         "RowAdagrad": ("mmoe_annotated.fast.optim", "RowAdagrad"),
         # the serving stage, on first use too: ONNX export needs the extras of `pip install mmoe-annotated[serve]`
         "export": ("mmoe_annotated.serve.export", "export")}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        value = importlib.import_module(module)
        return getattr(value, attr) if attr else value
    moved = _moved.moved_attribute(name)  # mm.losses, mm.ple, ...: release 0.1's modules
    if moved is None:
        raise AttributeError(f"module 'mmoe_annotated' has no attribute {name!r}")
    return moved
