"""The Census-Income study's results: the shipped runs, their summaries against the paper, figures.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``), and for
CGC and PLE on the same data, chapter 10 (``book/10_beyond_mmoe.ipynb``). Every function takes the
tables that :func:`~.census.run_census` returns (or ``results.csv`` and ``gates.csv`` read back with
pandas, or a shipped run from :func:`load_census_run`): one row per model, group, seed, task and
split, and one per gated model, group, seed, task and expert. Comparisons between models go through
:mod:`mmoe_annotated.train.stats` (chapter 7, "Reading a comparison"); :func:`seed_runs` gives them
their runs, one per seed.
"""
from __future__ import annotations

import json
from importlib.resources import files

import numpy as np
import pandas as pd

from ..data import census
from ..model.health import gate_distance
from ..train import stats
from ..train.inspect import BOOK_HATCHES
from .census_protocol import _ALL_MODELS, MODEL_NAMES

__all__ = ["PAPER_TABLES", "load_census_run", "summarize", "seed_runs", "paired", "gate_table", "plot_auc",
           "plot_gates", "stopping", "search_budget", "plot_curves", "plot_task_weights"]

#: The paper's Tables 1 and 2: per group and model, (main AUC best, main AUC mean, marital AUC "best",
#: marital AUC mean) over 400 runs. "Best" is the run with the best main-task AUC, for both tasks: the
#: marital "best" is the never-married AUC *of that run*, not the best never-married AUC of the 400
#: (so it can sit below the mean, as Shared-Bottom's does in Table 1).
PAPER_TABLES: dict[int, dict[str, tuple[float, float, float, float]]] = {
    1: {"single_task": (0.9398, 0.9337, 0.9933, 0.9922), "shared_bottom": (0.9361, 0.9295, 0.9915, 0.9921),
        "l2_constrained": (0.9389, 0.9359, 0.9922, 0.9918), "cross_stitch": (0.9406, 0.9361, 0.9917, 0.9922),
        "omoe": (0.9387, 0.9319, 0.9928, 0.9923), "mmoe": (0.9410, 0.9359, 0.9926, 0.9927)},
    2: {"single_task": (0.8843, 0.8792, 0.9933, 0.9922), "shared_bottom": (0.8836, 0.8813, 0.9927, 0.9917),
        "l2_constrained": (0.8855, 0.8823, 0.9923, 0.9918), "cross_stitch": (0.8855, 0.8819, 0.9919, 0.9921),
        "omoe": (0.8852, 0.8813, 0.9915, 0.9912), "mmoe": (0.8860, 0.8826, 0.9932, 0.9924)},
}


def load_census_run(name: str = "census") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A run shipped with the package: results, gate weights and its ``run.json``."""
    folder = files("mmoe_annotated.experiments") / "results"
    table = folder / f"{name}.csv.gz"
    if not table.is_file():
        raise ValueError(f"no shipped Census run {name!r} in the package results")
    with table.open("rb") as f:
        results = pd.read_csv(f, compression="gzip")
    with (folder / f"{name}_gates.csv.gz").open("rb") as f:
        gates = pd.read_csv(f, compression="gzip")
    return results, gates, json.loads((folder / f"{name}.json").read_text())


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per group, model and task: runs, mean and standard deviation of test AUC, and the test
    AUC of the run whose *validation* AUC of the main task was best (the paper's "best", picked
    without looking at test), beside the highest test AUC of any run. For the auxiliary task,
    ``best_on_valid`` is that same run's never-married AUC, as in the paper's tables. An undefined
    AUC (a split holding one class of a task) stays undefined (NaN): no run is best on validation
    AUCs that are all undefined, and ``best_on_valid`` is then NaN too."""
    test = results[results["split"] == "test"]
    main_valid = results[(results["split"] == "valid") & (results["role"] == "main")].dropna(subset=["auc"])
    best_seed = main_valid.loc[main_valid.groupby(["group", "model"])["auc"].idxmax()].set_index(
        ["group", "model"])["seed"]
    rows = []
    for (g, m, t), s in test.groupby(["group", "model", "task"], sort=False):
        chosen = s[s["seed"] == best_seed.get((g, m), float("nan"))]["auc"]
        rows.append({"group": g, "model": m, "task": t, "role": s["role"].iat[0], "runs": len(s),
                     "mean": s["auc"].mean(), "std": s["auc"].std(ddof=1),
                     "best_on_valid": float(chosen.iat[0]) if len(chosen) else float("nan"), "max": s["auc"].max()})
    return pd.DataFrame(rows)


