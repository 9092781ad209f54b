"""Choosing how long to train: early stopping on a validation metric, per task.

Explained in chapter 7, "Training" (section "Choosing the number of epochs, task by task").

:class:`EarlyStopping` is a setting of :class:`~mmoe_annotated.train.loop.TrainConfig`; ``fit``
asks a :class:`Stopper` after every epoch whether to go on. Each monitored task has its own best
epoch: the epoch of its best validation metric (AUC higher is better, log loss and MSE lower).
Training stops when **every** monitored task has gone ``patience`` epochs without improving by more
than ``min_delta``, or at ``TrainConfig.epochs``, which is then a cap.

Why per task: the tasks of one model rarely peak together, and a ranking metric (AUC) and a
calibration metric (log loss) rarely agree on when a task peaks. A single criterion such as the mean
of the log losses stops when the *first* task overfits, and can stop long before a rare task's
ranking has finished improving. With ``restore="best"`` and one monitored task, the model ends at
that task's best epoch; with ``keep="per_task"``, ``History.best_states`` holds every monitored
task's best weights, and :func:`task_models` turns them into one model per task.
"""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass

import torch

from ..model.mmoe import MultiTaskModel

__all__ = ["EarlyStopping", "Stopper", "task_models", "HIGHER_IS_BETTER"]

#: Metrics where a larger value is better; the others (log loss, MSE) are better smaller.
HIGHER_IS_BETTER = {"auc"}


@dataclass(frozen=True)
class EarlyStopping:
    """Stop on a validation metric. ``tasks=None`` monitors every task of the model.

    ``restore``: ``"best"`` loads the best weights of the monitored task at the end (one task only),
    ``"last"`` keeps the weights of the last epoch trained. ``keep_states``: keep every monitored
    task's best weights in ``History.best_states`` (a copy per task, on the CPU)."""

    metric: str = "auc"
    tasks: tuple[str, ...] | None = None
    patience: int = 2
    min_delta: float = 0.0
    restore: str = "best"
    keep_states: bool = False

    def __post_init__(self):
        if self.metric not in ("auc", "logloss", "mse"):
            raise ValueError(f"EarlyStopping.metric must be 'auc', 'logloss' or 'mse', got {self.metric!r}")
        if self.tasks is not None:
            if isinstance(self.tasks, str) or not self.tasks:
                raise ValueError(f"EarlyStopping.tasks must be a non-empty sequence of task names or None, "
                                 f"got {self.tasks!r}")
            object.__setattr__(self, "tasks", tuple(self.tasks))
        if not isinstance(self.patience, numbers.Integral) or isinstance(self.patience, bool) or self.patience < 1:
            raise ValueError(f"EarlyStopping.patience must be a whole number >= 1, got {self.patience!r}")
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"EarlyStopping.min_delta must be a non-negative number, got {self.min_delta}")
        if self.restore not in ("best", "last"):
            raise ValueError(f"EarlyStopping.restore must be 'best' or 'last', got {self.restore!r}")

    def monitored(self, task_names) -> tuple[str, ...]:
        """The tasks it watches, checked against the model's."""
        tasks = self.tasks or tuple(task_names)
        unknown = [t for t in tasks if t not in task_names]
        if unknown:
            raise ValueError(f"EarlyStopping.tasks names {unknown}, which the model does not have "
                             f"(its tasks: {list(task_names)})")
        if self.restore == "best" and len(tasks) > 1:
            raise ValueError(f"EarlyStopping(restore='best') restores one task's best weights, but it "
                             f"monitors {list(tasks)}: name one task, or use restore='last' with "
                             "keep_states=True and train.selection.task_models")
        return tasks


class Stopper:
    """The bookkeeping of :class:`EarlyStopping` during one ``fit``: best value and epoch per task."""

    def __init__(self, rule: EarlyStopping, model: MultiTaskModel):
        self.rule, self.tasks = rule, rule.monitored(model.config.task_names)
        self.best = {t: None for t in self.tasks}  # best metric value so far
        self.best_epoch = {t: 0 for t in self.tasks}
        self.states: dict[str, dict[str, torch.Tensor]] = {}
        self.keep = rule.keep_states or rule.restore == "best"

    def _improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.rule.metric in HIGHER_IS_BETTER:
            return value > best + self.rule.min_delta
        return value < best - self.rule.min_delta

    def update(self, record: dict, model: MultiTaskModel, epoch: int) -> bool:
        """Read this epoch's validation metrics from its ``History`` record; True: stop
        now."""
        for t in self.tasks:
            value = record[f"valid_{t}_{self.rule.metric}"]
            if math.isfinite(value) and self._improved(value, self.best[t]):
                self.best[t], self.best_epoch[t] = value, epoch
                if self.keep:
                    self.states[t] = {k: v.detach().cpu().clone()
                                      for k, v in model.state_dict().items()}
        return all(epoch - self.best_epoch[t] >= self.rule.patience for t in self.tasks)

    def finish(self, model: MultiTaskModel, history) -> None:
        """Restore the best weights (``restore="best"``) and record the choice in ``history``."""
        history.best_epochs = dict(self.best_epoch)
        history.best_states = dict(self.states) if self.rule.keep_states else {}
        if self.rule.restore == "best" and self.states:
            model.load_state_dict(self.states[self.tasks[0]])


def task_models(model: MultiTaskModel, history) -> dict[str, MultiTaskModel]:
    """One copy of ``model`` per monitored task, each with that task's best weights
    (``EarlyStopping(keep_states=True)``). Predict task ``t`` with ``task_models(...)[t]``."""
    if not getattr(history, "best_states", None):
        raise ValueError("history holds no best states: train with "
                         "TrainConfig(early_stopping=EarlyStopping(..., keep_states=True))")
    out = {}
    for task, state in history.best_states.items():
        out[task] = copy.deepcopy(model)
        out[task].load_state_dict(state)
        out[task].eval()
    return out
