"""Reading a comparison: paired differences with t intervals, Holm's correction over a declared
family, a bootstrap interval for AUC, and the seeds a comparison needs.

Explained in chapter 7, "Training" (section "Reading a comparison"). Every comparison of models
in the book goes through here, with the reading rules that section teaches:

* **t, not two standard errors.** With ``n`` seeds the 95 % interval of a mean difference is
  ``mean +- t(0.975, n - 1) * sem``; at ``n = 5`` the quantile is 2.78, at ``n = 3`` 4.30, not 2.
* **Declare, then correct.** The primary comparisons are named before the runs
  (:class:`Family`); their p-values are adjusted together with Holm's step-down method, and a
  comparison is decided only when its adjusted p-value is below ``alpha``. Everything else is
  exploratory and says so.
* **Pair only where it helps, and measure that it does.** A paired difference (the same seed,
  split and batch order for both models) removes the variation the two runs share; how much they
  share is their correlation, which :func:`paired` reports. Near zero, pairing gains nothing.
* **Plan on runs you do not report.** :func:`seeds_needed` sizes the next experiment for an
  effect chosen in advance; sizing it from the effect just measured on the same runs inherits
  that estimate's luck (the winner's curse).

SciPy supplies the distributions and tests (``scipy.stats``); Holm's correction is the few lines
of :func:`holm`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["Paired", "paired", "unpaired", "mean_interval", "holm", "Family", "auc_interval", "seeds_needed"]


@dataclass(frozen=True)
class Paired:
    """A paired comparison of ``a`` and ``b`` over ``n`` runs: the differences ``a - b``."""

    n: int
    mean: float  # mean difference
    sd: float  # standard deviation of the differences (n - 1 in the denominator)
    low: float  # t interval of the mean difference, n - 1 degrees of freedom
    high: float
    p: float  # two-sided one-sample t-test of the differences against 0
    wins: int  # runs where a > b
    losses: int  # runs where a < b
    sign_p: float  # two-sided exact sign test (ties left out)
    correlation: float  # Pearson r between a and b: what pairing can remove
    confidence: float = 0.95

    @property
    def sem(self) -> float:
        return self.sd / math.sqrt(self.n)

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """The paired comparison of runs ``a[i]`` and ``b[i]`` (same seed, split and batch order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D and of one length, got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least 2 runs, got {len(a)}")
    d = a - b
    test = stats.ttest_1samp(d, 0.0)
    interval = test.confidence_interval(confidence)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    sign = stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return Paired(n=len(d), mean=float(d.mean()), sd=float(d.std(ddof=1)), low=float(interval.low),
                  high=float(interval.high), p=float(test.pvalue), wins=wins, losses=losses,
                  sign_p=float(sign), correlation=r, confidence=confidence)


def unpaired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """The comparison of two independent sets of runs (Welch's t: unequal variances and sizes).

    Use it where nothing pairs run ``a[i]`` with ``b[i]``, or where the pairs are measured not to
    move together (:func:`paired` reports their correlation): then pairing buys nothing, and the
    Welch interval is the honest one. Returns a :class:`Paired` whose ``sd`` is the standard error
    of the difference times ``sqrt(n)`` (``n`` the smaller group), and whose sign counts are of all
    ``len(a) * len(b)`` cross pairs; ``correlation`` is NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or len(a) < 2 or len(b) < 2:
        raise ValueError(f"each group needs at least 2 runs in a 1-D sequence, got shapes {a.shape}, {b.shape}")
    test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(confidence)
    n = min(len(a), len(b))
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    cross = a[:, None] - b[None, :]
    wins, losses = int((cross > 0).sum()), int((cross < 0).sum())
    return Paired(n=n, mean=float(a.mean() - b.mean()), sd=se * math.sqrt(n), low=float(interval.low),
                  high=float(interval.high), p=float(test.pvalue), wins=wins, losses=losses,
                  sign_p=float("nan"), correlation=float("nan"), confidence=confidence)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the t interval of a mean over runs, ``n - 1`` degrees of freedom."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"an interval needs at least 2 values in a 1-D sequence, got shape {x.shape}")
    if x.std() == 0:
        return float(x.mean()), float(x.mean()), float(x.mean())
    low, high = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return float(x.mean()), float(low), float(high)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given.

    Sorted ascending, the ``i``-th smallest p-value (0-based) of ``m`` is multiplied by
    ``m - i``; each adjusted value is then the running maximum (never smaller than the
    one before it) and at most 1. Rejecting where the adjusted value is below ``alpha``
    keeps the chance of any false finding in the family at most ``alpha``."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p-values must be a 1-D sequence of numbers in [0, 1], got "
                         f"{pvalues!r}")
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))  # (m - i) * p_(i)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


@dataclass
class Family:
    """The primary comparisons of an experiment, declared before it runs and decided together.

    ``Family(["MMoE - Shared-Bottom on income", ...])`` names them; :meth:`add` gives each its
    runs (only declared names are accepted); :meth:`table` reports every one with its Holm-adjusted
    p-value and a decision: ``"a > b"``, ``"a < b"`` or ``"undecided at this budget"``. A
    comparison is decided only when its adjusted p-value is below ``alpha``; the sign of the
    decision is the sign of the mean difference."""

    names: Sequence[str]
    alpha: float = 0.05
    results: dict[str, Paired] = field(default_factory=dict)

    def __post_init__(self):
        self.names = tuple(self.names)
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"declare at least one comparison, each name once; got {self.names!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    def add(self, name: str, a: Sequence[float], b: Sequence[float], *, pair: bool = True) -> Paired:
        """Compare runs ``a`` with runs ``b``: :func:`paired` (``pair=True``) or :func:`unpaired`."""
        if name not in self.names:
            raise KeyError(f"{name!r} was not declared; the family is {list(self.names)}. "
                           "A comparison chosen after seeing the runs is exploratory: report it apart")
        self.results[name] = (paired if pair else unpaired)(a, b, confidence=1 - self.alpha)
        return self.results[name]

    def table(self) -> pd.DataFrame:
        """One row per declared comparison, in the declared order (all must have been added)."""
        missing = [n for n in self.names if n not in self.results]
        if missing:
            raise ValueError(f"comparisons declared but not added: {missing}")
        rows = [self.results[n] for n in self.names]
        adjusted = holm([r.p for r in rows])
        frame = pd.DataFrame({
            "n": [r.n for r in rows], "mean": [r.mean for r in rows], "low": [r.low for r in rows],
            "high": [r.high for r in rows], "p": [r.p for r in rows], "p_holm": adjusted,
            "wins": [r.wins for r in rows], "correlation": [r.correlation for r in rows]},
            index=pd.Index(self.names, name="comparison"))
        frame["decision"] = [_decision(r.mean, p, self.alpha) for r, p in zip(rows, adjusted)]
        return frame


def _decision(mean: float, p_adjusted: float, alpha: float) -> str:
    if p_adjusted >= alpha:
        return "undecided at this budget"
    return "a > b" if mean > 0 else "a < b"


def _auc_of(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUC from the positives' and the negatives' scores along ``axis`` (Mann-Whitney, by ranks:
    a tie counts one half); any leading axes are batches."""
    n1, n0 = pos.shape[axis], neg.shape[axis]
    ranks = stats.rankdata(np.concatenate([pos, neg], axis=axis), axis=axis)
    first = np.take(ranks, np.arange(n1), axis=axis).sum(axis=axis)
    return (first - n1 * (n1 + 1) / 2) / (n1 * n0)


def auc_interval(y: Sequence[int], p: Sequence[float], p_other: Sequence[float] | None = None, *,
                 confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """A bootstrap interval for AUC on one test set: ``(auc, low, high)``.

    The positives and the negatives are resampled separately, with replacement (a stratified
    bootstrap, ``scipy.stats.bootstrap``, percentile method), so every resample keeps the test set's
    class counts and its AUC is defined even with a handful of positives. The interval measures how
    much the AUC depends on which test rows happened to be drawn, for one trained model; it says
    nothing about another seed. With ``p_other`` (a second model's scores on the same rows) it is
    the interval of the difference ``AUC(p) - AUC(p_other)``, each row's two scores resampled
    together."""
    y = np.asarray(y, dtype=np.float64)
    scores = np.asarray(p, dtype=np.float64)[None]  # (1, M) or, with p_other, (2, M)
    if p_other is not None:
        scores = np.concatenate([scores, np.asarray(p_other, dtype=np.float64)[None]])
    if scores.shape[1] != len(y) or not set(np.unique(y)) == {0.0, 1.0}:
        raise ValueError("auc_interval needs 0/1 labels of both classes, one score per label")
    pos, neg = scores[:, y == 1], scores[:, y == 0]

    def statistic(pos, neg, axis=-1):
        aucs = _auc_of(pos, neg, axis)  # (K, resamples): one row per set of scores
        return aucs[0] if len(aucs) == 1 else aucs[0] - aucs[1]

    point = _point(pos, neg)
    res = stats.bootstrap((pos, neg), statistic, vectorized=True, axis=-1, confidence_level=confidence,
                          n_resamples=resamples, method="percentile", batch=50, rng=np.random.default_rng(seed))
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


def _point(pos: np.ndarray, neg: np.ndarray) -> float:
    aucs = [_auc_of(pos[k], neg[k]) for k in range(len(pos))]
    return float(aucs[0] if len(aucs) == 1 else aucs[0] - aucs[1])


def seeds_needed(effect: float, sd: float, *, power: float = 0.8, alpha: float = 0.05,
                 family_size: int = 1, max_n: int = 10_000) -> int:
    """The fewest paired runs for a two-sided t-test to detect a true mean difference ``effect``
    with probability ``power``, when the differences have standard deviation ``sd``.

    ``family_size`` comparisons decided together under Holm are sized at ``alpha / family_size``
    (the level the smallest p-value must beat). Power comes from the noncentral t distribution
    (``scipy.stats.nct``). Choose ``effect`` before looking at the runs it will be tested on."""
    if not (effect != 0 and sd > 0):
        raise ValueError(f"effect must be non-zero and sd positive, got effect={effect}, sd={sd}")
    level = alpha / family_size
    for n in range(2, max_n + 1):
        df, shift = n - 1, abs(effect) / sd * math.sqrt(n)
        t = stats.t.ppf(1 - level / 2, df)
        if stats.nct.sf(t, df, shift) + stats.nct.cdf(-t, df, shift) >= power:
            return n
    raise ValueError(f"more than {max_n} runs would be needed")
