"""The Census-Income study's hyper-parameter search: a small grid per family, and the best of each.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``), step 3
of the protocol in :mod:`mmoe_annotated.experiments.census` (``--search`` on the command line).
Every family trains each setting of :data:`SEARCH_GRID` once, with a seed kept apart from the
reported ones, and :func:`choose` keeps the setting with the best validation AUC of its main task.
"""
from __future__ import annotations

import json

import pandas as pd
from tqdm import tqdm

from .census_protocol import EXTRACTION_MODELS, CensusData, CensusExperiment, levels_of, tasks_of, train_one

__all__ = ["SEARCH_GRID", "search", "choose"]

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


def _grid(key: str) -> list[dict]:
    if key.startswith(EXTRACTION_MODELS):
        return [{"lr": lr, "experts": e, "shared": s, "units": u, **levels_of(key)}
                for lr in SEARCH_GRID["lr"] for e, s, u in SEARCH_GRID["extraction"]]
    sizes = SEARCH_GRID["moe"] if key.startswith(("omoe", "mmoe")) else SEARCH_GRID["bottom"]
    return [{"lr": lr, "experts": e, "units": u} for lr in SEARCH_GRID["lr"] for e, u in sizes]


def search(exp: CensusExperiment, data: CensusData, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Every family's grid (:data:`SEARCH_GRID`) with one seed (``exp.search_seed``); picks the
    setting with the best validation AUC of the family's main task (its first task)."""
    rows = []
    todo = [(k, hp) for k in exp.families() for hp in _grid(k)]
    for key, hp in tqdm(todo, desc="census search", disable=not progress, mininterval=2.0):
        _, history, metrics, seconds = train_one(key, exp, hp, exp.search_seed, data, with_history=True)
        main = tasks_of(key)[0]
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
