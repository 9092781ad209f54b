"""The paper's Census-Income experiment (section 6.3, Tables 1 and 2) with the package's public API.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``).
Run from a shell with ``python -m mmoe_annotated.experiments census --out DIR``.

The protocol, step by step:

1. Load the data (:func:`mmoe_annotated.census.load_census`), derive the three labels, split the
   test file 1:1 into validation and test with a fixed seed (:func:`~mmoe_annotated.census.split_validation`).
2. Encode the 31 categorical columns with one :class:`~mmoe_annotated.FeatureEncoder`, fit on the
   training file, and min-max scale the 7 numeric ones.
3. Optionally search a small grid per model and task group (:data:`SEARCH_GRID`) on the
   validation AUC of the main task, with one seed kept apart from the reported ones.
4. Train every model ``seeds`` times with :func:`mmoe_annotated.fit` and report validation and
   test AUC per task (:func:`mmoe_annotated.evaluate`) and, for the gated models, each task's mean
   gate weights on the test rows (:func:`mmoe_annotated.predict`).

Single-Task trains one network per label; its never-married network serves both groups (the
inputs are the same in both). Runs of one seed share the order of the training batches across
models, so differences between models can be taken seed by seed (:func:`paired`).

CGC and PLE (chapter 10, ``book/10_beyond_mmoe.ipynb``) run on the same protocol with
``--models cgc ple``: same data, split, batch order per seed and training settings, so their runs
pair seed by seed with the committed Shared-Bottom and MMoE runs (the seesaw on real data).

The runs go one after another through the ordinary ``fit``: :class:`~.batched.StackedRuns`, which
trains many seeds as one batched model in the synthetic study, takes dense inputs and a squared
loss, and these models need the embedding lookups and binary losses of ``fit``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from typing import Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data import census
from ..features.encoder import FeatureEncoder
from ..train.losses import BALANCING
from ..model.config import ModelConfig
from ..model import build_model
from ..train.loop import TrainConfig, fit
from ..train.inference import evaluate, predict

__all__ = ["CENSUS_MODELS", "EXTRACTION_MODELS", "EXTRACTION_HPARAMS", "MODEL_NAMES", "PAPER_TABLES",
           "DEFAULT_HPARAMS", "SEARCH_GRID", "CensusExperiment",
           "CensusData", "prepare", "run_census", "search", "choose", "summarize", "paired", "gate_table",
           "load_census_run",
           "plot_auc", "plot_gates", "RESULT_COLUMNS", "GATE_COLUMNS"]

#: The models of Tables 1 and 2 that this package builds (L2-Constrained and Cross-Stitch are not built).
CENSUS_MODELS: tuple[str, ...] = ("single_task", "shared_bottom", "omoe", "mmoe")
#: MMoE's successors (chapter 10), run on the same protocol for the seesaw; not in the paper's tables.
EXTRACTION_MODELS: tuple[str, ...] = ("cgc", "ple")
MODEL_NAMES = {"single_task": "Single-Task", "shared_bottom": "Shared-Bottom", "l2_constrained": "L2-Constrained",
               "cross_stitch": "Cross-Stitch", "omoe": "OMoE", "mmoe": "MMoE", "cgc": "CGC", "ple": "PLE"}
_ALL_MODELS = CENSUS_MODELS + EXTRACTION_MODELS
_GATED = ("omoe", "mmoe") + EXTRACTION_MODELS

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

#: The grid searched per model and group (per label for Single-Task): learning rate times size.
#: Sizes are (experts, units per expert) for OMoE and MMoE and (1, units) for the one-bottom models;
#: every size keeps 128 or fewer hidden units per layer, far under the paper's cap of 2,048.
SEARCH_GRID = {
    "lr": (1e-3, 3e-3),
    "moe": ((4, 16), (4, 32), (8, 16)),
    "bottom": ((1, 64), (1, 128)),
    #: CGC and PLE: (task experts per task, shared experts, units), per level.
    "extraction": ((1, 2, 16), (1, 2, 32), (2, 2, 16)),
}
#: Hyper-parameters used without ``--search``: what the committed run's search chose
#: (``census.json`` in the package results records the whole search).
DEFAULT_HPARAMS: dict[str, dict] = {
    "single_task/income": {"lr": 3e-3, "experts": 1, "units": 128},
    "single_task/education": {"lr": 3e-3, "experts": 1, "units": 64},
    "single_task/never_married": {"lr": 3e-3, "experts": 1, "units": 64},
    "shared_bottom/group1": {"lr": 3e-3, "experts": 1, "units": 128},
    "shared_bottom/group2": {"lr": 3e-3, "experts": 1, "units": 128},
    "omoe/group1": {"lr": 3e-3, "experts": 4, "units": 32},
    "omoe/group2": {"lr": 3e-3, "experts": 4, "units": 32},
    "mmoe/group1": {"lr": 3e-3, "experts": 4, "units": 32},
    "mmoe/group2": {"lr": 3e-3, "experts": 4, "units": 16},
}
#: CGC and PLE without ``--search``: what the committed run's search chose (``census_ple.json`` in the
#: package results records it). "experts" counts each task's own experts, "shared" the shared ones,
#: per level.
EXTRACTION_HPARAMS: dict[str, dict] = {
    "cgc/group1": {"lr": 3e-3, "experts": 2, "shared": 2, "units": 16},
    "cgc/group2": {"lr": 3e-3, "experts": 2, "shared": 2, "units": 16},
    "ple/group1": {"lr": 3e-3, "experts": 1, "shared": 2, "units": 32, "levels": 2},
    "ple/group2": {"lr": 3e-3, "experts": 1, "shared": 2, "units": 32, "levels": 2},
}

RESULT_COLUMNS = ["model", "group", "seed", "task", "role", "split", "auc", "logloss", "seconds"]
GATE_COLUMNS = ["model", "group", "seed", "task", "expert", "weight"]


@dataclass(frozen=True)
class CensusExperiment:
    """Settings of one Census run. Frozen and validated once."""

    groups: tuple[int, ...] = (1, 2)
    models: tuple[str, ...] = CENSUS_MODELS
    seeds: int = 3
    first_seed: int = 0
    epochs: int = 4
    batch_size: int = 1024
    emb_dim: int = 4
    tower_units: int = 16
    #: Seed of the 1:1 validation/test split of the test file.
    split_seed: int = 0
    #: Seed of the search runs (kept apart from the reported seeds).
    search_seed: int = 10_000
    #: Use only the first rows of the training file (tests and quick looks); None: all.
    max_train_rows: int | None = None
    device: str = "cpu"
    #: How the task losses are weighted (``TrainConfig.task_balancing``, chapter 10): "fixed" (the
    #: plain sum), "uncertainty" or "gradnorm"; the learned ones need two tasks, so no Single-Task.
    task_balancing: str = "fixed"
    #: Per family key (see :func:`family`): {"lr", "experts", "units"}; missing keys fall back to
    #: :data:`DEFAULT_HPARAMS`, then to lr 3e-3 and 4 x 32 (one bottom of 128).
    hparams: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(int(g) for g in self.groups))
        object.__setattr__(self, "models", tuple(self.models))
        if not self.groups or any(g not in census.GROUPS for g in self.groups):
            raise ValueError(f"groups must be a non-empty subset of {sorted(census.GROUPS)}, got {self.groups}")
        if not self.models or any(m not in _ALL_MODELS for m in self.models):
            raise ValueError(f"models must be a non-empty subset of {list(_ALL_MODELS)}, got {self.models}")
        for name in ("seeds", "epochs", "batch_size", "emb_dim", "tower_units"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")
        if self.task_balancing not in BALANCING:
            raise ValueError(f"task_balancing must be one of {BALANCING}, got {self.task_balancing!r}")
        if self.task_balancing != "fixed" and "single_task" in self.models:
            raise ValueError(f"task_balancing={self.task_balancing!r} weighs two tasks; Single-Task trains one")
        if self.max_train_rows is not None and self.max_train_rows < 10:
            raise ValueError(f"max_train_rows must be None or >= 10, got {self.max_train_rows}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def families(self) -> list[str]:
        """The independent trainings per seed: one per (model, group), one per label for Single-Task."""
        out = []
        for m in self.models:
            if m == "single_task":
                tasks = sorted({t for g in self.groups for t in census.GROUPS[g]}, key=census.TASKS.index)
                out += [family(m, task=t) for t in tasks]
            else:
                out += [family(m, group=g) for g in self.groups]
        return out

    def hparams_of(self, key: str) -> dict:
        if key.startswith(EXTRACTION_MODELS):
            base = {"lr": 3e-3, "experts": 1, "shared": 2, "units": 32, **_levels(key)}
            return {**base, **EXTRACTION_HPARAMS.get(key, {}), **self.hparams.get(key, {})}
        moe = key.startswith(("omoe", "mmoe"))
        base = {"lr": 3e-3, "experts": 4 if moe else 1, "units": 32 if moe else 128}
        return {**base, **DEFAULT_HPARAMS.get(key, {}), **self.hparams.get(key, {})}

    def to_dict(self) -> dict:
        return asdict(self)


def family(model: str, group: int | None = None, task: str | None = None) -> str:
    """Key of one training: ``"mmoe/group1"`` or ``"single_task/income"``."""
    return f"{model}/{task}" if model == "single_task" else f"{model}/group{group}"


def _levels(key: str) -> dict:
    """PLE's depth, part of its hyper-parameters: two levels, as in Tang et al.'s experiments."""
    return {"levels": 2} if key.startswith("ple") else {}


def _tasks_of(key: str) -> tuple[str, ...]:
    model, _, rest = key.partition("/")
    return (rest,) if model == "single_task" else census.GROUPS[int(rest.removeprefix("group"))]


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

@dataclass
class CensusData:
    """Encoded splits: features and the three labels of each, plus the fitted encoder."""

    encoder: FeatureEncoder
    x: dict
    y: dict  # split -> DataFrame of the three label columns
    rows: dict


def prepare(train: pd.DataFrame, test: pd.DataFrame, exp: CensusExperiment) -> CensusData:
    """Labels, the validation/test split and one :class:`FeatureEncoder` fit on the training rows."""
    if exp.max_train_rows is not None:
        train = train.iloc[: exp.max_train_rows]
    train, test = census.add_tasks(train), census.add_tasks(test)
    valid, test = census.split_validation(test, exp.split_seed)
    encoder = FeatureEncoder(census.SPARSE, census.DENSE, emb_dim=exp.emb_dim).fit(train)
    splits = {"train": train, "valid": valid, "test": test}
    return CensusData(encoder, {k: encoder.transform(v) for k, v in splits.items()},
                      {k: v[list(census.TASKS)].reset_index(drop=True) for k, v in splits.items()},
                      {k: len(v) for k, v in splits.items()})


def _configs(key: str, exp: CensusExperiment, hp: dict, seed: int, data: CensusData):
    model = key.partition("/")[0]
    tasks = _tasks_of(key)
    # CGC and PLE: "experts" counts each task's own experts, "shared" the shared ones, per level
    sizes = (dict(num_task_experts=int(hp["experts"]), num_shared_experts=int(hp["shared"]),
                  num_levels=int(hp.get("levels", 1))) if model in EXTRACTION_MODELS
             else dict(num_experts=int(hp["experts"])))
    mc = ModelConfig(data.encoder.features, task_names=tasks, task_types=("binary",) * len(tasks),
                     expert_hidden=(int(hp["units"]),), gate_hidden=(), tower_hidden=(exp.tower_units,),
                     init_std=None, seed=seed, **sizes)
    kind = "shared_bottom" if model == "single_task" else model
    tc = TrainConfig(epochs=exp.epochs, batch_size=exp.batch_size, optimizer="adam", lr=float(hp["lr"]),
                     embedding_l2=0.0, seed=seed, device=exp.device, progress=False,
                     task_balancing=exp.task_balancing)
    return kind, mc, tc


def _train_one(key: str, exp: CensusExperiment, hp: dict, seed: int, data: CensusData, with_history: bool = False):
    kind, mc, tc = _configs(key, exp, hp, seed, data)
    tasks = list(mc.task_names)
    model = build_model(kind, mc)
    started = time.perf_counter()
    valid = (data.x["valid"], data.y["valid"][tasks].to_numpy(np.float32)) if with_history else None
    history = fit(model, (data.x["train"], data.y["train"][tasks].to_numpy(np.float32)), tc, valid=valid)
    metrics = {s: evaluate(model, (data.x[s], data.y[s][tasks].to_numpy(np.float32)), device=exp.device)
               for s in ("valid", "test")}
    return model, history, metrics, time.perf_counter() - started


# ---------------------------------------------------------------------------
# Search and runs
# ---------------------------------------------------------------------------

def _grid(key: str) -> list[dict]:
    if key.startswith(EXTRACTION_MODELS):
        return [{"lr": lr, "experts": e, "shared": s, "units": u, **_levels(key)}
                for lr in SEARCH_GRID["lr"] for e, s, u in SEARCH_GRID["extraction"]]
    sizes = SEARCH_GRID["moe"] if key.startswith(("omoe", "mmoe")) else SEARCH_GRID["bottom"]
    return [{"lr": lr, "experts": e, "units": u} for lr in SEARCH_GRID["lr"] for e, u in sizes]


def search(exp: CensusExperiment, data: CensusData, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Every family's grid (:data:`SEARCH_GRID`) with one seed (``exp.search_seed``); picks the
    setting with the best validation AUC of the family's main task (its first task)."""
    rows = []
    todo = [(k, hp) for k in exp.families() for hp in _grid(k)]
    for key, hp in tqdm(todo, desc="census search", disable=not progress, mininterval=2.0):
        _, history, metrics, seconds = _train_one(key, exp, hp, exp.search_seed, data, with_history=True)
        main = _tasks_of(key)[0]
        rows.append({"family": key, **hp, "valid_auc": metrics["valid"][main]["auc"],
                     "valid_auc_by_epoch": json.dumps([round(v, 5) for v in history[f"valid_{main}_auc"]]),
                     "seconds": round(seconds, 1)})
    table = pd.DataFrame(rows)
    return choose(table), table