def seed_runs(results: pd.DataFrame, model: str, group: int, task: str, split: str = "test",
              metric: str = "auc") -> pd.Series:
    """One model's ``metric`` on one task of one group, one value per seed (indexed and sorted by seed)."""
    s = results[(results["model"] == model) & (results["group"] == group) & (results["task"] == task)
                & (results["split"] == split)]
    if s.empty:
        raise ValueError(f"no {split} runs of {model!r} on {task!r} in group {group}")
    return s.set_index("seed")[metric].sort_index()


def paired(results: pd.DataFrame, a: str, b: str, group: int, task: str, split: str = "test",
           level: float = 0.95) -> dict:
    """AUC of model ``a`` minus model ``b``, seed by seed (:func:`mmoe_annotated.train.stats.paired`):
    mean, the t interval at ``level``, its p-value, the correlation of the paired runs, and the share
    of seeds where ``a`` wins. One comparison alone: a family of them is decided with
    :class:`mmoe_annotated.train.stats.Family`."""
    ra, rb = seed_runs(results, a, group, task, split), seed_runs(results, b, group, task, split)
    common = ra.index.intersection(rb.index)
    if len(common) < 2:
        raise ValueError(f"fewer than two common seeds for {a} and {b} in group {group}, task {task}")
    r = stats.paired(ra.loc[common], rb.loc[common], confidence=level)
    return {"a": a, "b": b, "group": group, "task": task, "seeds": r.n, "mean": r.mean, "low": r.low,
            "high": r.high, "p": r.p, "correlation": r.correlation, "a_wins": r.wins / r.n}


def gate_table(gates: pd.DataFrame, model: str = "mmoe") -> pd.DataFrame:
    """Per group and seed, how far apart the two tasks' mean gate weights are
    (:func:`mmoe_annotated.gate_distance`: half the L1 distance, 0 when both tasks read the experts
    alike, 1 when they read disjoint experts). Read it beside an identical-task control
    (:mod:`~.census_control`): two gates serving one label drift apart too."""
    g = gates[gates["model"] == model]
    rows = []
    for (grp, seed), s in g.groupby(["group", "seed"]):
        w = s.pivot(index="task", columns="expert", values="weight")
        mean = w.loc[list(census.GROUPS[grp])].to_numpy()[None]  # (1, T, E): the means over test rows
        rows.append({"group": grp, "seed": seed, "distance": gate_distance(mean)})
    return pd.DataFrame(rows)


def plot_auc(results: pd.DataFrame, axes=None):
    """Test AUC of every run per model (dots), our mean (bar), the paper's mean and best (marks); on
    the auxiliary task the paper's "best" is its auxiliary AUC at the run best on the main task."""
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
                ax.plot([k - 0.3, k + 0.3], [v.mean()] * 2, "-", color="k", lw=2,
                        label="our mean" if k == 0 else None)
                if m not in PAPER_TABLES[g]:  # CGC and PLE came after the paper
                    continue
                paper = PAPER_TABLES[g][m]
                ax.plot(k, paper[1 + 2 * j], "x", color="r", ms=9, mew=2, label="paper mean" if k == 0 else None)
                best = "paper best" if role == "main" else "paper, at its best main-task run"
                ax.plot(k, paper[2 * j], "+", color="m", ms=11, mew=2, label=best if k == 0 else None)
            ax.set_xticks(range(len(models)), [MODEL_NAMES[m] for m in models])
            task = s["task"].iat[0] if len(s) else role
            ax.set(title=f"group {g}: {task} ({role})", ylabel="test AUC")
            if i == 0:
                ax.legend()
    return axes


