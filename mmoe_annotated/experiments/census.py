"""The paper's Census-Income experiment (section 6.3, Tables 1 and 2) with the package's public API.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``).
Run from a shell with ``python -m mmoe_annotated.experiments census --out DIR``.

The protocol, step by step:

1. Load the data (:func:`mmoe_annotated.data.census.load_census`), derive the three labels, split the
   test file 1:1 into validation and test with a fixed seed
   (:func:`~mmoe_annotated.data.census.split_validation`).
2. Encode the 31 categorical columns with one :class:`~mmoe_annotated.FeatureEncoder`, fit on the
   training file, and min-max scale the 7 numeric ones (:func:`~.census_protocol.prepare`).
3. Optionally search a grid per model and task group (:data:`~.census_search.SEARCH_GRID`) on
   the mean validation AUC of the main task over ``search_seeds`` seeds kept apart from the
   reported ones, and check that no choice sits on an edge of its grid
   (:func:`~.census_search.grid_edges`).
4. Train every model ``seeds`` times with :func:`mmoe_annotated.fit` (with ``patience``, each
   stopped at its best validation AUC of the main task) and report validation and test AUC per
   task (:func:`mmoe_annotated.evaluate`), the epochs trained and the parameters outside the
   embedding table; for the gated models, each task's mean gate weights on the test rows
   (:func:`mmoe_annotated.predict`); and every run's learning curve: :func:`run_census`.

Single-Task trains one network per label; its never-married network serves both groups (the
inputs are the same in both). Runs of one seed share the order of the training batches across
models, so differences between models can be taken seed by seed (:func:`~.census_report.paired`).

CGC and PLE (chapter 10, ``book/10_beyond_mmoe.ipynb``) run on the same protocol with
``--models cgc ple``: same data, split, batch order per seed and training settings, so their runs
pair seed by seed with the committed Shared-Bottom and MMoE runs (the seesaw on real data);
``mmoe_matched`` is MMoE at PLE's parameter count, so that PLE against MMoE is not one of sizes.
:func:`rerun` and :func:`rerun_curve` train one family and seed of a shipped run again from its record.

The runs go one after another through the ordinary ``fit``: :class:`~.batched.StackedRuns`, which
trains many seeds as one batched model in the synthetic study, takes dense inputs and a squared
loss, and these models need the embedding lookups and binary losses of ``fit``.

This module holds the runs; it also lists the study's other names, so that
``from mmoe_annotated.experiments import census as study`` reaches them all:

====================  ==================================================================
module                what
====================  ==================================================================
``census_protocol``   :class:`CensusExperiment`, :func:`prepare`, the training of one family and seed
``census_search``     :data:`SEARCH_GRID`, :func:`search`, :func:`choose`, :func:`grid_edges`: the hyper-parameters
``census_report``     :data:`PAPER_TABLES`, the shipped runs, summaries, paired differences, figures
====================  ==================================================================
"""
from __future__ import annotations

from dataclasses import replace
from importlib.resources import files
from typing import Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data import census
from ..train.inference import predict
from .census_protocol import (_GATED, CENSUS_MODELS, DEFAULT_HPARAMS, EXTRACTION_HPARAMS, EXTRACTION_MODELS,
                              MATCHED_MODEL, MODEL_NAMES, CensusData, CensusExperiment, family, prepare, tasks_of,
                              train_one)
from .census_report import (PAPER_TABLES, gate_table, load_census_run, paired, plot_auc, plot_curves, plot_gates,
                             plot_task_weights, search_budget, stopping, summarize)
from .census_search import SEARCH_GRID, best_epoch, choose, grid_edges, search

__all__ = ["CENSUS_MODELS", "EXTRACTION_MODELS", "EXTRACTION_HPARAMS", "MATCHED_MODEL", "MODEL_NAMES",
           "PAPER_TABLES", "DEFAULT_HPARAMS", "SEARCH_GRID", "CensusExperiment", "family",
           "CensusData", "prepare", "run_census", "search", "choose", "grid_edges", "summarize", "paired",
           "gate_table", "load_census_run", "plot_auc", "plot_gates", "RESULT_COLUMNS", "GATE_COLUMNS",
           "TRAINING_COLUMNS", "CURVE_COLUMNS", "train_family", "with_result_columns", "experiment_of", "rerun",
           "rerun_curve", "load_census_curves", "stopping", "search_budget", "plot_curves",
           "plot_task_weights"]

