"""The seesaw: task 1 against task 2 quality for Shared-Bottom, MMoE, CGC and PLE.

Explained in chapter 10, "Beyond MMoE: CGC, PLE and the seesaw" (``book/10_beyond_mmoe.ipynb``).

Tang et al. (2020, §3) call it the *seesaw phenomenon*: with weakly related tasks, a multi-task
model often improves one task only by hurting the other. Their Figure 3 (§3.2) plots each model as a
point (task-1 quality, task-2 quality); the seesaw shows as points that trade one axis for the
other, PLE's claim is a point better on both. Here the tasks are the paper-style synthetic ones of
:mod:`mmoe_annotated.data.synthetic` at a chosen correlation, trained with the package's plain
:func:`~mmoe_annotated.train.fit` on a fixed training set, and scored by each task's held-out MSE
(lower is better; the noise puts the floor at 0.01).

The two tasks are exchangeable: the generator draws them from one law, and only the seed decides
which draw lands on which task. So any effect of a model on task 1 is, in expectation, its effect
on task 2; chapter 10 compares models on the mean of the two tasks' errors, seed by seed, and reads
a task-1 against task-2 asymmetry as a check of that symmetry.

Shapes are comparable: MMoE's 8 experts of 16 units; CGC's 3 task experts per task and 2 shared
(8 in all); PLE two such levels; Shared-Bottom one bottom of 113 units (chapter 8's shapes).
"""
from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
import torch

from ..train.inference import evaluate
from ..features.inputs import DenseFeature, EncodedFeatures
from ..model.config import ModelConfig
from ..model import build_model
from ..data.synthetic import PAPER_LIKE, SyntheticConfig, generate
from ..train.loop import TrainConfig, fit

__all__ = ["SEESAW_MODELS", "seesaw_model_config", "seesaw_data", "run_seesaw", "load_seesaw_runs"]

#: Model kind -> the ModelConfig fields that shape it.
SEESAW_MODELS = {
    "shared_bottom": dict(num_experts=1, expert_hidden=(113,)),
    "mmoe": dict(num_experts=8, expert_hidden=(16,)),
    "cgc": dict(num_task_experts=3, num_shared_experts=2, expert_hidden=(16,)),
    "ple": dict(num_task_experts=3, num_shared_experts=2, num_levels=2, expert_hidden=(16,)),
}


def seesaw_model_config(kind: str, seed: int = 0, dim: int = 100) -> ModelConfig:
    """The :class:`~mmoe_annotated.model.ModelConfig` of ``kind`` for the seesaw runs."""
    if kind not in SEESAW_MODELS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {sorted(SEESAW_MODELS)}")
    return ModelConfig(features=(DenseFeature("x", dim),), task_names=("task1", "task2"),
                       task_types=("regression", "regression"), gate_hidden=(), tower_hidden=(8,),
                       init_std=None, seed=seed, **SEESAW_MODELS[kind])


def seesaw_data(correlation: float, seed: int, train_rows: int, test_rows: int,
                config: SyntheticConfig = PAPER_LIKE) -> tuple[tuple, tuple]:
    """``(train, test)``, each ``(EncodedFeatures, labels (M, 2))``: one draw of the synthetic tasks, split."""
    X, Y = generate(train_rows + test_rows, correlation, seed=seed, config=config)
    x = EncodedFeatures(None, torch.tensor(X, dtype=torch.float32))
    y = torch.tensor(Y, dtype=torch.float32)
    cut = int(train_rows)
    return (x.index(slice(0, cut)), y[:cut]), (x.index(slice(cut, None)), y[cut:])


def run_seesaw(models=tuple(SEESAW_MODELS), seeds=(0, 1, 2), correlation: float = 0.5,
               *, train_rows: int = 4000, test_rows: int = 2000,
               train: TrainConfig | None = None, balancing=("fixed",),
               config: SyntheticConfig = PAPER_LIKE) -> pd.DataFrame:
    """Train every model with every balancing on every seed; one row per run with each
    task's held-out MSE. A seed fixes the task vectors, the data and the initial
    weights, so models and balancings compare seed by seed. ``df.attrs["seconds"]``
    holds the wall time."""
    train = train or TrainConfig(epochs=8, batch_size=128, optimizer="adam", lr=1e-2,
                                 embedding_l2=0.0, progress=False)
    rows, start = [], time.perf_counter()
    for seed in seeds:
        fit_on, test = seesaw_data(correlation, seed, train_rows, test_rows, config)
        for kind in models:
            for how in balancing:
                model = build_model(kind, seesaw_model_config(kind, seed, config.dim))
                fit(model, fit_on, replace(train, task_balancing=how, seed=seed))
                m = evaluate(model, test)
                rows.append((kind, how, seed, m["task1"]["mse"], m["task2"]["mse"]))
    df = pd.DataFrame(rows,
                      columns=["model", "balancing", "seed", "task1_mse", "task2_mse"])
    df.attrs["seconds"] = time.perf_counter() - start
    return df


def load_seesaw_runs(name: str = "seesaw_runs") -> tuple[pd.DataFrame, dict]:
    """The seesaw runs shipped with the package and their record; the recorded command names its
    output folder ``DIR``, as the command line of a reader's own run would."""
    import re

    from .report import load_sweep

    df, meta = load_sweep(name)
    meta = {**meta, "command": re.sub(r"--out \S+", "--out DIR", meta["command"])}
    return df, meta


def _main(argv=None) -> None:
    """``python -m mmoe_annotated.experiments.seesaw --out DIR``: the run chapter 10 loads."""
    import argparse
    import json
    import platform
    import sys

    from ..train.losses import BALANCING
    from .arguments import clear_outputs, correlation, out_folder, positive_int

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=out_folder)
    p.add_argument("--name", default="seesaw_runs")
    p.add_argument("--seeds", type=positive_int, default=5)
    p.add_argument("--correlation", type=correlation, default=0.5)
    p.add_argument("--train-rows", type=positive_int, default=30000)
    p.add_argument("--epochs", type=positive_int, default=3)
    p.add_argument("--balancing", nargs="+", choices=list(BALANCING), default=["fixed", "uncertainty", "gradnorm"])
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)  # before the work; the JSON, written last, says the run finished
    clear_outputs(a.out, [f"{a.name}.json", f"{a.name}.csv.gz"])
    torch.set_num_threads(1)
    train = TrainConfig(epochs=a.epochs, batch_size=256, optimizer="adam", lr=1e-2, embedding_l2=0.0, progress=False)
    df = run_seesaw(seeds=range(a.seeds), correlation=a.correlation, train_rows=a.train_rows, train=train,
                    balancing=tuple(a.balancing))
    df.to_csv(a.out / f"{a.name}.csv.gz", index=False, compression="gzip", float_format="%.6g")
    args = sys.argv[1:] if argv is None else list(argv)
    args = [("DIR" if i and args[i - 1] == "--out" else x) for i, x in enumerate(args)]  # the reader's folder
    meta = {"command": "python -m mmoe_annotated.experiments.seesaw " + " ".join(args),
            "machine": f"{platform.machine()} CPU, 1 torch thread, torch {torch.__version__}",
            "seconds": round(df.attrs["seconds"], 1), "correlation": a.correlation, "train_rows": a.train_rows,
            "test_rows": 2000, "train": {k: getattr(train, k) for k in ("epochs", "batch_size", "optimizer", "lr")}}
    (a.out / f"{a.name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(df.groupby(["model", "balancing"])[["task1_mse", "task2_mse"]].mean().round(4).to_string())


if __name__ == "__main__":
    _main()
