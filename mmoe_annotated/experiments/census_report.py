"""The Census-Income study's results: the shipped runs, their summaries against the paper, figures.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``), and for
CGC and PLE on the same data, chapter 10 (``book/10_beyond_mmoe.ipynb``). Every function takes the
tables that :func:`~.census.run_census` returns (or ``results.csv`` and ``gates.csv`` read back with
pandas, or a committed run from :func:`load_census_run`): one row per model, group, seed, task and
split, and one per gated model, group, seed, task and expert.
"""
from __future__ import annotations

import json
import math
from importlib.resources import files

import numpy as np
import pandas as pd

from ..data import census
from .census_protocol import _ALL_MODELS, MODEL_NAMES

__all__ = ["PAPER_TABLES", "load_census_run", "summarize", "paired", "gate_table", "plot_auc", "plot_gates"]

#: The paper's Tables 1 and 2: per group and model, (main AUC best, main AUC mean, marital AUC best,
#: marital AUC mean) over 400 runs; "best" is the run with the best main-task AUC.
PAPER_TABLES: dict[int, dict[str, tuple[float, float, float, float]]] = {
    1: {"single_task": (0.9398, 0.9337, 0.9933, 0.9922), "shared_bottom": (0.9361, 0.9295, 0.9915, 0.9921),
        "l2_constrained": (0.9389, 0.9359, 0.9922, 0.9918), "cross_stitch": (0.9406, 0.9361, 0.9917, 0.9922),
        "omoe": (0.9387, 0.9319, 0.9928, 0.9923), "mmoe": (0.9410, 0.9359, 0.9926, 0.9927)},
    2: {"single_task": (0.8843, 0.8792, 0.9933, 0.9922), "shared_bottom": (0.8836, 0.8813, 0.9927, 0.9917),
        "l2_constrained": (0.8855, 0.8823, 0.9923, 0.9918), "cross_stitch": (0.8855, 0.8819, 0.9919, 0.9921),
        "omoe": (0.8852, 0.8813, 0.9915, 0.9912), "mmoe": (0.8860, 0.8826, 0.9932, 0.9924)},
}


def load_census_run(name: str = "census") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The committed run shipped with the package: results, gate weights and its ``run.json``."""
    folder = files("mmoe_annotated.experiments") / "results"
    table = folder / f"{name}.csv.gz"
    if not table.is_file():
        raise ValueError(f"no committed Census run {name!r} in the package results")
    with table.open("rb") as f:
        results = pd.read_csv(f, compression="gzip")
    with (folder / f"{name}_gates.csv.gz").open("rb") as f:
        gates = pd.read_csv(f, compression="gzip")
    return results, gates, json.loads((folder / f"{name}.json").read_text())


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per group, model and task: runs, mean and standard deviation of test AUC, and the test
    AUC of the run whose *validation* AUC of the main task was best (the paper's "best", picked
    without looking at test), beside the highest test AUC of any run."""
    test = results[results["split"] == "test"]
    main_valid = results[(results["split"] == "valid") & (results["role"] == "main")]
    best_seed = main_valid.loc[main_valid.groupby(["group", "model"])["auc"].idxmax()].set_index(
        ["group", "model"])["seed"]
    rows = []
    for (g, m, t), s in test.groupby(["group", "model", "task"], sort=False):
        chosen = s[s["seed"] == best_seed.loc[(g, m)]]["auc"]
        rows.append({"group": g, "model": m, "task": t, "role": s["role"].iat[0], "runs": len(s),
                     "mean": s["auc"].mean(), "std": s["auc"].std(ddof=1), "best_on_valid": float(chosen.iat[0]),
                     "max": s["auc"].max()})
    return pd.DataFrame(rows)


