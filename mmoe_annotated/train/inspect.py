"""Looking inside a trained model: gate weights, expert utilisation, gate entropy, plots.

Explained in chapter 5 ("Gates") and chapter 7 ("Training"); gate health (dead experts,
polarized gates, their record over training) in chapter 10 ("Beyond MMoE"). The statistics
live in :mod:`mmoe_annotated.model.health`, which ``fit`` also uses; the architecture
diagrams of chapter 1 are drawn by :func:`plot_architecture` from the package's own
models. :func:`use_book_style`, which every chapter calls first, sets how all of them look.

Shape letters: ``M`` rows, ``T`` tasks, ``E`` experts.
"""
from __future__ import annotations

import sys
from typing import Sequence

import numpy as np
import pandas as pd

from ..features.encoder import FeatureEncoder
from ..model.health import dead_experts, expert_utilization, gate_entropy, gate_statistics, polarized_gates
from ..model.mmoe import MultiTaskModel
from .inference import predict
from .loop import History

__all__ = ["gate_weights", "expert_utilization", "gate_entropy", "dead_experts", "polarized_gates", "gate_statistics",
           "plot_gate_heatmap", "plot_gate_distributions", "plot_gate_health", "plot_history", "plot_architecture",
           "use_book_style", "BOOK_COLORS", "BOOK_MARKERS", "BOOK_LINESTYLES", "BOOK_HATCHES"]

#: Okabe and Ito's colours ("Color Universal Design", 2008), which readers with the common kinds
#: of colour blindness still tell apart; their yellow and black are left out (faint on white, and
#: the colour of the figures' reference lines).
BOOK_COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9")
#: Series n of a figure also gets line style n (lines, by the property cycle), marker n (points:
#: pass ``marker=BOOK_MARKERS[n]``) or hatch n (bars, histograms): a series is never told apart
#: by its colour alone, in grey print as well.
BOOK_MARKERS = ("o", "s", "^", "D", "v", "P")
BOOK_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
BOOK_HATCHES = ("", "//", "..", "xx", "\\\\", "++")


def _pyplot():
    """matplotlib on first use, so that ``import mmoe_annotated`` stays light (about 24 MiB less
    resident memory) in training and serving processes that never plot."""
    import matplotlib.pyplot as plt
    return plt


def use_book_style() -> None:
    """The look of the book's figures, for every figure drawn after the call; calling it again
    changes nothing.

    - The n-th line of an axes takes the n-th of :data:`BOOK_COLORS` and :data:`BOOK_LINESTYLES`
      together (one property cycle); "C0", "C1", ... name these colours. Points take
      :data:`BOOK_MARKERS` and bars :data:`BOOK_HATCHES` where they are drawn (a marker on
      every point of a long line would hide it).
    - Titles, axis labels, ticks and legends in at least 9 pt.
    - In Jupyter, figures as SVG: vector graphics, sharp on any screen and at any zoom (a PNG at
      the default 100 dpi is blurry on a high-density screen). Outside Jupyter nothing else
      changes, and IPython is not imported.
    """
    from cycler import cycler

    plt = _pyplot()
    plt.rcParams.update({
        "axes.prop_cycle": cycler(color=BOOK_COLORS) + cycler(linestyle=BOOK_LINESTYLES),
        "font.size": 10, "axes.titlesize": 11, "figure.titlesize": 11, "axes.labelsize": 10,
        "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 9,
        "lines.markersize": 5,
        "svg.hashsalt": "mmoe-annotated",  # the same figure gives the same SVG file
    })
    ipython = sys.modules.get("IPython")  # imported already when this runs in Jupyter
    if ipython is not None and ipython.get_ipython() is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("svg")


def gate_weights(model: MultiTaskModel, data, *, encoder: FeatureEncoder | None = None,
                 batch_size: int = 8192) -> np.ndarray:
    """Gate weights ``(M, T, E)`` of ``model`` on ``data``; each ``[m, t, :]`` sums to 1."""
    _, gates = predict(model, data, encoder=encoder, batch_size=batch_size, return_gates=True)
    return gates


