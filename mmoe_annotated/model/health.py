"""Gate health: are the experts used, or has the mixture collapsed?

Explained in chapter 5 ("Gates": utilisation and entropy) and chapter 10 ("Beyond MMoE": the
detectors and their record over training). :mod:`mmoe_annotated.train.inspect` re-exports these and
plots them; :func:`~mmoe_annotated.train.loop.fit` records :func:`gate_statistics` once per epoch
when ``TrainConfig.gate_stats`` is on.

Every function reads gate weights ``(M, T, E)`` as returned by ``predict(..., return_gates=True)``:
each ``[m, t, :]`` sums to 1. For CGC and PLE an expert a task may not use has weight exactly 0
for that task (:mod:`mmoe_annotated.model.ple`), so "the experts a task sees" are those with a
positive weight on some row.

Two failure patterns are named:

* a **dead expert**: its mean share is near zero for *every* task whose gate can select it, so it
  receives almost no gradient and stops learning (a wasted expert, or a sign of collapse onto the
  others). Which gates can select which experts is the mask ``can_select`` ``(T, E)``: all True for
  MMoE and OMoE (every gate weighs every expert); for CGC and PLE the last level's ``sees``
  (:func:`selectable_experts` reads it off a model, :func:`extraction_mask` builds it from the
  sizes), so a task expert is judged by its own task's gate alone, never by the gates that
  cannot look at it;
* a **polarized gate**: on most rows the gate puts (nearly) all weight on one expert, so the
  "mixture" is a hard switch; entropy near 0 (Ma et al. 2018, §6.4.2 and Figure 6, find the gate
  of their sparser-labelled task "more focused on a single expert"; Tang et al. 2020, §5.3, study
  PLE's expert utilisation).

Shape letters: ``M`` rows, ``T`` tasks, ``E`` experts.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["expert_utilization", "gate_distance", "gate_entropy", "dead_experts", "selectable_experts",
           "extraction_mask", "polarized_gates", "gate_statistics"]


def _gates(gates) -> np.ndarray:
    gates = np.asarray(gates, dtype=np.float64)
    if gates.ndim != 3 or gates.shape[0] == 0:
        raise ValueError(f"gates must have shape (M, T, E) with M >= 1, got {gates.shape}")
    return gates


def _names(task_names: Sequence[str] | None, T: int) -> list[str]:
    names = list(task_names) if task_names is not None else [f"task {t}" for t in range(T)]
    if len(names) != T:
        raise ValueError(f"{len(names)} task names for {T} tasks")
    return names


def expert_utilization(gates: np.ndarray,
                       task_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean gate weight per task (rows) and expert (columns): how much each task uses
    each expert."""
    gates = _gates(gates)
    T, E = gates.shape[1:]
    return pd.DataFrame(gates.mean(axis=0),
                        index=pd.Index(_names(task_names, T), name="task"),
                        columns=pd.Index([f"expert {e}" for e in range(E)],
                                         name="expert"))


def gate_distance(gates: np.ndarray, a: int = 0, b: int = 1) -> float:
    """Half the L1 distance between tasks ``a`` and ``b``'s mean gate weights: 0 when both read
    the experts in the same proportions (OMoE, by construction), 1 when they read disjoint experts.

    Read it against a control: two tasks with *the same* label, trained the same way, also drift
    apart, because experts can trade places and the towers absorb the difference (chapter 5)."""
    mean = _gates(gates).mean(axis=0)  # (T, E)
    return 0.5 * float(np.abs(mean[a] - mean[b]).sum())


def gate_entropy(gates: np.ndarray, normalized: bool = True) -> np.ndarray:
    """Mean entropy of each task's gate ``(T,)``. Normalised by ``log`` of the number of experts
    the task sees (``E`` for MMoE): 1 means the gate spreads evenly, 0 that it always picks one."""
    gates = _gates(gates)
    ent = -(gates * np.log(np.clip(gates, 1e-12, None))).sum(-1).mean(0)  # (T,)
    if not normalized:
        return ent
    seen = (gates > 0).any(axis=0).sum(-1)  # (T,): experts each task can weigh
    return np.where(seen > 1, ent / np.log(np.maximum(seen, 2)), 0.0)


