"""The Census-Income study's hyper-parameter search: a grid per family, the best of each, its edges.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``), step 3
of the protocol in :mod:`mmoe_annotated.experiments.census` (``--search`` on the command line).
Every family trains each setting of its grid (:data:`SEARCH_GRID`) with ``exp.search_seeds`` seeds
kept apart from the reported ones; :func:`choose` keeps the setting with the best *mean* validation
AUC of the family's main task over those seeds. Every family of a kind (one bottom, experts, CGC
and PLE) gets the same settings and seeds (:func:`check_budget`).

A choice on the edge of its grid says the grid was too narrow: the best value may lie beyond it.
:func:`grid_edges` lists the chosen values that sit on an edge, and the command extends the grid
(``--lrs``, ``--sizes``, ``--grid FILE``); with ``--resume`` it trains only the new settings, until
every choice is interior. A second stage (:func:`refine`, ``--refine FOLDER...``) gives every family
one more setting: its chosen size at the learning rate one step beyond those tried, on the side
where its validation AUC rises. Every family gets the same number of trainings, and the one whose
best rate sat on the edge of the grid learns whether it is the best.
"""
from __future__ import annotations

import json
import math
from importlib.resources import files
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .census_protocol import (EXTRACTION_MODELS, MATCHED_MODEL, CensusData, CensusExperiment, levels_of, tasks_of,
                              train_one)

__all__ = ["SEARCH_GRID", "LR_LADDER", "HPARAM_COLUMNS", "SEARCH_COLUMNS", "search", "choose", "grid_of",
           "kind_of", "check_budget", "grid_edges", "refine", "make_grid", "read_hparams", "load_search",
           "best_epoch"]

#: The grid searched per model and group (per label for Single-Task): learning rate times size.
#: Sizes are (experts, units per expert) for OMoE and MMoE and (1, units) for the one-bottom models.
#: Trained with early stopping (patience 5, one seed, group 1) the models wanted small learning rates:
#: validation income AUC of Single-Task (256 units) 0.9455, 0.9462, 0.9454, 0.9450, 0.9434 and of
#: MMoE (8 x 64) -, 0.9438, 0.9461, 0.9446, 0.9440 at 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, after 198,
#: 79, 30-60, 20-25 and 13-17 epochs. So the rates span 3e-4 to 3e-3 (1e-2 and 3e-2 lost by
#: 0.002 to 0.003, several seed spreads). The sizes stop at 256-unit bottoms and 8 x 64 experts:
#: a run at 3e-4 took 80-125 epochs, and larger ones would double the study's CPU time. The study
#: then trains with patience 15 (patience 5 stopped runs on plateaus, ``runs/census/README.md``), and
#: :func:`refine` adds one rate beyond the grid where a family's best sits on its edge.
#: Three sizes of every kind: every family tries the same number of settings (9).
SEARCH_GRID = {
    "lr": (3e-4, 1e-3, 3e-3),
    "moe": ((4, 32), (4, 64), (8, 64)),
    "bottom": ((1, 64), (1, 128), (1, 256)),
    #: CGC and PLE: (task experts per task, shared experts, units), per level.
    "extraction": ((1, 2, 16), (1, 2, 32), (2, 2, 16)),
}
#: The learning rates a second stage (:func:`refine`) steps along: the grid's half-decade spacing.
LR_LADDER = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: The hyper-parameter columns of a search table (``shared`` and ``levels``: CGC and PLE only).
HPARAM_COLUMNS = ("lr", "experts", "shared", "units", "levels")
#: One row per family, setting and seed.
#: ``stage``: 1 for the grid, 2 for a :func:`refine` setting (a table without the column: all 1).
SEARCH_COLUMNS = ["family", "lr", "experts", "units", "shared", "levels", "seed", "stage", "valid_auc",
                  "best_epoch", "epochs_run", "params", "valid_auc_by_epoch", "seconds"]
_SIZE_PARTS = {1: "bottom", 2: "moe", 3: "extraction"}


def kind_of(key: str) -> str:
    """The grid a family searches: "bottom", "moe" or "extraction"."""
    if key.startswith(MATCHED_MODEL):
        raise ValueError(f"{key} is not searched: its size follows PLE's (census_protocol.matched_hparams)")
    if key.startswith(EXTRACTION_MODELS):
        return "extraction"
    return "moe" if key.startswith(("omoe", "mmoe")) else "bottom"