def plot_gate_heatmap(gates: np.ndarray | pd.DataFrame, task_names: Sequence[str] | None = None, ax=None,
                      title: str = "Mean gate weight per task and expert"):
    """Heat map of :func:`expert_utilization` with the numbers written in the cells."""
    util = gates if isinstance(gates, pd.DataFrame) else expert_utilization(gates, task_names)
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(1.2 + 1.1 * util.shape[1], 0.9 + 0.6 * util.shape[0]))
    im = ax.imshow(util.to_numpy(), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(util.shape[1]), util.columns)
    ax.set_yticks(range(util.shape[0]), util.index)
    for (i, j), v in np.ndenumerate(util.to_numpy()):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    ax.set_title(title)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def _patch_style(n: int) -> dict:
    """Series ``n`` of bars or an ``ax.hist``: its colour, see-through inside, with its hatch and an
    outline in its line style, so that overlapping series stay apart without their colours.

    Every value is a string: matplotlib 3.10's ``hist`` reads a tuple (an RGBA colour, a dash
    pattern) as one value per dataset."""
    from matplotlib.colors import to_hex, to_rgba

    color = f"C{n % len(BOOK_COLORS)}"
    return dict(histtype="stepfilled", facecolor=to_hex(to_rgba(color, 0.4), keep_alpha=True),
                edgecolor=color, linewidth=1.5, hatch=BOOK_HATCHES[n % len(BOOK_HATCHES)],
                linestyle=("-", "--", ":", "-.")[n % 4])


def plot_gate_distributions(gates: np.ndarray, task_names: Sequence[str] | None = None, bins: int = 30):
    """One histogram panel per expert: the distribution of each task's gate weight over rows."""
    gates = np.asarray(gates)
    T, E = gates.shape[1:]
    names = list(task_names) if task_names is not None else [f"task {t}" for t in range(T)]
    fig, axes = _pyplot().subplots(1, E, figsize=(3.2 * E, 2.6), sharey=True, squeeze=False)
    for e, ax in enumerate(axes[0]):
        for t in range(T):
            ax.hist(gates[:, t, e], bins=bins, range=(0, 1), label=names[t], **_patch_style(t))
        ax.set_title(f"expert {e}")
        ax.set_xlabel("gate weight")
    axes[0, 0].set_ylabel("rows")
    axes[0, -1].legend()
    fig.tight_layout()
    return fig


def plot_history(history: History | pd.DataFrame, columns: Sequence[str] | None = None, ax=None,
                 title: str = "Training history"):
    """Line plot of history columns against the epoch (default: every loss column)."""
    frame = history.to_frame() if isinstance(history, History) else history
    cols = list(columns) if columns is not None else [c for c in frame.columns if c.endswith("loss")]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ValueError(f"history has no column(s) {missing}; it has {list(frame.columns)}")
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(6, 3.5))
    for i, c in enumerate(cols):  # each column its own colour, marker (and line style: use_book_style)
        ax.plot(frame.index, frame[c], marker=BOOK_MARKERS[i % len(BOOK_MARKERS)], label=c)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def plot_gate_health(history: History | pd.DataFrame, task_names: Sequence[str], axes=None):
    """Gate health over training, from a history recorded with ``TrainConfig(gate_stats=True)``:
    each task's normalised gate entropy (left) and mean top gate weight (right) per epoch."""
    frame = history.to_frame() if isinstance(history, History) else history
    missing = [f"gate_{t}_entropy" for t in task_names if f"gate_{t}_entropy" not in frame.columns]
    if missing:
        raise ValueError(f"history has no column(s) {missing}: train with TrainConfig(gate_stats=True) and valid=")
    if axes is None:
        _, axes = _pyplot().subplots(1, 2, figsize=(9, 3.2))
    for key, ax, label in (("entropy", axes[0], "gate entropy (1 = even, 0 = one-hot)"),
                           ("top_weight", axes[1], "mean top gate weight")):
        for i, t in enumerate(task_names):
            ax.plot(frame.index, frame[f"gate_{t}_{key}"], marker=BOOK_MARKERS[i % len(BOOK_MARKERS)], label=t)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend()
    return axes


def _box(ax, x, y, w, h, text, color):
    from matplotlib.patches import FancyBboxPatch
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                                facecolor=color, edgecolor="black", linewidth=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=8)


def _arrow(ax, x0, y0, x1, y1, color="black", alpha=1.0):
    from matplotlib.patches import FancyArrowPatch
    ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=8, color=color,
                                 alpha=alpha, linewidth=0.8))


