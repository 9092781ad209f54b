"""Ranking metrics per user: group AUC, NDCG@k and recall@k.

Explained in chapter 11, "From task scores to a ranking" (``book/11_ranking.ipynb``).

A feed orders the items *of one user*; a global AUC also rewards telling users apart (a user who
finishes everything ranked above one who finishes nothing), which no feed ever has to do. The
metrics here rank each user's rows only, and average over users:

* **Group AUC** (GAUC), the convention of the industry papers that report it (Zhou et al., KDD
  2018, "Deep Interest Network for Click-Through Rate Prediction", section 6.2; Zhu et al.,
  2017): the AUC of each user's rows, averaged with the user's number of rows (impressions) as
  the weight, over the users whose rows hold both classes; users with one class have no pair to
  rank and are skipped.
* **NDCG@k** (Järvelin and Kekäläinen, 2002), with scikit-learn's conventions (``ndcg_score``):
  linear gain ``rel``, discount ``1 / log2(position + 1)``, tied scores sharing the average gain of
  their positions; averaged with equal weight over the users with at least two rows and one
  relevant row (a user with nothing relevant has no ideal ordering to compare with).
* **Recall@k**: the share of a user's positive rows that reach the top ``k``, averaged over the
  users with a positive row; a tie at the cut counts the expected share of a random order.

Every function takes one row per impression: labels or relevance ``y`` ``(M,)``, scores ``(M,)``
and the user of each row ``groups`` ``(M,)`` (the ``uid`` column in ByteRec). Each returns a
:class:`GroupScore` with the number of users and rows it averaged. The work is vectorised with
pandas (one sort, group-wise ranks), never a Python loop over users.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from .metrics import auc

__all__ = ["GroupScore", "group_auc", "ndcg_at_k", "recall_at_k", "ranking_metrics"]


class GroupScore(NamedTuple):
    """A metric averaged over users: its ``value``, and the ``users`` and ``rows`` it averaged."""

    value: float
    users: int
    rows: int


def _frame(y, scores, groups) -> pd.DataFrame:
    """The three columns, checked: one value each per row, finite scores, known groups."""
    y, s, g = (np.asarray(a) for a in (y, scores, groups))
    if not (y.ndim == s.ndim == g.ndim == 1 and len(y) == len(s) == len(g)):
        raise ValueError(f"labels, scores and groups must be 1-D and of one length, got shapes "
                         f"{y.shape}, {s.shape} and {g.shape}")
    if len(y) == 0:
        raise ValueError("no rows to rank")
    if not np.isfinite(s.astype(np.float64)).all():
        raise ValueError("scores must be finite (a NaN has no place in an order)")
    if pd.isna(g).any():
        raise ValueError("groups (the user of each row) must not be missing")
    return pd.DataFrame({"g": g, "y": y.astype(np.float64), "s": s.astype(np.float64)})


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Each user's rows from the highest score down, with 0-based ``pos``ition and the
    ``first``/``size`` of the block of tied scores each row sits in."""
    df = df.sort_values(["g", "s"], ascending=[True, False], kind="stable")
    df["pos"] = df.groupby("g", sort=False).cumcount()
    ties = df.groupby(["g", "s"], sort=False)["pos"]
    return df.assign(first=ties.transform("min"), size=ties.transform("size"))


def group_auc(y, scores, groups) -> GroupScore:
    """Impression-weighted mean of per-user AUCs over the users with both classes
    (Zhou et al. 2018)."""
    df = _frame(y, scores, groups)
    if not np.isin(df["y"], (0.0, 1.0)).all():
        raise ValueError("group_auc needs 0/1 labels")
    by = df.groupby("g", sort=False)["y"]
    n1, n = by.transform("sum"), by.transform("size")
    df = df[(n1 > 0) & (n1 < n)]
    if df.empty:
        return GroupScore(float("nan"), 0, 0)
    rank = df.groupby("g", sort=False)["s"].rank(method="average")  # a tie: one half
    per = pd.DataFrame({"g": df["g"], "r": rank * df["y"], "y": df["y"]})
    per = per.groupby("g", sort=False)
    pos, size, ranks = per["y"].sum(), per["y"].size(), per["r"].sum()
    aucs = (ranks - pos * (pos + 1) / 2) / (pos * (size - pos))  # Mann-Whitney
    return GroupScore(float(np.average(aucs, weights=size)), len(aucs), int(size.sum()))


