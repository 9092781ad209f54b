"""Tables and figures for the synthetic experiment: the analogues of the paper's Figures 2, 4 and 5.

Explained in chapter 8, "Reproducing the paper" (``book/08_reproducing_paper.ipynb``).

Every function takes the long table that :func:`~.runner.run_synthetic` returns (or
``results.csv`` read back with pandas): one row per model, learning rate, correlation,
seed and evaluation step. Means alone mislead here: a few runs stuck on a plateau
dominate them, so summaries also give medians, quartiles and the share of stuck runs.

This module extracts numbers (final losses, seed-by-seed differences); every interval and
test of a comparison comes from :mod:`mmoe_annotated.train.stats` (``mm.stats``).
"""
from __future__ import annotations

import json
from importlib.resources import files

import numpy as np
import pandas as pd

from ..data.synthetic import PAPER_LIKE, SyntheticConfig, generate, label_correlation
from ..train.inspect import BOOK_MARKERS, _patch_style
from ..train.stats import mean_interval

__all__ = ["PAPER_FIGURE_2", "PAPER_FIGURE_4", "MODEL_NAMES", "STUCK_LOSS", "load_sweep", "final_losses", "summarize",
           "best_lrs", "choose_lrs", "final_by_seed", "aligned", "paired", "plot_label_correlation", "plot_loss_curves", "plot_final_histograms"]

#: Read off the paper's Figure 2: Pearson correlation of the labels at each cosine ``p``.
PAPER_FIGURE_2 = {0.5: 0.08, 0.9: 0.31, 1.0: 0.99}

#: Read off the paper's Figure 4: final task-1 loss, by correlation and model.
PAPER_FIGURE_4 = {0.5: {"mmoe": 0.083, "omoe": 0.146, "shared_bottom": 0.255},
                  1.0: {"mmoe": 0.070, "omoe": 0.078, "shared_bottom": 0.201}}

MODEL_NAMES = {"mmoe": "MMoE", "omoe": "OMoE", "shared_bottom": "Shared-Bottom"}
_COLORS = {"mmoe": "C0", "omoe": "C1", "shared_bottom": "C2"}
_SERIES = {"mmoe": 0, "omoe": 1, "shared_bottom": 2}  # colour, marker, hatch: mm.use_book_style's n-th

#: A run counts as stuck when its final task-1 loss is above this. The book's labels have
#: variance 4.24; in the committed sweep every run that trained well ended below 0.35, and
#: the few that did not sat near 0.9, with task 2 learned (chapter 8 shows the histograms).
STUCK_LOSS = 0.5


def load_sweep(name: str = "synthetic_sweep") -> tuple[pd.DataFrame, dict]:
    """A committed run shipped with the package: its ``results.csv`` table and its ``run.json``
    (the exact command, the machine, the settings). Chapter 8 reports ``synthetic_sweep`` (seeds
    0-19) and picks its learning rates on ``synthetic_selection`` (seeds 100-109, the same
    protocol); both live in the package, not the book, so that the chapter runs in Colab from the
    installed wheel."""
    folder = files("mmoe_annotated.experiments") / "results"
    table, meta = folder / f"{name}.csv.gz", folder / f"{name}.json"
    if not table.is_file():
        known = sorted(p.name.split(".")[0] for p in folder.iterdir() if p.name.endswith(".csv.gz"))
        raise ValueError(f"no committed run {name!r}; the package holds {known}")
    with table.open("rb") as f:
        df = pd.read_csv(f, compression="gzip")
    return df, json.loads(meta.read_text())


