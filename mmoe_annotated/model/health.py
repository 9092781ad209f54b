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

* a **dead expert**: its mean share is near zero for *every* task, so it receives almost no
  gradient and stops learning (a wasted expert, or a sign of collapse onto the others);
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

__all__ = ["expert_utilization", "gate_distance", "gate_entropy", "dead_experts", "polarized_gates", "gate_statistics"]


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


def expert_utilization(gates: np.ndarray, task_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean gate weight per task (rows) and expert (columns): how much each task uses each expert."""
    gates = _gates(gates)
    T, E = gates.shape[1:]
    return pd.DataFrame(gates.mean(axis=0), index=pd.Index(_names(task_names, T), name="task"),
                        columns=pd.Index([f"expert {e}" for e in range(E)], name="expert"))


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


def dead_experts(gates: np.ndarray, threshold: float = 0.01) -> list[int]:
    """Experts whose mean share is below ``threshold`` for every task (indices into ``E``)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    share = _gates(gates).mean(axis=0)  # (T, E)
    return [int(e) for e in np.flatnonzero((share < threshold).all(axis=0))]


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
                    dead_threshold: float = 0.01, near_one: float = 0.95) -> dict[str, float]:
    """One flat record of gate health (what ``fit`` adds to each epoch's history record):
    ``gate_{task}_entropy``, ``gate_{task}_top_weight``, ``gate_{task}_expert_{e}`` (the mean
    share), and ``gate_dead_experts`` and ``gate_polarized_tasks`` (counts)."""
    gates = _gates(gates)
    names = _names(task_names, gates.shape[1])
    record: dict[str, float] = {}
    util = gates.mean(axis=0)  # (T, E)
    pol = polarized_gates(gates, names, near_one=near_one)
    for t, (name, ent) in enumerate(zip(names, gate_entropy(gates))):
        record[f"gate_{name}_entropy"] = float(ent)
        record[f"gate_{name}_top_weight"] = float(pol["mean_top_weight"].iloc[t])
        record.update({f"gate_{name}_expert_{e}": float(u) for e, u in enumerate(util[t])})
    record["gate_dead_experts"] = len(dead_experts(gates, dead_threshold))
    record["gate_polarized_tasks"] = int(pol["polarized"].sum())
    return record