def paired(results: pd.DataFrame, a: str, b: str, group: int, task: str, split: str = "test",
           level: float = 0.95) -> dict:
    """AUC of model ``a`` minus model ``b``, seed by seed: mean, a t-interval at ``level``, and the
    share of seeds where ``a`` wins."""
    from scipy import stats

    s = results[(results["group"] == group) & (results["task"] == task) & (results["split"] == split)]
    pick = lambda m: s[s["model"] == m].set_index("seed")["auc"]  # noqa: E731
    diff = (pick(a) - pick(b)).dropna()
    if len(diff) < 2:
        raise ValueError(f"fewer than two common seeds for {a} and {b} in group {group}, task {task}")
    half = stats.t.ppf(0.5 + level / 2, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
    return {"a": a, "b": b, "group": group, "task": task, "seeds": len(diff), "mean": diff.mean(),
            "low": diff.mean() - half, "high": diff.mean() + half, "a_wins": float((diff > 0).mean())}


def gate_table(gates: pd.DataFrame, model: str = "mmoe") -> pd.DataFrame:
    """Per group and seed, how far apart the two tasks' mean gate weights are (half the L1
    distance: 0 when both tasks read the experts alike, 1 when they read disjoint experts)."""
    g = gates[gates["model"] == model]
    rows = []
    for (grp, seed), s in g.groupby(["group", "seed"]):
        w = s.pivot(index="task", columns="expert", values="weight")
        main, aux = census.GROUPS[grp]
        rows.append({"group": grp, "seed": seed, "distance": 0.5 * float(np.abs(w.loc[main] - w.loc[aux]).sum())})
    return pd.DataFrame(rows)


def plot_auc(results: pd.DataFrame, axes=None):
    """Test AUC of every run per model (dots), our mean (bar), the paper's mean and best (marks)."""
    import matplotlib.pyplot as plt

    groups = sorted(results["group"].unique())
    if axes is None:
        _, axes = plt.subplots(len(groups), 2, figsize=(9, 3.2 * len(groups)), squeeze=False)
    test = results[results["split"] == "test"]
    for i, g in enumerate(groups):
        for j, role in enumerate(("main", "aux")):
            ax = axes[i][j]
            s = test[(test["group"] == g) & (test["role"] == role)]
            models = [m for m in _ALL_MODELS if m in set(s["model"])]
            for k, m in enumerate(models):
                v = s[s["model"] == m]["auc"].to_numpy()
                jitter = np.random.default_rng(k).uniform(-0.15, 0.15, len(v))
                ax.plot(k + jitter, v, "o", ms=3, alpha=0.5, color=f"C{k}")
                ax.plot([k - 0.3, k + 0.3], [v.mean()] * 2, color="k", lw=2, label="our mean" if k == 0 else None)
                if m not in PAPER_TABLES[g]:  # CGC and PLE came after the paper
                    continue
                paper = PAPER_TABLES[g][m]
                ax.plot(k, paper[1 + 2 * j], "x", color="r", ms=9, mew=2, label="paper mean" if k == 0 else None)
                ax.plot(k, paper[2 * j], "+", color="m", ms=11, mew=2, label="paper best" if k == 0 else None)
            ax.set_xticks(range(len(models)), [MODEL_NAMES[m] for m in models])
            task = s["task"].iat[0] if len(s) else role
            ax.set(title=f"group {g}: {task} ({role})", ylabel="test AUC")
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    return axes


def plot_gates(gates: pd.DataFrame, group: int, seed: int, model: str = "mmoe", ax=None):
    """One run's mean gate weight per expert for each task (bars side by side)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(4.5, 3))[1]
    s = gates[(gates["model"] == model) & (gates["group"] == group) & (gates["seed"] == seed)]
    w = s.pivot(index="expert", columns="task", values="weight")[list(census.GROUPS[group])]
    width = 0.8 / w.shape[1]
    for i, t in enumerate(w.columns):
        ax.bar(w.index + (i - (w.shape[1] - 1) / 2) * width, w[t], width, label=t)
    ax.set(xlabel="expert", ylabel="mean gate weight (test rows)", xticks=list(w.index),
           title=f"{MODEL_NAMES[model]}, group {group}, seed {seed}")
    ax.legend(fontsize=8)
    return ax