def final_losses(df: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run: one row per ``(model, lr, correlation, seed)``."""
    last = df["step"] == df["step"].max()
    return df[last].reset_index(drop=True)


def summarize(df: pd.DataFrame, stuck_loss: float = STUCK_LOSS) -> pd.DataFrame:
    """Final task-1 loss by ``(model, lr, correlation)``: runs, mean with its 95 % t interval
    (``mean_low``, ``mean_high``, from ``mm.stats.mean_interval``; NaN for a single run), median,
    quartiles, stuck share."""
    final = final_losses(df)
    g = final.groupby(["model", "lr", "correlation"])["loss"]
    interval = g.apply(lambda s: mean_interval(s) if len(s) > 1 else (s.mean(), np.nan, np.nan))
    out = pd.DataFrame({
        "runs": g.size(),
        "mean": g.mean(),
        "mean_low": interval.map(lambda t: t[1]),
        "mean_high": interval.map(lambda t: t[2]),
        "median": g.median(),
        "q25": g.quantile(0.25),
        "q75": g.quantile(0.75),
        "stuck": g.apply(lambda s: float((s > stuck_loss).mean())),
    })
    return out.reset_index()


def best_lrs(df: pd.DataFrame, by: str = "mean") -> pd.DataFrame:
    """Per model and correlation, the learning rate with the lowest ``by`` ("mean" or "median") final
    loss in ``df``; rows of :func:`summarize`. Descriptive: picked on the runs it describes, the
    winning setting's loss is biased low (the winner's curse). To choose, use :func:`choose_lrs`
    on runs that are not reported."""
    s = summarize(df)
    return s.loc[s.groupby(["model", "correlation"])[by].idxmin()].reset_index(drop=True)


def choose_lrs(df: pd.DataFrame, by: str = "mean") -> dict[str, float]:
    """One learning rate per model: the one with the lowest ``by`` ("mean" or "median") final loss
    over all of the model's runs in ``df``, every correlation and seed together.

    Chapter 8 calls it on the selection run (seeds it does not report) and then reports the chosen
    settings on the sweep's own seeds. One rate per model, not per correlation, so that a comparison
    across correlations holds the models fixed."""
    if by not in ("mean", "median"):
        raise ValueError(f"by must be 'mean' or 'median', got {by!r}")
    final = final_losses(df)
    score = final.groupby(["model", "lr"])["loss"].agg(by).reset_index()
    best = score.loc[score.groupby("model")["loss"].idxmin()]
    return {str(m): float(lr) for m, lr in zip(best["model"], best["lr"])}


def final_by_seed(df: pd.DataFrame, model: str, lr: float, correlation: float) -> pd.Series:
    """Final task-1 loss of ``(model, lr)`` at ``correlation``: one value per seed, indexed by seed."""
    final = final_losses(df)
    pick = (final["model"] == model) & (final["lr"] == lr) & (final["correlation"] == correlation)
    return final[pick].set_index("seed")["loss"].sort_index()


def aligned(df: pd.DataFrame, a: tuple[str, float], b: tuple[str, float],
            correlation: float) -> tuple[pd.Series, pd.Series]:
    """The final losses of ``a`` and ``b`` (each ``(model, lr)``) on the seeds both have, in one
    seed order: the two arguments of ``mm.stats.paired``."""
    xa, xb = final_by_seed(df, *a, correlation), final_by_seed(df, *b, correlation)
    common = xa.index.intersection(xb.index)
    if common.empty:
        raise ValueError(f"no common seeds for {a} and {b} at correlation {correlation}")
    return xa.loc[common], xb.loc[common]


def paired(df: pd.DataFrame, a: tuple[str, float], b: tuple[str, float], correlation: float) -> pd.Series:
    """Final loss of ``a`` minus that of ``b`` seed by seed (``a``, ``b`` are ``(model, lr)``);
    the runs share task vectors, batches and held-out rows, so the difference is paired. The
    numbers only: its interval and test come from ``mm.stats.paired(*aligned(...))``."""
    xa, xb = aligned(df, a, b, correlation)
    return xa - xb


def plot_label_correlation(ax=None, config: SyntheticConfig = PAPER_LIKE, n_samples: int = 20_000, seed: int = 0):
    """Figure 2: label correlation against ``p``, closed form (line), sampled (dots), paper (crosses)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(4.5, 3.5))[1]
    grid = np.linspace(0, 1, 101)
    ax.plot(grid, [label_correlation(p, config) for p in grid], "-", label="closed form")
    ps = [0.0, 0.25, 0.5, 0.75, 0.9, 1.0]
    sampled = [np.corrcoef(generate(n_samples, p, seed=seed, config=config)[1].T)[0, 1] for p in ps]
    ax.plot(ps, sampled, "o", label=f"sampled ({n_samples:,} rows)")
    ax.plot(list(PAPER_FIGURE_2), list(PAPER_FIGURE_2.values()), "x", ms=9, mew=2, label="paper, Fig. 2")
    ax.set(xlabel="cosine of w1, w2 (task correlation p)", ylabel="Pearson correlation of labels",
           title="Figure 2 analogue")
    ax.legend()
    return ax