#: The columns of every results table, the first protocol's runs included.
RESULT_COLUMNS = ["model", "group", "seed", "task", "role", "split", "auc", "logloss", "seconds"]
#: What the runs add since the protocol trains to convergence: ``best_epoch``, the epoch of the main
#: task's best validation AUC; ``epochs_run``, the epochs trained; ``params``, the parameters
#: outside the embedding table. The shipped runs of the first protocol lack them.
TRAINING_COLUMNS = ["best_epoch", "epochs_run", "params"]
GATE_COLUMNS = ["model", "group", "seed", "task", "expert", "weight"]
#: A learning curve per run, long: ``column`` is ``valid_<task>_auc`` or ``train_<task>_weight``.
CURVE_COLUMNS = ["model", "group", "seed", "epoch", "column", "value"]


def run_census(exp: CensusExperiment, data: CensusData, progress: bool = True,
               on_seed: Callable[..., None] | None = None,
               with_curves: bool = False) -> tuple[pd.DataFrame, ...]:
    """Train every family for every seed. Returns ``(results, gates)``: one row per
    model, group, seed, task and split (:data:`RESULT_COLUMNS`,
    :data:`TRAINING_COLUMNS`), and one per gated model, group, seed, task and expert
    with the mean gate weight on the test rows (:data:`GATE_COLUMNS`); ``with_curves``
    adds the learning curves (:data:`CURVE_COLUMNS`). ``on_seed`` is called with the
    same tables after every seed (to save partial results)."""
    results, gates, curves = [], [], []
    bar = tqdm(total=len(exp.seed_list) * len(exp.families()), desc="census runs",
               disable=not progress, mininterval=2.0)
    for seed in exp.seed_list:
        for key in exp.families():
            r, g, c = train_family(key, exp, seed, data, with_curves)
            results, gates, curves = results + r, gates + g, curves + c
            bar.update()
        if on_seed is not None:
            on_seed(*_tables(results, gates, curves, with_curves))
    bar.close()
    return _tables(results, gates, curves, with_curves)


def train_family(key: str, exp: CensusExperiment, seed: int, data: CensusData, with_curves: bool = True):
    """One family trained with one seed: its rows of the three tables, ``(results, gates, curves)``.
    Single-Task's network of a task serves every group of ``exp.groups`` that has the task."""
    model_name, tasks = key.partition("/")[0], tasks_of(key)
    model, history, metrics, seconds = train_one(key, exp, exp.hparams_of(key), seed, data, with_history=with_curves)
    groups = ([g for g in exp.groups if tasks[0] in census.GROUPS[g]] if model_name == "single_task"
              else [int(key.rpartition("group")[2])])
    runs = (best_epoch(history, tasks[0]), len(history), model.num_parameters(include_embedding=False))
    results, curves = [], []
    for g in groups:
        for t in tasks:
            role = "main" if t == census.GROUPS[g][0] else "aux"
            results += [(model_name, g, seed, t, role, split, m[t]["auc"], m[t]["logloss"], round(seconds, 2), *runs)
                        for split, m in metrics.items()]
        curves += [(model_name, g, seed, *row) for row in curve_rows(history, tasks)]
    gates = []
    if model_name in _GATED:  # CGC and PLE: the last level's task gates, 0 where a task cannot look
        _, w = predict(model, data.x["test"], return_gates=True, device=exp.device)  # (M, T, E)
        mean = w.mean(axis=0, dtype=np.float64)  # (T, E); a float32 sum over 50k rows drifts by 1e-4
        gates = [(model_name, groups[0], seed, t, e, float(mean[ti, e])) for ti, t in enumerate(tasks)
                 for e in range(mean.shape[1])]
    return results, gates, curves


