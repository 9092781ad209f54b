"""Chapter 7's comparison, made fair: MMoE, OMoE, Shared-Bottom and Single-Task on the embedded
ByteRec-format data, each stopped task by task on validation, over seeds; and MMoE's gates beside
an identical-task control.

Explained in chapter 7, "Training" (``book/07_training.ipynb``). Run it with
``python -m mmoe_annotated.experiments.byterec --out DIR [--seeds N]``; the package ships the run
the chapter reads (:func:`load_byterec_runs`).

The protocol, the same for every model and seed:

* **Data**: chapter 7's: :func:`~mmoe_annotated.data.load_example` with 20,000 rows; the first 80 %
  train, the last 20 % test; the training rows cut once more, 80 % to fit and 20 % to validate; the
  encoder fit on the training rows (embedding width 4).
* **Training**: the tutorial's recipe (Adagrad at its default rate, batches of 32, DeepCTR-Torch's
  defaults for the networks); seed ``s`` sets the initial weights and the batch order of every
  model; :class:`~mmoe_annotated.train.selection.EarlyStopping` on each task's validation AUC with
  a patience of 2 epochs and a cap of :data:`MAX_EPOCHS`, every task's best weights kept.
* **Scores**: each task's test AUC and log loss from that task's own best weights, and the number
  of parameters outside the embedding table.
* **Models**: MMoE and OMoE (3 experts of (256, 128)); Shared-Bottom at the tutorial's size (one
  bottom of (256, 128)) and **widened** to MMoE's parameter count, so that a difference is not only
  a difference in size; Single-Task, one network per task of Shared-Bottom's shape.
* **Control**: MMoE trained the same way on ``finish`` and an exact copy of ``finish``. Two gates
  that serve the same label have nothing different to route, so how far apart *their* mean gate
  weights drift (:func:`~mmoe_annotated.model.health.gate_distance`) is the yardstick for reading
  the distance between ``finish``'s and ``like``'s gates.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import pandas as pd
import torch

from ..data import DENSE_FEATURES, SPARSE_FEATURES, TASKS, load_example, split_by_row
from ..features import FeatureEncoder
from ..model import ModelConfig, build_model
from ..model.health import gate_distance
from ..train.inference import evaluate, predict
from ..train.loop import TrainConfig, fit
from ..train.selection import EarlyStopping, task_models
from .provenance import provenance, reader_command

__all__ = ["MODELS", "MAX_EPOCHS", "FORMAT_VERSION", "prepare", "model_config", "run_seed", "run_byterec",
           "load_byterec_runs"]

#: The file format of the shipped run (bump it when its columns change).
FORMAT_VERSION = 1
#: The cap on epochs; early stopping ends nearly every run before it.
MAX_EPOCHS = 12
ROWS = 20_000
#: The compared models; "mmoe_control" is MMoE on finish and a copy of finish.
MODELS = ("mmoe", "omoe", "shared_bottom", "shared_bottom_wide", "single_task", "mmoe_control")
COPY = "finish_copy"


def prepare(rows: int = ROWS) -> dict:
    """Chapter 7's splits and encoder: ``{"fit", "valid", "test", "encoder"}``."""
    train, test = split_by_row(load_example(n_rows=rows), 0.8)
    fit_rows, valid_rows = split_by_row(train, 0.8)
    encoder = FeatureEncoder(SPARSE_FEATURES, DENSE_FEATURES, emb_dim=4).fit(train)
    return {"fit": fit_rows, "valid": valid_rows, "test": test, "encoder": encoder}


def _wide_units(features) -> int:
    """The bottom width at which Shared-Bottom's parameters (outside the embedding) come closest
    to MMoE's, with the second layer kept at 128 units."""
    target = build_model("mmoe", ModelConfig(features)).num_parameters(include_embedding=False)
    count = lambda w: build_model("shared_bottom", ModelConfig(features, expert_hidden=(w, 128))
                                  ).num_parameters(include_embedding=False)
    low, high = 128, 4096  # the count grows with the width: bisect
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) < target else (low, mid)
    return min((low, high), key=lambda w: abs(count(w) - target))


def model_config(name: str, features, seed: int, tasks=tuple(TASKS)) -> tuple[str, ModelConfig]:
    """``(kind, config)`` of a compared model for ``tasks``."""
    base = ModelConfig(features, task_names=tuple(tasks), task_types=("binary",) * len(tasks), seed=seed)
    if name in ("mmoe", "omoe", "shared_bottom"):
        return name, base
    if name == "mmoe_control":
        return "mmoe", base
    if name == "shared_bottom_wide":
        return "shared_bottom", replace(base, expert_hidden=(_wide_units(features), 128))
    if name == "single_task":
        return "shared_bottom", base
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def _train_config(seed: int) -> TrainConfig:
    rule = EarlyStopping(metric="auc", patience=2, restore="last", keep_states=True)
    return TrainConfig(batch_size=32, epochs=MAX_EPOCHS, optimizer="adagrad", seed=seed, progress=False,
                       early_stopping=rule)