def _marker(model: str) -> str:
    return BOOK_MARKERS[_SERIES.get(model, 0)]


def _label(model: str, lr: float, lrs_per_model: int) -> str:
    return MODEL_NAMES.get(model, model) + (f" (lr {lr:g})" if lrs_per_model > 1 else "")


def plot_loss_curves(df: pd.DataFrame, lrs: dict | None = None, stat: str = "mean", axes=None):
    """Figure 4: held-out task-1 loss against step, one panel per correlation, one line per model.

    ``lrs`` picks one learning rate per model (default: every learning rate in ``df``);
    ``stat`` is "mean" (the paper's) or "median"."""
    import matplotlib.pyplot as plt

    corrs = sorted(df["correlation"].unique())
    if axes is None:
        axes = plt.subplots(1, len(corrs), figsize=(4 * len(corrs), 3.4), sharey=True, squeeze=False)[1][0]
    for ax, p in zip(axes, corrs):
        for (model, lr), g in df[df["correlation"] == p].groupby(["model", "lr"], sort=False):
            if lrs is not None and lr != lrs.get(model):
                continue
            n_lr = 1 if lrs is not None else df[df["model"] == model]["lr"].nunique()
            curve = g.groupby("step")["loss"].agg(stat)
            ax.plot(curve.index, curve.values, color=_COLORS.get(model), label=_label(model, lr, n_lr),
                    marker=_marker(model), markevery=0.1,
                    ls="-" if n_lr == 1 or lr == max(df[df["model"] == model]["lr"]) else "--")
        ax.set(title=f"p = {p:g}", xlabel="training step", yscale="log")
    axes[0].set_ylabel(f"{stat} held-out loss (task 1)")
    axes[-1].legend()
    return axes


def plot_final_histograms(df: pd.DataFrame, lrs: dict | None = None, bins=None, axes=None):
    """Figure 5: histograms of the final task-1 loss over runs, one panel per correlation.

    A log-spaced x-axis, as the losses span orders of magnitude between learned and stuck runs."""
    import matplotlib.pyplot as plt

    final = final_losses(df)
    corrs = sorted(final["correlation"].unique())
    if axes is None:
        axes = plt.subplots(1, len(corrs), figsize=(4 * len(corrs), 3.2), sharey=True, squeeze=False)[1][0]
    if bins is None:
        lo, hi = final["loss"].min(), final["loss"].max()
        bins = np.geomspace(max(lo, 1e-3) * 0.9, hi * 1.1, 30)
    for ax, p in zip(axes, corrs):
        for (model, lr), g in final[final["correlation"] == p].groupby(["model", "lr"], sort=False):
            if lrs is not None and lr != lrs.get(model):
                continue
            n_lr = 1 if lrs is not None else final[final["model"] == model]["lr"].nunique()
            ax.hist(g["loss"], bins=bins, label=_label(model, lr, n_lr), **_patch_style(_SERIES.get(model, 0)))
        ax.axvline(STUCK_LOSS, color="k", lw=0.8, ls=":")
        ax.set(title=f"p = {p:g}", xlabel="final held-out loss (task 1)", xscale="log")
    axes[0].set_ylabel("runs")
    axes[-1].legend()
    return axes