def grid_of(key: str, grid: dict | None = None) -> list[dict]:
    """Every setting family ``key`` tries: each learning rate with each size of its kind."""
    grid = SEARCH_GRID if grid is None else grid
    kind = kind_of(key)
    if kind == "extraction":
        return [{"lr": lr, "experts": e, "shared": s, "units": u, **levels_of(key)}
                for lr in grid["lr"] for e, s, u in grid["extraction"]]
    return [{"lr": lr, "experts": e, "units": u} for lr in grid["lr"] for e, u in grid[kind]]


_grid = grid_of  # the name of 0.2.0's first census runs


def best_epoch(history, task: str) -> int:
    """The epoch of ``task``'s highest validation AUC. With ``patience`` these are the scored
    weights; without, the last epoch's are scored, and ``best_epoch == epochs_run`` says the AUC was
    still rising."""
    if history.best_epochs:
        return int(history.best_epochs[task])
    auc = [v for v in history[f"valid_{task}_auc"]]
    finite = [(v, i) for i, v in enumerate(auc) if not math.isnan(v)]
    return max(finite)[1] + 1 if finite else len(history)


def _setting(row: dict) -> tuple:
    """A row's family, hyper-parameters and seed, comparable across tables (NaN as None)."""
    def clean(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
    return (row["family"], *(clean(row.get(k)) for k in HPARAM_COLUMNS), int(row["seed"]))


def search(exp: CensusExperiment, data: CensusData, progress: bool = True, grid: dict | None = None,
           done: pd.DataFrame | None = None, on_row=None, refined: dict | None = None) -> tuple[dict, pd.DataFrame]:
    """Every family's grid (:func:`grid_of`) with every search seed (``exp.search_seed_list``);
    returns :func:`choose`'s settings and the table (:data:`SEARCH_COLUMNS`). Rows of ``done`` (an
    earlier table) are kept and not trained again; ``on_row(table)`` is called after every training.
    ``refined`` (from :func:`refine`): instead of the grid, each family's one second-stage setting."""
    rows = [] if done is None else done.to_dict(orient="records")
    have = {_setting(r) for r in rows}
    stage = 1 if refined is None else 2
    settings = (lambda k: grid_of(k, grid)) if refined is None else (lambda k: [refined[k]] if k in refined else [])
    todo = [(k, hp, seed) for k in exp.families() if not k.startswith(MATCHED_MODEL)
            for hp in settings(k) for seed in exp.search_seed_list
            if _setting({"family": k, **hp, "seed": seed}) not in have]
    for key, hp, seed in tqdm(todo, desc="census search", disable=not progress, mininterval=2.0):
        model, history, metrics, seconds = train_one(key, exp, hp, seed, data, with_history=True)
        main = tasks_of(key)[0]
        rows.append({"family": key, **hp, "seed": seed, "stage": stage, "valid_auc": metrics["valid"][main]["auc"],
                     "best_epoch": best_epoch(history, main), "epochs_run": len(history),
                     "params": model.num_parameters(include_embedding=False),
                     "valid_auc_by_epoch": json.dumps([round(v, 5) for v in history[f"valid_{main}_auc"]]),
                     "seconds": round(seconds, 1)})
        if on_row is not None:
            on_row(_table(rows))
    table = _table(rows)
    return choose(table), table


def _table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    return table[[c for c in SEARCH_COLUMNS if c in table] + [c for c in table if c not in SEARCH_COLUMNS]]


def _means(table: pd.DataFrame) -> pd.DataFrame:
    """Mean validation AUC per family and setting, over its seeds (a table without ``seed``: one each)."""
    cols = [c for c in HPARAM_COLUMNS if c in table and table[c].notna().any()]
    means = table.groupby(["family", *cols], sort=False, dropna=False)["valid_auc"].agg(["mean", "size"])
    return means.reset_index().rename(columns={"mean": "valid_auc", "size": "seeds"})


def choose(table: pd.DataFrame) -> dict:
    """Per family of a search table, the hyper-parameters of its best mean validation AUC over the
    search seeds (the first such setting in the table on a tie)."""
    if table.empty:
        raise ValueError("the search table is empty: nothing to choose from")
    means = _means(table)
    best = means.loc[means.groupby("family", sort=False)["valid_auc"].idxmax()]
    return {r["family"]: {k: (float(r[k]) if k == "lr" else int(r[k])) for k in HPARAM_COLUMNS
                          if k in r and not pd.isna(r[k])} for r in best.to_dict(orient="records")}


def check_budget(table: pd.DataFrame, search_seeds: int) -> list[str]:
    """What breaks the search's rule, one sentence each: a setting tried with fewer than
    ``search_seeds`` seeds, families of one kind tried on different settings or seeds, or
    families given different numbers of trainings (settings x seeds)."""
    problems = []
    means = _means(table)
    few = means[means["seeds"] < search_seeds]
    problems += [f"{r['family']} tried {dict((k, r[k]) for k in HPARAM_COLUMNS if k in r and not pd.isna(r[k]))} "
                 f"with {r['seeds']} seed(s), fewer than {search_seeds}" for r in few.to_dict(orient="records")]
    counts = table.groupby("family", sort=False).size()
    grid = table[table["stage"].fillna(1) == 1] if "stage" in table else table  # the second stage differs
    for kind in ("bottom", "moe", "extraction"):
        fams = [f for f in counts.index if not f.startswith(MATCHED_MODEL) and kind_of(f) == kind]
        sets = {f: {s[1:] for s in map(_setting, grid[grid["family"] == f].to_dict(orient="records"))}
                for f in fams}
        if len({frozenset(v) for v in sets.values()}) > 1:
            problems.append(f"the {kind} families were not tried alike: "
                            + ", ".join(f"{f} {len(v)} trainings" for f, v in sets.items()))
    # across kinds the settings differ, but not their number: no family gets a larger budget
    sizes = {f: n for f, n in counts.items() if not f.startswith(MATCHED_MODEL)}
    if len(set(sizes.values())) > 1:
        problems.append("the families had different budgets: "
                        + ", ".join(f"{f} {n} trainings" for f, n in sizes.items()))
    return problems


def grid_edges(table: pd.DataFrame, only_edges: bool = True) -> pd.DataFrame:
    """For each family and each hyper-parameter its search varied: the chosen value, the grid's
    lowest and highest, and ``edge`` ("low", "high" or ""). ``only_edges``: only the chosen values
    that sit on an edge, the ones to extend the grid past (an empty table: every choice is interior).
    Each hyper-parameter is read on its own (for OMoE and MMoE: experts, and units, each over the
    sizes tried)."""
    rows = []
    for key, hp in choose(table).items():
        part = table[table["family"] == key]
        for name, value in hp.items():
            values = sorted(part[name].dropna().unique()) if name in part else []
            if len(values) < 2:
                continue  # not searched (one bottom, PLE's levels)
            edge = "low" if value == values[0] else "high" if value == values[-1] else ""
            rows.append({"family": key, "hparam": name, "chosen": value, "low": values[0], "high": values[-1],
                         "edge": edge})
    out = pd.DataFrame(rows, columns=["family", "hparam", "chosen", "low", "high", "edge"])
    return out[out["edge"] != ""].reset_index(drop=True) if only_edges else out


def _ladder_index(lr: float) -> int:
    for i, step in enumerate(LR_LADDER):
        if math.isclose(lr, step, rel_tol=1e-9):
            return i
    raise ValueError(f"learning rate {lr:g} is not on LR_LADDER {LR_LADDER}: cannot step beyond it")


def refine(table: pd.DataFrame) -> dict[str, dict]:
    """Per family of a search table, its second-stage setting: the chosen size at the learning
    rate one step of :data:`LR_LADDER` beyond the rates tried at that size, on the side of the
    chosen rate when it is the lowest or highest tried, else on the side of its better neighbour."""
    means = _means(table)
    out = {}
    for key, hp in choose(table).items():
        rows = means[means["family"] == key]
        for name, value in hp.items():
            if name != "lr" and name in rows:  # the chosen size
                rows = rows[rows[name] == value]
        auc = rows.set_index("lr")["valid_auc"].sort_index()  # per learning rate
        lrs, i = list(auc.index), list(auc.index).index(hp["lr"])
        down = i == 0 or (i < len(lrs) - 1 and auc.iat[i - 1] >= auc.iat[i + 1])
        step = _ladder_index(lrs[0]) - 1 if down else _ladder_index(lrs[-1]) + 1
        if not 0 <= step < len(LR_LADDER):
            raise ValueError(f"{key}: no learning rate on LR_LADDER beyond {lrs[0 if down else -1]:g}")
        out[key] = {**hp, "lr": LR_LADDER[step]}
    return out


def _sizes(texts, where: str = "--sizes") -> dict[str, tuple]:
    """``["256", "8x64", "1x2x16"]`` -> sizes per kind: one number a bottom's units, two an MoE's
    experts x units, three CGC/PLE's task experts x shared experts x units."""
    out: dict[str, list] = {}
    for text in texts:
        try:
            parts = tuple(int(p) for p in str(text).lower().split("x"))
        except ValueError:
            parts = ()
        if len(parts) not in _SIZE_PARTS or min(parts) < 1:
            raise ValueError(f"{where}: {text!r} is not UNITS, EXPERTSxUNITS or TASKxSHAREDxUNITS "
                             "(whole numbers >= 1)")
        kind = _SIZE_PARTS[len(parts)]
        out.setdefault(kind, []).append((1, *parts) if kind == "bottom" else parts)
    return {k: tuple(v) for k, v in out.items()}


def _lrs(values, where: str) -> tuple[float, ...]:
    try:
        lrs = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        lrs = ()
    if not lrs or any(not (math.isfinite(v) and v > 0) for v in lrs):
        raise ValueError(f"{where}: learning rates must be positive numbers, got {values!r}")
    return lrs


def _read_grid(path) -> dict:
    """A JSON grid file: ``{"lr": [...], "bottom": [UNITS, ...], "moe": [[E, U], ...],
    "extraction": [[TASK, SHARED, U], ...]}``, any of the keys."""
    try:
        given = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--grid {path}: cannot read a JSON grid: {e}") from None
    if not isinstance(given, dict) or not set(given) <= set(SEARCH_GRID):
        raise ValueError(f"--grid {path}: expected a JSON object with keys among {list(SEARCH_GRID)}")
    out = {"lr": _lrs(given["lr"], f"--grid {path}: lr")} if "lr" in given else {}
    for kind in set(given) - {"lr"}:
        texts = ["x".join(map(str, s)) if isinstance(s, list) else str(s) for s in given[kind]]
        sizes = _sizes(texts, f"--grid {path}: {kind}")
        if set(sizes) != {kind}:
            parts = {"bottom": 1, "moe": 2, "extraction": 3}[kind]
            raise ValueError(f"--grid {path}: every size of {kind!r} must have {parts} part(s), got {given[kind]!r}")
        out[kind] = sizes[kind]
    return out


def make_grid(lrs=None, sizes=None, grid_file=None, base: dict | None = None) -> dict:
    """A search grid: ``base`` (default :data:`SEARCH_GRID`), then what a JSON ``grid_file`` gives,
    then ``lrs`` and ``sizes`` (``["256", "8x64", "1x2x16"]``: each kind named replaces its sizes)."""
    grid = dict(SEARCH_GRID if base is None else base)
    if grid_file is not None:
        grid.update(_read_grid(grid_file))
    if lrs is not None:
        grid["lr"] = _lrs(lrs, "--lrs")
    grid.update(_sizes(sizes or []))
    return grid


def read_hparams(path) -> dict:
    """A JSON file of hyper-parameters per family, as ``hparams.json`` of a run writes it."""
    try:
        given = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--hparams {path}: cannot read JSON: {e}") from None
    if not isinstance(given, dict) or not all(isinstance(v, dict) and "/" in k for k, v in given.items()):
        raise ValueError(f"--hparams {path}: expected an object FAMILY -> {{lr, experts, units, ...}}, "
                         "e.g. {\"mmoe/group1\": {\"lr\": 0.003, \"experts\": 8, \"units\": 64}}")
    return given


def load_search(name: str) -> pd.DataFrame:
    """The search table of a run shipped with the package: ``NAME_search.csv.gz``, or for the runs
    of 0.2.0's first protocol the table(s) their JSON keeps."""
    folder = files("mmoe_annotated.experiments") / "results"
    table = folder / f"{name}_search.csv.gz"
    if table.is_file():
        with table.open("rb") as f:
            return pd.read_csv(f, compression="gzip")
    if not (folder / f"{name}.json").is_file():
        raise ValueError(f"no shipped Census run {name!r} in the package results")
    meta = json.loads((folder / f"{name}.json").read_text())
    found = [meta["search"]] if "search" in meta else [p["search"] for p in meta.get("parts", []) if "search" in p]
    if not found:
        raise ValueError(f"the shipped run {name!r} records no search")
    return pd.concat([pd.DataFrame(s["table"]) for s in found], ignore_index=True)