def _tables(results, gates, curves, with_curves: bool) -> tuple[pd.DataFrame, ...]:
    out = (pd.DataFrame(results, columns=RESULT_COLUMNS + TRAINING_COLUMNS),
           pd.DataFrame(gates, columns=GATE_COLUMNS))
    return out + (pd.DataFrame(curves, columns=CURVE_COLUMNS),) if with_curves else out


def curve_rows(history, tasks) -> list[tuple[int, str, float]]:
    """A learning curve as ``(epoch, column, value)`` rows: each task's validation AUC
    (``valid_<task>_auc``) and, when learned, its task weight (``train_<task>_weight``)."""
    rows = []
    for record in history.records:
        for t in tasks:
            rows += [(int(record["epoch"]), c, float(record[c])) for c in (f"valid_{t}_auc", f"train_{t}_weight")
                     if c in record]
    return rows


def with_result_columns(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` with every column of :data:`TRAINING_COLUMNS`: a run of the first protocol gets
    ``best_epoch``, ``epochs_run`` and ``params`` as NaN."""
    return results.assign(**{c: np.nan for c in TRAINING_COLUMNS if c not in results})


# ---------------------------------------------------------------------------
# Reruns: one family and seed of a shipped run, trained again from its record
# ---------------------------------------------------------------------------

def experiment_of(meta: dict, key: str, balancing: str | dict | None = None) -> CensusExperiment:
    """The settings that trained family ``key`` of a run, read from its JSON record (a merged
    run's parts, or one run's ``settings``). ``balancing`` picks the part of a merged run by how it
    weighted the task losses: a name ("uncertainty") or the settings it must have
    (``{"task_balancing": "gradnorm", "gradnorm_alpha": 0.12}``). Runs of the first protocol record
    no ``patience``: fixed epochs."""
    want = {"task_balancing": balancing} if isinstance(balancing, str) else dict(balancing or {})
    for part in meta.get("parts") or [meta]:
        settings = dict(part.get("settings") or meta.get("settings") or {})
        hparams = settings.pop("hparams", None) or meta.get("settings", {}).get("hparams", {})
        if key not in hparams or any(settings.get(k, getattr(CensusExperiment, k)) != v for k, v in want.items()):
            continue
        known = {k: v for k, v in settings.items() if k in CensusExperiment.__dataclass_fields__}
        return replace(CensusExperiment(**{**known, "models": (key.partition("/")[0],)}), hparams={key: hparams[key]})
    raise ValueError(f"the run's record has no part that trained {key!r}" + (f" with {want}" if want else ""))


def rerun(meta: dict, key: str, seed: int, data: CensusData, balancing: str | dict | None = None) -> pd.DataFrame:
    """Family ``key`` of a run trained again with ``seed`` on its recorded settings: its
    results rows, to compare with the run's own (``data`` from :func:`prepare` with the run's
    ``max_train_rows``)."""
    exp = replace(experiment_of(meta, key, balancing), groups=tuple(census.GROUPS))
    return pd.DataFrame(train_family(key, exp, seed, data)[0], columns=RESULT_COLUMNS + TRAINING_COLUMNS)


def rerun_curve(meta: dict, key: str, seed: int, data: CensusData, epochs: int,
                balancing: str | dict | None = None) -> pd.DataFrame:
    """The first ``epochs`` epochs of family ``key``'s run with ``seed``, trained again: their
    learning-curve rows (:data:`CURVE_COLUMNS`). Early stopping only chooses which epoch to keep
    once training ends, so a run's first epochs are these, however long it trained."""
    exp = replace(experiment_of(meta, key, balancing), groups=tuple(census.GROUPS), epochs=epochs, patience=None)
    return pd.DataFrame(train_family(key, exp, seed, data)[2], columns=CURVE_COLUMNS)


def load_census_curves(name: str) -> pd.DataFrame:
    """The learning curves of a run shipped with the package (``NAME_curves.csv.gz``; runs of the
    first protocol have none)."""
    table = files("mmoe_annotated.experiments") / "results" / f"{name}_curves.csv.gz"
    if not table.is_file():
        raise ValueError(f"the shipped Census run {name!r} has no learning curves ({name}_curves.csv.gz)")
    with table.open("rb") as f:
        return pd.read_csv(f, compression="gzip")
