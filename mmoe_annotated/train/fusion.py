"""Score fusion: one ranking score from the task predictions, its weights, and each user's order.

Explained in chapter 11, "From task scores to a ranking" (``book/11_ranking.ipynb``).

A feed sorts by one number. The two forms production systems use:

* **weighted sum** ``s = sum_t w_t p_t``;
* **weighted product of powers** ``s = prod_t p_t ** w_t``, i.e. ``log s = sum_t w_t log p_t``:
  a relative change in any task's probability moves the score the same way wherever it starts.

With weights ``w_t >= 0`` both are non-decreasing in every task's probability, so an item that
every task prefers is never ranked lower. Only the ratios of the weights change an order.
:func:`frontier` scores a grid of weights on validation rows (each task's NDCG@k of the fused
order, per user), and :func:`choose` picks the weights for a stated goal. A :class:`Fusion` is plain
JSON (:meth:`Fusion.to_dict`), so a checkpoint carries it (``save_checkpoint(..., fusion=)``), and
:func:`rank` turns predictions into each user's ordered items.

Shape letters: ``M`` rows, ``T`` tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .ranking import ndcg_at_k

__all__ = ["FORMS", "Fusion", "rank", "two_task_grid", "frontier", "choose", "plot_frontier"]

FORMS = ("sum", "product")
_EPS = 1e-12  # a probability of 0 in a product is taken as this, so that its log is finite


@dataclass(frozen=True)
class Fusion:
    """Fusion weights per task and the form (``"sum"`` or ``"product"``); validated once."""

    weights: tuple[tuple[str, float], ...]
    form: str = "sum"

    def __post_init__(self):
        weights = tuple((str(k), float(v)) for k, v in dict(self.weights).items())
        object.__setattr__(self, "weights", weights)
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if not weights or any(not np.isfinite(w) or w < 0 for _, w in weights) or not any(w > 0 for _, w in weights):
            raise ValueError(f"weights must be finite, >= 0 and not all 0 (a negative weight would rank an item "
                             f"lower for being better at a task), got {dict(weights)}")

    @classmethod
    def of(cls, form: str = "sum", **weights: float) -> "Fusion":
        """``Fusion.of("product", finish=0.6, like=0.4)``."""
        return cls(tuple(weights.items()), form)

    def score(self, preds, task_names: Sequence[str]) -> np.ndarray:
        """The fused score ``(M,)`` of predictions ``(M, T)`` named ``task_names``."""
        preds = np.asarray(preds, dtype=np.float64)
        names = list(task_names)
        if preds.ndim != 2 or preds.shape[1] != len(names):
            raise ValueError(f"preds must be (M, {len(names)}) for tasks {names}, "
                             f"got {preds.shape}")
        missing = [k for k, _ in self.weights if k not in names]
        if missing:
            raise KeyError(f"fusion weights name tasks {missing} that the predictions "
                           f"lack; they have {names}")
        cols = [names.index(k) for k, _ in self.weights]
        w = np.array([v for _, v in self.weights])  # (T',)
        p = preds[:, cols]  # (M, T')
        if self.form == "sum":
            return p @ w
        return np.exp(np.log(np.clip(p, _EPS, None)) @ w)  # prod p ** w, in logs

    def to_dict(self) -> dict:
        return {"form": self.form, "weights": dict(self.weights)}

    @classmethod
    def from_dict(cls, d: dict) -> "Fusion":
        return cls(tuple(dict(d["weights"]).items()), d["form"])


def rank(fusion: Fusion, preds, task_names: Sequence[str], groups, items=None, k: int | None = None
         ) -> pd.DataFrame:
    """Each user's items from the highest fused score down: columns ``user``, ``item``, ``score``,
    ``rank`` (1 = first). Equal scores keep the order of the rows given (a stable sort), so the same
    input always gives the same order. ``items`` defaults to the row number; ``k`` keeps each
    user's first ``k``."""
    score = fusion.score(preds, task_names)
    groups = np.asarray(groups)
    items = np.arange(len(score)) if items is None else np.asarray(items)
    if not (len(groups) == len(items) == len(score)):
        raise ValueError(f"one user and one item per row: got {len(groups)} users, {len(items)} items, "
                         f"{len(score)} rows of predictions")
    out = pd.DataFrame({"user": groups, "item": items, "score": score})
    out = out.sort_values(["user", "score"], ascending=[True, False], kind="stable")
    out["rank"] = out.groupby("user", sort=False).cumcount() + 1
    if k is not None:
        out = out[out["rank"] <= k]
    return out.reset_index(drop=True)


def two_task_grid(first: str, second: str, steps: int = 21) -> list[dict]:
    """Weights ``{first: 1 - w, second: w}`` for ``w`` from 0 to 1 in ``steps`` equal steps."""
    ws = np.round(np.linspace(0.0, 1.0, int(steps)), 12)  # 0.15, not 0.15000000000000002
    return [{first: float(np.round(1 - w, 12)), second: float(w)} for w in ws]


def frontier(preds, labels, groups, task_names: Sequence[str], grid: Sequence[dict], form: str = "sum",
             k: int = 10) -> pd.DataFrame:
    """For each weighting in ``grid``: each task's per-user NDCG@k of the fused order (its own
    binary label as relevance) and the NDCG@k with the labels' sum as graded relevance. One row per
    weighting, its weights in columns ``w_<task>``."""
    labels = np.asarray(labels, dtype=np.float64)
    rows = []
    for weights in grid:
        fusion = Fusion(tuple(weights.items()), form)
        s = fusion.score(preds, task_names)
        row = {f"w_{t}": w for t, w in fusion.weights}
        for j, t in enumerate(task_names):
            row[f"ndcg_{t}"] = ndcg_at_k(labels[:, j], s, groups, k).value
        row["ndcg_graded"] = ndcg_at_k(labels.sum(1), s, groups, k).value
        rows.append(row)
    return pd.DataFrame(rows).assign(form=form, k=k)


def choose(table: pd.DataFrame, maximise: str, keep: dict[str, float]) -> pd.Series:
    """The row of a :func:`frontier` table with the highest ``ndcg_<maximise>`` among the rows
    whose ``ndcg_<task>`` is within ``keep[task]`` of that task's best on the grid (the first such
    row on a tie)."""
    ok = np.ones(len(table), dtype=bool)
    for task, slack in keep.items():
        col = table[f"ndcg_{task}"]
        ok &= (col >= col.max() - slack).to_numpy()
    allowed = table[ok]
    return allowed.loc[allowed[f"ndcg_{maximise}"].idxmax()]


def plot_frontier(table: pd.DataFrame, x: str, y: str, chosen: pd.Series | None = None, ax=None, label: str = ""):
    """The trade-off as the weights move: ``ndcg_<x>`` against ``ndcg_<y>``, one point per
    weighting, the ``chosen`` one ringed. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 3.8))
    ax.plot(table[f"ndcg_{x}"], table[f"ndcg_{y}"], marker="o", ms=3, label=label or table["form"].iloc[0])
    if chosen is not None:
        ax.scatter([chosen[f"ndcg_{x}"]], [chosen[f"ndcg_{y}"]], s=120, facecolors="none", edgecolors="k",
                   zorder=3)
    k = int(table["k"].iloc[0])
    ax.set(xlabel=f"{x}: NDCG@{k} of the fused order", ylabel=f"{y}: NDCG@{k} of the fused order")
    return ax