def _fit_one(kind: str, config: ModelConfig, data: dict, frames: dict) -> list[dict]:
    """Train one model and score each of its tasks from that task's best weights."""
    model = build_model(kind, config)
    started = time.perf_counter()
    history = fit(model, frames["fit"], _train_config(config.seed), encoder=data["encoder"], valid=frames["valid"])
    best = task_models(model, history)
    params = model.num_parameters(include_embedding=False)
    distance = float("nan")
    if kind == "mmoe":  # the gates of the last epoch trained, on the test rows
        _, gates = predict(model, frames["test"], encoder=data["encoder"], return_gates=True)
        distance = gate_distance(gates)
    rows = []
    for t in config.task_names:
        scores = evaluate(best[t], frames["test"], encoder=data["encoder"])[t]
        rows.append({"task": t, "params": params, "best_epoch": history.best_epochs[t], "epochs_run": len(history),
                     "valid_auc": float(history.to_frame()[f"valid_{t}_auc"].max()), "test_auc": scores["auc"],
                     "test_logloss": scores["logloss"], "gate_distance": distance,
                     "seconds": time.perf_counter() - started})
    return rows


def run_seed(seed: int, data: dict, models=MODELS) -> pd.DataFrame:
    """Every model of ``models`` trained with ``seed``: one row per model and task."""
    features = data["encoder"].features
    frames = {k: data[k] for k in ("fit", "valid", "test")}
    copy = {k: v.assign(**{COPY: v["finish"]}) for k, v in frames.items()}
    rows = []
    for name in models:
        if name == "single_task":
            for t in TASKS:
                kind, config = model_config(name, features, seed, tasks=(t,))
                rows += [{"model": name, **r} for r in _fit_one(kind, config, data, frames)]
            continue
        tasks = ("finish", COPY) if name == "mmoe_control" else tuple(TASKS)
        kind, config = model_config(name, features, seed, tasks=tasks)
        rows += [{"model": name, **r} for r in _fit_one(kind, config, data, copy if name == "mmoe_control" else frames)]
    return pd.DataFrame(rows).assign(seed=seed)


def run_byterec(seeds, models=MODELS, rows: int = ROWS, progress: bool = True) -> pd.DataFrame:
    """:func:`run_seed` for every seed, one table (``seed``, ``model``, ``task`` and the scores)."""
    data = prepare(rows)
    parts = []
    for seed in seeds:
        started = time.perf_counter()
        parts.append(run_seed(seed, data, models))
        if progress:
            print(f"seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    columns = ["seed", "model", "task", "params", "best_epoch", "epochs_run", "valid_auc", "test_auc",
               "test_logloss", "gate_distance", "seconds"]
    return pd.concat(parts, ignore_index=True)[columns]


def load_byterec_runs(name: str = "byterec_runs") -> tuple[pd.DataFrame, dict]:
    """The shipped run chapter 7 reads: ``(results, metadata)``."""
    folder = files("mmoe_annotated.experiments") / "results"
    meta = json.loads((folder / f"{name}.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{name}.json has format version {meta.get('format_version')!r}; "
                         f"this package reads version {FORMAT_VERSION}")
    with (folder / f"{name}.csv.gz").open("rb") as f:
        return pd.read_csv(f, compression="gzip"), meta


def _main(argv=None) -> None:
    """``python -m mmoe_annotated.experiments.byterec --out DIR [--seeds N] [--first-seed S]``."""
    import argparse

    from .arguments import clear_outputs, int_at_least, out_folder, positive_int

    p = argparse.ArgumentParser(prog="python -m mmoe_annotated.experiments.byterec",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=out_folder, help="folder for NAME.csv.gz and NAME.json")
    p.add_argument("--name", default="byterec_runs")
    p.add_argument("--seeds", type=positive_int, default=3, help="how many seeds")
    p.add_argument("--first-seed", type=int_at_least(0), default=0)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # before the work: no earlier run's file stays; the JSON, written last, says the run finished
    clear_outputs(args.out, [f"{args.name}.json", f"{args.name}.csv.gz"])
    torch.set_num_threads(1)
    argv = sys.argv[1:] if argv is None else list(argv)
    started = time.perf_counter()
    df = run_byterec(range(args.first_seed, args.first_seed + args.seeds), models=tuple(args.models))
    df.to_csv(args.out / f"{args.name}.csv.gz", index=False, compression="gzip", float_format="%.7g")
    meta = {"format_version": FORMAT_VERSION, **provenance(reader_command("mmoe_annotated.experiments.byterec", argv)),
            "seconds": round(time.perf_counter() - started, 1), "rows": ROWS, "max_epochs": MAX_EPOCHS,
            "seeds": sorted(df["seed"].unique().tolist())}
    (args.out / f"{args.name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(df.groupby(["model", "task"])[["test_auc", "best_epoch", "params"]].mean().round(4).to_string())


if __name__ == "__main__":
    _main()
