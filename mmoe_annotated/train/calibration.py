"""Calibration: whether a predicted 0.3 happens 30 % of the time, and a map that makes it so.

Explained in chapter 11, "From task scores to a ranking" (``book/11_ranking.ipynb``).

* :func:`reliability` bins the predictions and sets each bin's mean prediction beside the rate
  observed in it (the reliability diagram, :func:`plot_reliability`); :func:`expected_calibration_error`
  is the bins' gap ``|observed - predicted|`` averaged with the bins' shares of the rows
  (Naeini et al., AAAI 2015; Guo et al., ICML 2017, equation 3).
* :class:`Calibrator` is a per-task monotone map from a model's probability to a calibrated one,
  fitted on **validation** rows only: Platt scaling (Platt, 1999: a logistic regression on the
  logit of the probability, scikit-learn's ``LogisticRegression`` without a penalty) or isotonic
  regression (Zadrozny and Elkan, KDD 2002: scikit-learn's ``IsotonicRegression``). Both maps are
  non-decreasing, so a user's order of items never changes; only the numbers do.

:func:`~mmoe_annotated.train.inference.predict` keeps returning the model's own probabilities; a
calibrator is applied only when asked (``calibrator.transform(preds)``). Its fitted numbers are
plain JSON (:meth:`Calibrator.to_dict`), so a checkpoint can carry it
(:func:`~mmoe_annotated.checkpoint.save_checkpoint`'s ``calibrator=``).

Shape letters: ``M`` rows, ``T`` tasks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

__all__ = ["reliability", "expected_calibration_error", "plot_reliability", "Calibrator", "METHODS"]

METHODS = ("platt", "isotonic")
_EPS = 1e-12  # probabilities are clipped to [eps, 1 - eps] before their logit is taken


def _check(y, p) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError(f"labels and probabilities must be 1-D, non-empty and of one length, "
                         f"got shapes {y.shape} and {p.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("probabilities must lie in [0, 1]")
    return y, p


def reliability(y, p, bins: int = 10) -> pd.DataFrame:
    """One row per non-empty bin of equal width on [0, 1]: ``predicted`` (mean probability),
    ``observed`` (rate of positives) and ``rows``."""
    y, p = _check(y, p)
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    which = np.minimum((p * bins).astype(int), bins - 1)  # bin b holds [b/bins, (b+1)/bins)
    frame = pd.DataFrame({"bin": which, "p": p, "y": y}).groupby("bin")
    return pd.DataFrame({"predicted": frame["p"].mean(), "observed": frame["y"].mean(),
                         "rows": frame["y"].size()})


def expected_calibration_error(y, p, bins: int = 10) -> float:
    """ECE: ``sum_b (n_b / M) |observed_b - predicted_b|`` over the bins of
    :func:`reliability`."""
    table = reliability(y, p, bins)
    gaps = (table["observed"] - table["predicted"]).abs()
    return float(np.average(gaps, weights=table["rows"]))


def plot_reliability(curves: dict, ax=None, bins: int = 10, title: str = ""):
    """A reliability diagram: ``curves`` maps a label to ``(y, p)``; the diagonal is perfect
    calibration. Marker area follows the bin's rows. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfectly calibrated")
    for label, (y, p) in curves.items():
        table = reliability(y, p, bins)
        ece = expected_calibration_error(y, p, bins)
        ax.plot(table["predicted"], table["observed"], marker="o", ms=4, label=f"{label} (ECE {ece:.3f})")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(fontsize=8, loc="upper left")
    return ax


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


@dataclass
class Calibrator:
    """A per-task map from probability to calibrated probability, fitted on validation rows.

    ``Calibrator("platt")`` or ``Calibrator("isotonic")``; :meth:`fit` on validation predictions
    ``(M, T)`` and labels ``(M, T)``; :meth:`transform` on any predictions ``(N, T)``. Regression
    tasks (``task_types``) pass through unchanged. ``params`` holds each task's fitted numbers:
    Platt's ``a, b`` in ``sigmoid(a * logit(p) + b)``; isotonic's breakpoints ``x, y``, between
    which it interpolates linearly and beyond which it holds the end values (scikit-learn's
    ``out_of_bounds="clip"``)."""

    method: str = "platt"
    task_names: tuple[str, ...] = ()
    task_types: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)
    rows: int = 0  # how many validation rows it was fitted on

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        self.task_names, self.task_types = tuple(self.task_names), tuple(self.task_types)

    @property
    def fitted(self) -> bool:
        return bool(self.params)

    def fit(self, preds, labels, task_names: Sequence[str],
            task_types: Sequence[str] | None = None) -> "Calibrator":
        """Fit each binary task's map on validation predictions ``(M, T)`` and
        labels ``(M, T)``."""
        preds = np.asarray(preds, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.float64)
        task_types = tuple(task_types or ("binary",) * len(task_names))
        shape = (len(preds), len(task_names))
        if preds.ndim != 2 or preds.shape != labels.shape or preds.shape != shape:
            raise ValueError(f"preds {preds.shape} and labels {labels.shape} must "
                             f"both be (M, {len(task_names)})")
        params = {}
        for t, (name, kind) in enumerate(zip(task_names, task_types)):
            if kind != "binary":
                continue
            y, p = _check(labels[:, t], preds[:, t])
            if len(np.unique(y)) < 2:
                raise ValueError(f"task {name!r}: the validation rows hold one class; "
                                 "nothing to calibrate on")
            params[name] = self._fit_one(y, p)
        self.task_names, self.task_types = tuple(task_names), task_types
        self.params, self.rows = params, len(preds)
        return self

    def _fit_one(self, y: np.ndarray, p: np.ndarray) -> dict:
        if self.method == "platt":
            # no penalty (C = inf): the plain maximum-likelihood fit of a and b
            lr = LogisticRegression(C=np.inf).fit(_logit(p)[:, None], y)
            return {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}

    def transform(self, preds) -> np.ndarray:
        """Calibrated predictions ``(N, T)``: each binary task through its fitted map."""
        if not self.fitted:
            raise RuntimeError("the calibrator is not fitted: call fit(valid_preds, valid_labels, task_names)")
        preds = np.asarray(preds, dtype=np.float64)
        if preds.ndim != 2 or preds.shape[1] != len(self.task_names):
            raise ValueError(f"preds must be (N, {len(self.task_names)}) for tasks {self.task_names}, got {preds.shape}")
        out = preds.copy()
        for t, name in enumerate(self.task_names):
            if name in self.params:
                out[:, t] = self.map(name, preds[:, t])
        return out

    def map(self, task: str, p) -> np.ndarray:
        """One task's map applied to probabilities ``p``."""
        q, par = np.asarray(p, dtype=np.float64), self.params[task]
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(par["a"] * _logit(q) + par["b"])))
        return np.interp(q, par["x"], par["y"])  # linear between, clipped beyond

    def to_dict(self) -> dict:
        """JSON-ready: method, tasks, fitted numbers, rows."""
        return {"method": self.method, "task_names": list(self.task_names), "task_types": list(self.task_types),
                "params": self.params, "rows": self.rows}

    @classmethod
    def from_dict(cls, d: dict) -> "Calibrator":
        return cls(method=d["method"], task_names=tuple(d["task_names"]), task_types=tuple(d["task_types"]),
                   params={k: dict(v) for k, v in d["params"].items()}, rows=int(d["rows"]))