def plot_architecture(model: MultiTaskModel, ax=None, title: str | None = None):
    """Draw ``model`` (MMoE, OMoE or Shared-Bottom) from its own config: input, experts or
    bottom, gates, the weighted sum of the experts each task reads (the paper's Eq. 5 and 7),
    towers and outputs, with the layer widths it really has."""
    c = model.config
    T = c.num_tasks
    gating = model.gating
    if gating not in ("none", "per_task", "shared"):
        raise ValueError(f"plot_architecture draws MMoE, OMoE and Shared-Bottom, not {type(model).__name__}")
    E = 1 if gating == "none" else model.num_experts
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(1.9 * max(E, T) + 2.5, 5.0))
    width = max(E, T, 2) * 1.6
    ax.set_xlim(-1.3, width + 1.3)
    ax.set_ylim(-0.3, 5.3)
    ax.axis("off")
    mid = width / 2
    _box(ax, mid, 0.2, min(width, 3.6), 0.4, f"input x  (I = {model.inputs.output_dim})", "#dddddd")
    xs_e = [width * (i + 0.5) / E for i in range(E)]  # x of each expert (or the one bottom)
    xs_t = [width * (t + 0.5) / T for t in range(T)]  # x of each task's tower
    mlp = " \u2192 ".join(map(str, c.expert_hidden))
    for i, xe in enumerate(xs_e):
        label = f"shared bottom\nMLP {mlp}" if gating == "none" else f"expert {i}\nMLP {mlp}"
        _box(ax, xe, 1.35, min(1.4, width / E - 0.15), 0.55, label, "#9ecae1")
        _arrow(ax, mid, 0.42, xe, 1.06)
    def colors(t):  # task t's colour: the t-th of the property cycle (BOOK_COLORS after use_book_style)
        return f"C{t % 10}"
    if gating == "none":  # the towers read the one bottom directly
        for t, xt in enumerate(xs_t):
            _arrow(ax, xs_e[0], 1.64, xt, 3.55, color=colors(t), alpha=0.8)
    else:
        _draw_gates(ax, model, xs_e, xs_t, mid, colors)
    for t, xt in enumerate(xs_t):
        tower = " \u2192 ".join(map(str, (*c.tower_hidden, 1)))
        _box(ax, xt, 3.8, min(1.4, width / T - 0.15), 0.45, f"tower {c.task_names[t]}\nMLP {tower}", "#a1d99b")
        _arrow(ax, xt, 4.03, xt, 4.55)
        _box(ax, xt, 4.8, 1.2, 0.4, f"{c.task_names[t]} logit", "#ffffff")
    ax.set_title(title or f"{type(model).__name__}: {E} {'bottom' if gating == 'none' else 'experts'}, "
                 f"{T} tasks", fontsize=10)
    return ax


def _draw_gates(ax, model: MultiTaskModel, xs_e: list[float], xs_t: list[float], mid: float, colors) -> None:
    """The gates of :func:`plot_architecture` and their weighted sums: one gate and one sum per task
    (MMoE), or one shared gate whose sum every tower reads (OMoE)."""
    c, gating, E = model.config, model.gating, model.num_experts
    sums = xs_t if gating == "per_task" else [mid]
    gate_mlp = " \u2192 ".join(map(str, c.gate_hidden))
    gate_text = (f"MLP {gate_mlp} \u2192 {E}" if gate_mlp else f"linear \u2192 {E}") + "\nsoftmax"
    for g, xs in enumerate(sums):
        color = colors(g) if gating == "per_task" else "black"
        side = -1 if xs <= mid else 1
        xg = xs + side * 1.25
        name = f"gate {c.task_names[g]}" if gating == "per_task" else "one shared gate"
        _box(ax, xg, 2.9, 1.5, 0.62, f"{name}\n{gate_text}", "#fdd0a2")
        ax.annotate("", xy=(xg, 2.58), xytext=(mid, 0.42),
                    arrowprops=dict(arrowstyle="-|>", color="grey", linestyle=":", lw=0.8,
                                    connectionstyle=f"arc3,rad={0.2 * side}"))
        for xe in xs_e:  # every expert's output enters the weighted sum
            _arrow(ax, xe, 1.64, xs, 2.72, color=color, alpha=0.6)
        ax.add_patch(_pyplot().Circle((xs, 2.9), 0.2, facecolor="white", edgecolor=color, linewidth=1.2,
                                      zorder=3))
        ax.text(xs, 2.9, "\u03a3", ha="center", va="center", fontsize=11, zorder=4)
        _arrow(ax, xg - side * 0.79, 2.9, xs - side * 0.2, 2.9, color=color)  # the gate's E weights
        ax.text(xg, 3.3, f"{E} weights \u2192 \u03a3" if side < 0 else f"\u03a3 \u2190 {E} weights",
                ha="center", fontsize=7, color=color)
        targets = [xs_t[g]] if gating == "per_task" else xs_t
        for t, xt in enumerate(targets):
            _arrow(ax, xs, 3.1, xt, 3.55, color=colors(t if gating != "per_task" else g))
