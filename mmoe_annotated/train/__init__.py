"""Stage 4, training: the loop, its losses, prediction and evaluation, and looking inside.

================  ==================================================================  =======
module            what                                                                chapter
================  ==================================================================  =======
``dataset``       any supported input to ``(EncodedFeatures, labels)``, checked once   7
``losses``        per-task losses, L2 by parameter role, task-loss balancing           7, 10
``loop``          :func:`fit`, the plain training loop, and :class:`TrainConfig`       7
``inference``     :func:`predict` and :func:`evaluate`: ``model.forward`` on a split   7
``optimizers``    optimizers by name, one table                                        7
``selection``     early stopping on a validation metric, task by task                  7
``metrics``       per-task metrics over a whole split; one rule for undefined AUC      7
``stats``         reading a comparison: t intervals, Holm, bootstrap AUC, seed count   7
``ranking``       per-user metrics: group AUC, NDCG@k, recall@k                         11
``calibration``   reliability, ECE, Platt and isotonic calibrators                      11
``fusion``        one ranking score from the tasks' scores, its weights, ``rank``       11
``inspect``       gate weights and the book's plots                                    5, 7
================  ==================================================================  =======
"""
from __future__ import annotations

from .._moved import stage_getattr
from . import stats
from .dataset import as_dataset
from .inference import evaluate, predict
from .inspect import (gate_weights, plot_architecture, plot_gate_distributions, plot_gate_health,
                      plot_gate_heatmap, plot_history, use_book_style)
from .losses import regularization, task_losses
from .loop import History, TrainConfig, fit
from .optimizers import OPTIMIZERS, make_optimizers
from .selection import EarlyStopping, task_models
from .ranking import GroupScore, group_auc, ndcg_at_k, ranking_metrics, recall_at_k
from .calibration import Calibrator, expected_calibration_error, plot_reliability, reliability
from .fusion import Fusion, choose, frontier, plot_frontier, rank, two_task_grid

__all__ = ["stats", "as_dataset", "evaluate", "predict", "gate_weights", "plot_architecture",
           "plot_gate_distributions", "plot_gate_health", "plot_gate_heatmap", "plot_history", "use_book_style",
           "regularization", "task_losses", "OPTIMIZERS", "History", "TrainConfig", "fit",
           "make_optimizers", "EarlyStopping", "task_models", "GroupScore", "group_auc", "ndcg_at_k",
           "recall_at_k", "ranking_metrics", "Calibrator", "expected_calibration_error", "plot_reliability",
           "reliability", "Fusion", "choose", "frontier", "plot_frontier", "rank", "two_task_grid"]

# Release 0.1 had a module train.py; the names it held that this stage does not list still
# resolve, with a DeprecationWarning, for one release (mmoe_annotated._moved).
__getattr__ = stage_getattr(__name__, ("mmoe_annotated.train.loop",))