def choose(table: pd.DataFrame) -> dict:
    """Per family of a search table, the hyper-parameters of its best validation AUC."""
    best = table.loc[table.groupby("family", sort=False)["valid_auc"].idxmax()]
    return {r.family: {k: (float(v) if k == "lr" else int(v)) for k, v in r._asdict().items()
                       if k in ("lr", "experts", "shared", "units", "levels") and not pd.isna(v)}
            for r in best.itertuples()}


def run_census(exp: CensusExperiment, data: CensusData, progress: bool = True,
               on_seed: Callable[[pd.DataFrame, pd.DataFrame], None] | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every family for every seed. Returns ``(results, gates)``: one row per model, group,
    seed, task and split (:data:`RESULT_COLUMNS`), and one per gated model, group, seed, task and
    expert with the mean gate weight on the test rows (:data:`GATE_COLUMNS`). ``on_seed`` is called
    with both tables after every seed (to save partial results)."""
    results, gates = [], []
    bar = tqdm(total=len(exp.seed_list) * len(exp.families()), desc="census runs", disable=not progress,
               mininterval=2.0)
    for seed in exp.seed_list:
        for key in exp.families():
            model_name, tasks = key.partition("/")[0], _tasks_of(key)
            model, _, metrics, seconds = _train_one(key, exp, exp.hparams_of(key), seed, data)
            groups = ([g for g in exp.groups if tasks[0] in census.GROUPS[g]] if model_name == "single_task"
                      else [int(key.rpartition("group")[2])])
            for g in groups:
                for t in tasks:
                    role = "main" if t == census.GROUPS[g][0] else "aux"
                    for split, m in metrics.items():
                        results.append((model_name, g, seed, t, role, split, m[t]["auc"], m[t]["logloss"],
                                        round(seconds, 2)))
            if model_name in _GATED:  # CGC and PLE: the last level's task gates, 0 where a task cannot look
                _, w = predict(model, data.x["test"], return_gates=True, device=exp.device)  # (M, T, E)
                mean = w.mean(axis=0, dtype=np.float64)  # (T, E); a float32 sum over 50k rows drifts by 1e-4
                for ti, t in enumerate(tasks):
                    gates += [(model_name, groups[0], seed, t, e, float(mean[ti, e])) for e in range(mean.shape[1])]
            bar.update()
        if on_seed is not None:
            on_seed(pd.DataFrame(results, columns=RESULT_COLUMNS), pd.DataFrame(gates, columns=GATE_COLUMNS))
    bar.close()
    return pd.DataFrame(results, columns=RESULT_COLUMNS), pd.DataFrame(gates, columns=GATE_COLUMNS)


# ---------------------------------------------------------------------------
# Reading results
# ---------------------------------------------------------------------------

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