def _dcg(df: pd.DataFrame, k: int) -> pd.Series:
    """DCG@k per user of the order in ``df`` (from :func:`_ordered`): a block of tied scores
    shares the mean gain of its rows over the discounts of its positions."""
    discount = np.where(df["pos"] < k, 1.0 / np.log2(df["pos"] + 2.0), 0.0)
    block_gain = df.groupby(["g", "s"], sort=False)["y"].transform("mean")
    return (block_gain * discount).groupby(df["g"], sort=False).sum()


def ndcg_at_k(relevance, scores, groups, k: int = 10) -> GroupScore:
    """Mean NDCG@k over users with at least two rows and a relevant one (``ndcg_score``'s
    conventions: linear gain, tied scores averaged)."""
    k = _check_k(k)
    df = _frame(relevance, scores, groups)
    if (df["y"] < 0).any():
        raise ValueError("relevance must be non-negative")
    by = df.groupby("g", sort=False)["y"]
    df = df[(by.transform("size") >= 2) & (by.transform("max") > 0)]
    if df.empty:
        return GroupScore(float("nan"), 0, 0)
    dcg = _dcg(_ordered(df), k)
    ideal = _dcg(_ordered(df.assign(s=df["y"])), k)  # sorted by relevance: the best order
    return GroupScore(float((dcg / ideal).mean()), len(dcg), len(df))


def recall_at_k(y, scores, groups, k: int = 10) -> GroupScore:
    """Mean share of each user's positives in their top ``k``, over users with a positive row."""
    k = _check_k(k)
    df = _frame(y, scores, groups)
    if not np.isin(df["y"], (0.0, 1.0)).all():
        raise ValueError("recall_at_k needs 0/1 labels")
    df = df[df.groupby("g", sort=False)["y"].transform("max") > 0]
    if df.empty:
        return GroupScore(float("nan"), 0, 0)
    df = _ordered(df)
    inside = np.clip(k - df["first"], 0, df["size"]) / df["size"]  # share of a tie block above the cut
    hits = (df["y"] * inside).groupby(df["g"], sort=False).sum()
    positives = df.groupby("g", sort=False)["y"].sum()
    return GroupScore(float((hits / positives).mean()), len(hits), len(df))


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a whole number >= 1, got {k!r}")
    return int(k)


def ranking_metrics(labels, preds, groups, task_names: Sequence[str], k: int = 10) -> pd.DataFrame:
    """Per task, from labels ``(M, T)`` and probabilities ``(M, T)``: global AUC, group AUC,
    NDCG@k and recall@k, each per-user metric with its number of users. One row per task."""
    labels, preds = np.asarray(labels, dtype=np.float64), np.asarray(preds, dtype=np.float64)
    if labels.shape != preds.shape or labels.ndim != 2 or labels.shape[1] != len(task_names):
        raise ValueError(f"labels {labels.shape} and preds {preds.shape} must both be (M, {len(task_names)})")
    rows = []
    for t, name in enumerate(task_names):
        y, p = labels[:, t], preds[:, t]
        gauc, ndcg, recall = group_auc(y, p, groups), ndcg_at_k(y, p, groups, k), recall_at_k(y, p, groups, k)
        rows.append({"task": name, "auc": auc(y, p, name), "gauc": gauc.value, "gauc_users": gauc.users,
                     f"ndcg@{k}": ndcg.value, "ndcg_users": ndcg.users, f"recall@{k}": recall.value,
                     "recall_users": recall.users})
    return pd.DataFrame(rows).set_index("task")