def dead_experts(gates: np.ndarray, threshold: float = 0.01,
                 can_select=None) -> list[int]:
    """Experts whose mean share is below ``threshold`` for every task whose gate can
    select them (indices into ``E``).

    ``can_select``: a ``(T, E)`` mask, True where task ``t``'s gate can give weight to
    expert ``e``; None means every gate can select every expert (MMoE, OMoE). For CGC
    and PLE pass :func:`selectable_experts` ``(model)`` or :func:`extraction_mask`: a
    task expert is then dead when its own task leaves it, whatever the other tasks
    (which cannot look at it) do. An expert no gate can select is never counted. A gate
    that weighs an expert the mask says it cannot select is an error (the mask belongs
    to another model)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    share = _gates(gates).mean(axis=0)  # (T, E)
    mask = _mask(can_select, share.shape)  # (T, E)
    if (share[~mask] > 1e-6).any():
        t, e = np.argwhere(~mask & (share > 1e-6))[0]
        raise ValueError(f"can_select says task {t} cannot select expert {e}, but its "
                         f"gate gives it a mean weight of {share[t, e]:.3g}: the mask "
                         "does not belong to these gates")
    dead = ((share < threshold) | ~mask).all(axis=0) & mask.any(axis=0)  # (E,)
    return [int(e) for e in np.flatnonzero(dead)]


def _mask(can_select, shape: tuple[int, int]) -> np.ndarray:
    if can_select is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(can_select)
    if mask.shape != shape or mask.dtype != bool:
        raise ValueError(f"can_select must be a boolean mask of shape (T, E) = {shape}, got "
                         f"{mask.dtype} of shape {mask.shape}")
    return mask


def extraction_mask(num_tasks: int, task_experts: int, shared_experts: int) -> np.ndarray:
    """``can_select`` ``(T, E)`` of a CGC or PLE level with ``E = T * task_experts + shared_experts``
    experts in the order ``[task 0's, task 1's, ..., shared]`` (:mod:`mmoe_annotated.model.ple`):
    task ``t`` selects its own ``task_experts`` and every shared one."""
    for name, v in (("num_tasks", num_tasks), ("task_experts", task_experts), ("shared_experts", shared_experts)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (1 if name == "num_tasks" else 0):
            raise ValueError(f"{name} must be a whole number >= {1 if name == 'num_tasks' else 0}, got {v!r}")
    T, mk = int(num_tasks), int(task_experts)
    mask = np.zeros((T, T * mk + int(shared_experts)), dtype=bool)
    for t in range(T):
        mask[t, t * mk:(t + 1) * mk] = True
    mask[:, T * mk:] = True
    return mask


def selectable_experts(model) -> np.ndarray:
    """``can_select`` ``(T, E)`` of a model's gates as ``predict(..., return_gates=True)`` returns
    them: every expert for MMoE and OMoE; for CGC and PLE the last level's ``sees`` (each task's own
    experts and the shared ones). Shared-Bottom has no gates."""
    from .ple import PLE

    if isinstance(model, PLE):
        level = model.levels[-1]
        mask = np.zeros((level.num_tasks, level.num_experts), dtype=bool)
        np.put_along_axis(mask, level.sees.cpu().numpy(), True, axis=1)
        return mask
    if getattr(model, "gating", "none") == "none":
        raise ValueError(f"{type(model).__name__} has no gates: no expert to select")
    return np.ones((model.num_tasks, model.num_experts), dtype=bool)


def polarized_gates(gates: np.ndarray, task_names: Sequence[str] | None = None, *, near_one: float = 0.95,
                    rows: float = 0.9) -> pd.DataFrame:
    """Per task: the mean top gate weight, the share of rows whose top weight is at least
    ``near_one`` (nearly one-hot), and ``polarized``: that share is at least ``rows``."""
    if not 0 < near_one <= 1 or not 0 < rows <= 1:
        raise ValueError(f"near_one and rows must be in (0, 1], got {near_one}, {rows}")
    top = _gates(gates).max(axis=-1)  # (M, T)
    one_hot = (top >= near_one).mean(axis=0)  # (T,)
    return pd.DataFrame({"mean_top_weight": top.mean(axis=0), "one_hot_rows": one_hot,
                         "polarized": one_hot >= rows},
                        index=pd.Index(_names(task_names, top.shape[1]), name="task"))


def gate_statistics(gates: np.ndarray, task_names: Sequence[str] | None = None, *,
                    dead_threshold: float = 0.01, near_one: float = 0.95, can_select=None) -> dict[str, float]:
    """One flat record of gate health (what ``fit`` adds to each epoch's history record):
    ``gate_{task}_entropy``, ``gate_{task}_top_weight``, ``gate_{task}_expert_{e}`` (the mean
    share), and ``gate_dead_experts`` (counted with ``can_select``, see :func:`dead_experts`) and
    ``gate_polarized_tasks`` (counts)."""
    gates = _gates(gates)
    names = _names(task_names, gates.shape[1])
    record: dict[str, float] = {}
    util = gates.mean(axis=0)  # (T, E)
    pol = polarized_gates(gates, names, near_one=near_one)
    for t, (name, ent) in enumerate(zip(names, gate_entropy(gates))):
        record[f"gate_{name}_entropy"] = float(ent)
        record[f"gate_{name}_top_weight"] = float(pol["mean_top_weight"].iloc[t])
        record.update({f"gate_{name}_expert_{e}": float(u) for e, u in enumerate(util[t])})
    record["gate_dead_experts"] = len(dead_experts(gates, dead_threshold, can_select))
    record["gate_polarized_tasks"] = int(pol["polarized"].sum())
    return record