def plot_gates(gates: pd.DataFrame, group: int, seed: int, model: str = "mmoe", ax=None):
    """One run's mean gate weight per expert for each task (bars side by side)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(4.5, 3))[1]
    s = gates[(gates["model"] == model) & (gates["group"] == group) & (gates["seed"] == seed)]
    w = s.pivot(index="expert", columns="task", values="weight")[list(census.GROUPS[group])]
    width = 0.8 / w.shape[1]
    for i, t in enumerate(w.columns):  # each task its colour and its hatch
        ax.bar(w.index + (i - (w.shape[1] - 1) / 2) * width, w[t], width, label=t, color=f"C{i}",
               hatch=BOOK_HATCHES[i % len(BOOK_HATCHES)], edgecolor="white")
    ax.set(xlabel="expert", ylabel="mean gate weight (test rows)", xticks=list(w.index),
           title=f"{MODEL_NAMES[model]}, group {group}, seed {seed}")
    ax.legend()
    return ax


def _trainings(results: pd.DataFrame) -> pd.DataFrame:
    """One row per training: ``family`` (``mmoe/group1``, ``single_task/income``), seed and its
    ``best_epoch``, ``epochs_run`` and ``params`` (Single-Task's network serves two groups once)."""
    runs = results[results["split"] == "test"].copy()
    runs["family"] = np.where(runs["model"] == "single_task", "single_task/" + runs["task"],
                              runs["model"] + "/group" + runs["group"].astype(str))
    return runs.drop_duplicates(["family", "seed"])[["family", "model", "seed", "best_epoch", "epochs_run",
                                                     "params"]]


def stopping(results: pd.DataFrame, cap: int) -> pd.DataFrame:
    """How long each family trained: per family, its trainings, the share that early stopping ended
    before the epoch ``cap``, and the median best and last epochs. A run that reached the cap may
    have been still improving; the protocol wants almost none of them."""
    runs = _trainings(results)
    out = runs.groupby("family", sort=False).agg(
        trainings=("seed", "size"), stopped=("epochs_run", lambda e: int((e < cap).sum())),
        best_epoch=("best_epoch", "median"), epochs_run=("epochs_run", "median"), params=("params", "first"))
    out["stopped_share"] = out["stopped"] / out["trainings"]
    return out


def search_budget(table: pd.DataFrame) -> pd.DataFrame:
    """What a search spent per family: settings, seeds, trainings, epochs and CPU hours (from a
    search table, :data:`~.census_search.SEARCH_COLUMNS`)."""
    cols = [c for c in ("lr", "experts", "shared", "units", "levels") if c in table and table[c].notna().any()]
    settings = table.groupby("family", sort=False)[cols].apply(lambda s: len(s.drop_duplicates()))
    out = table.groupby("family", sort=False).agg(seeds=("seed", "nunique"), trainings=("seed", "size"),
                                                  epochs=("epochs_run", "sum"), seconds=("seconds", "sum"))
    out.insert(0, "settings", settings)
    out["hours"] = out.pop("seconds") / 3600
    return out


def _runs_and_median(ax, curve: pd.DataFrame, color: str, label: str) -> None:
    """Every run's curve (thin) and the median over the runs still training (thick), up to the
    epoch where half had stopped."""
    wide = curve.pivot(index="epoch", columns="seed", values="value")  # (epochs, seeds)
    ax.plot(wide.index, wide.to_numpy(), color=color, lw=0.5, alpha=0.15)
    half = wide.notna().sum(axis=1) >= wide.shape[1] / 2
    ax.plot(wide.index[half], wide[half].median(axis=1), color=color, lw=2, label=label)


def plot_curves(curves: pd.DataFrame, group: int, models=None, ax=None):
    """The main task's validation AUC per epoch of every run of ``group`` (thin lines) and per
    model the median over the runs still training (thick), up to the epoch where half had stopped."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    column = f"valid_{census.GROUPS[group][0]}_auc"
    s = curves[(curves["group"] == group) & (curves["column"] == column)]
    models = [m for m in (models or _ALL_MODELS) if m in set(s["model"])]
    for k, m in enumerate(models):
        _runs_and_median(ax, s[s["model"] == m], f"C{k}", MODEL_NAMES[m])
    ax.set(xlabel="epoch", ylabel=f"validation AUC ({census.GROUPS[group][0]})", title=f"group {group}")
    ax.legend()
    return ax


def plot_task_weights(curves: pd.DataFrame, group: int, model: str = "mmoe", ax=None):
    """The learned task weights of ``model``'s runs in ``group`` per epoch: per task (and per
    weighting, where the curves have a ``balancing`` column), the median over the runs still
    training (thick) and every run (thin). Fixed weights record none."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    s = curves[(curves["group"] == group) & (curves["model"] == model)
               & curves["column"].str.startswith("train_") & curves["column"].str.endswith("_weight")]
    if s.empty:
        raise ValueError(f"no learned task weights of {model!r} in group {group} in these curves")
    how = [c for c in ("balancing", "gradnorm_alpha", "balance_lr") if c in s]  # what a merge varied
    for k, (key, part) in enumerate(s.groupby([*how, "column"], sort=True, dropna=False)):
        task = key[-1].removeprefix("train_").removesuffix("_weight")
        named = [str(key[0])] if how and how[0] == "balancing" else []
        named += [f"{c} {v:g}" for c, v in zip(how, key) if c != "balancing" and not pd.isna(v)]
        label = f"{', '.join(named)}: {task}" if named else task
        _runs_and_median(ax, part, f"C{k}", label)
    ax.set(xlabel="epoch", ylabel="task weight", title=f"{MODEL_NAMES[model]}, group {group}")
    ax.legend()
    return ax
