"""The paper's Census-Income experiment (section 6.3, Tables 1 and 2) with the package's public API.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``).
Run from a shell with ``python -m mmoe_annotated.experiments census --out DIR``.

The protocol, step by step:

1. Load the data (:func:`mmoe_annotated.data.census.load_census`), derive the three labels, split the
   test file 1:1 into validation and test with a fixed seed
   (:func:`~mmoe_annotated.data.census.split_validation`).
2. Encode the 31 categorical columns with one :class:`~mmoe_annotated.FeatureEncoder`, fit on the
   training file, and min-max scale the 7 numeric ones (:func:`~.census_protocol.prepare`).
3. Optionally search a small grid per model and task group (:data:`~.census_search.SEARCH_GRID`) on
   the validation AUC of the main task, with one seed kept apart from the reported ones.
4. Train every model ``seeds`` times with :func:`mmoe_annotated.fit` and report validation and
   test AUC per task (:func:`mmoe_annotated.evaluate`) and, for the gated models, each task's mean
   gate weights on the test rows (:func:`mmoe_annotated.predict`): :func:`run_census`.

Single-Task trains one network per label; its never-married network serves both groups (the
inputs are the same in both). Runs of one seed share the order of the training batches across
models, so differences between models can be taken seed by seed (:func:`~.census_report.paired`).

CGC and PLE (chapter 10, ``book/10_beyond_mmoe.ipynb``) run on the same protocol with
``--models cgc ple``: same data, split, batch order per seed and training settings, so their runs
pair seed by seed with the committed Shared-Bottom and MMoE runs (the seesaw on real data).

The runs go one after another through the ordinary ``fit``: :class:`~.batched.StackedRuns`, which
trains many seeds as one batched model in the synthetic study, takes dense inputs and a squared
loss, and these models need the embedding lookups and binary losses of ``fit``.

This module holds the runs; it also lists the study's other names, so that
``from mmoe_annotated.experiments import census as study`` reaches them all:

====================  ==================================================================
module                what
====================  ==================================================================
``census_protocol``   :class:`CensusExperiment`, :func:`prepare`, the training of one family and seed
``census_search``     :data:`SEARCH_GRID`, :func:`search` and :func:`choose`: the hyper-parameters
``census_report``     :data:`PAPER_TABLES`, the shipped runs, summaries, paired differences, figures
====================  ==================================================================
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data import census
from ..train.inference import predict
from .census_protocol import (_GATED, CENSUS_MODELS, DEFAULT_HPARAMS, EXTRACTION_HPARAMS,
                              EXTRACTION_MODELS, MODEL_NAMES, CensusData, CensusExperiment, family, prepare,
                              tasks_of, train_one)
from .census_report import PAPER_TABLES, gate_table, load_census_run, paired, plot_auc, plot_gates, summarize
from .census_search import SEARCH_GRID, choose, search

__all__ = ["CENSUS_MODELS", "EXTRACTION_MODELS", "EXTRACTION_HPARAMS", "MODEL_NAMES", "PAPER_TABLES",
           "DEFAULT_HPARAMS", "SEARCH_GRID", "CensusExperiment", "family",
           "CensusData", "prepare", "run_census", "search", "choose", "summarize", "paired", "gate_table",
           "load_census_run",
           "plot_auc", "plot_gates", "RESULT_COLUMNS", "GATE_COLUMNS"]

RESULT_COLUMNS = ["model", "group", "seed", "task", "role", "split", "auc", "logloss", "seconds"]
GATE_COLUMNS = ["model", "group", "seed", "task", "expert", "weight"]


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
            model_name, tasks = key.partition("/")[0], tasks_of(key)
            model, _, metrics, seconds = train_one(key, exp, exp.hparams_of(key), seed, data)
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
