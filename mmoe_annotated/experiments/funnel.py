"""The conversion funnel on real data: a naive CVR model, ESMM, and MMoE and PLE with masked or
entire-space conversion labels, over seeds, on the Hillstrom e-mail data.

Explained in chapter 12, "The conversion funnel: ESMM" (``book/12_funnel.ipynb``). Run it with
``python -m mmoe_annotated.experiments.funnel --out DIR [--seeds N] [--models ...]``; the package
ships the run the chapter reads (:func:`load_funnel_runs`).

The funnel: ``visit`` (the click, 14.7 % of rows) then ``conversion`` (0.9 %, only after a visit).
The protocol, the same for every model and seed:

* **Data**: :func:`~mmoe_annotated.data.hillstrom.load_hillstrom` (64,000 rows); seed ``s`` draws a
  random split, 60 % to fit, 20 % to validate, 20 % to test, shared by every model of that seed (so
  comparisons pair by seed); the encoder is fit on the fitting rows (embedding width 4).
* **Training**: Adam at 2e-3, batches of 512, seed ``s`` for the initial weights and the batch
  order; :class:`~mmoe_annotated.train.selection.EarlyStopping` on the validation AUC of the output
  each model has for conversion (patience 2, at most :data:`MAX_EPOCHS` epochs), its best weights
  restored. Every model gets this one budget; no model is tuned on the test rows.
* **Models** (:data:`MODELS`):

  - ``naive_cvr``: one network (a Shared-Bottom with one task) trained on the visitors only, on
    ``conversion``; its score is used for CVR and for CTCVR alike;
  - ``esmm``: :class:`~mmoe_annotated.model.esmm.ESMM` on ``visit`` and ``visit & conversion``
    over every row; CVR score pCVR, CTCVR score pCTCVR = pCTR x pCVR;
  - ``mmoe_masked`` / ``ple_masked``: ``visit`` and ``conversion`` with the conversion label
    missing (NaN) where there was no visit: the conversion tower learns p(conversion | visit) on
    the visitors, the visit tower on every row; CVR score the conversion output, CTCVR score
    p(visit) x p(conversion | visit);
  - ``mmoe_entire`` / ``ple_entire``: ``visit`` and ``conversion`` over every row (conversion as an
    entire-space task, which is the CTCVR label); its conversion output scores both.

* **Scores** on the test rows: the AUC of each CVR and CTCVR score against ``conversion`` on every
  row (the entire space, where a ranker uses them) and on the visitors (where CVR is defined), the
  visit AUC, and pCTCVR's calibration (mean prediction against the conversion rate, log loss).
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

from ..data.hillstrom import DENSE, SPARSE, load_hillstrom
from ..features import FeatureEncoder
from ..model import ModelConfig, build_model
from ..train.funnel import predict_funnel
from ..train.inference import predict
from ..train.loop import TrainConfig, fit
from ..train.metrics import auc
from ..train.selection import EarlyStopping
from ..train.stats import Family, paired
from .provenance import provenance, reader_command

__all__ = ["MODELS", "MAX_EPOCHS", "FORMAT_VERSION", "COLUMNS", "PRIMARY", "split", "model_setup", "run_seed",
           "run_funnel", "primary_table", "load_funnel_runs"]

#: The file format of the shipped run (bump it when its columns change).
FORMAT_VERSION = 1
MAX_EPOCHS = 8
MODELS = ("naive_cvr", "esmm", "mmoe_masked", "mmoe_entire", "ple_masked", "ple_entire")
#: The network sizes: small, since the inputs are 9 columns.
SIZES = dict(expert_hidden=(32,), gate_hidden=(), tower_hidden=(32, 16), num_experts=3)
COLUMNS = ["seed", "model", "epochs_run", "best_epoch", "visit_auc", "cvr_auc_all", "cvr_auc_visitors",
           "ctcvr_auc_all", "ctcvr_auc_visitors", "ctcvr_mean", "conversion_rate", "ctcvr_logloss", "params",
           "seconds"]


#: The primary comparisons, declared before the runs: name -> (model a, model b, score column).
#: Each pairs by seed (same split, same initial seed) where the runs move together; Holm over all.
PRIMARY = {
    "ESMM - naive CVR: CVR AUC on every row": ("esmm", "naive_cvr", "cvr_auc_all"),
    "ESMM - naive CVR: CVR AUC on visitors": ("esmm", "naive_cvr", "cvr_auc_visitors"),
    "ESMM - naive CVR: CTCVR AUC on every row": ("esmm", "naive_cvr", "ctcvr_auc_all"),
    "ESMM - MMoE masked: CTCVR AUC on every row": ("esmm", "mmoe_masked", "ctcvr_auc_all"),
    "ESMM - MMoE entire space: CTCVR AUC on every row": ("esmm", "mmoe_entire", "ctcvr_auc_all"),
    "ESMM - PLE masked: CTCVR AUC on every row": ("esmm", "ple_masked", "ctcvr_auc_all"),
    "ESMM - PLE entire space: CTCVR AUC on every row": ("esmm", "ple_entire", "ctcvr_auc_all"),
}


def primary_table(runs: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The declared family (:data:`PRIMARY`) decided on ``runs``, Holm-adjusted
    (:class:`~mmoe_annotated.train.stats.Family`): paired by seed where the paired runs are
    measured to move together (a positive correlation), Welch's otherwise (chapter 7)."""
    family = Family(list(PRIMARY), alpha=alpha)
    wide = {col: runs.pivot(index="seed", columns="model", values=col) for col in {c for *_, c in PRIMARY.values()}}
    for name, (a, b, col) in PRIMARY.items():
        both = wide[col][[a, b]].dropna()
        x, y = both[a].to_numpy(), both[b].to_numpy()
        family.add(name, x, y, pair=bool(paired(x, y).correlation > 0))
    return family.table()


def split(df: pd.DataFrame, seed: int) -> dict[str, pd.DataFrame]:
    """Seed ``seed``'s random 60/20/20 split into ``fit``, ``valid`` and ``test``."""
    order = np.random.default_rng(seed).permutation(len(df))
    a, b = int(0.6 * len(df)), int(0.8 * len(df))
    return {name: df.iloc[np.sort(rows)].reset_index(drop=True)
            for name, rows in (("fit", order[:a]), ("valid", order[a:b]), ("test", order[b:]))}


def _labelled(frames: dict, name: str) -> dict:
    """Each split with the label columns model ``name`` trains on."""
    out = {}
    for k, f in frames.items():
        f = f.copy()
        f["ctcvr"] = f["visit"] * f["conversion"]  # the same as conversion, since conversion <= visit
        if name.endswith("_masked"):
            f.loc[f["visit"] == 0, "conversion"] = np.nan  # no label where the funnel was not entered
        if name == "naive_cvr" and k != "test":
            f = f[f["visit"] == 1].reset_index(drop=True)  # trained and validated on visitors only
        out[k] = f
    return out


def model_setup(name: str, features, seed: int) -> tuple[str, ModelConfig, str]:
    """``(kind, config, monitored task)`` of a compared model."""
    if name == "naive_cvr":
        return "shared_bottom", ModelConfig(features, task_names=("conversion",), task_types=("binary",),
                                            seed=seed, **SIZES), "conversion"
    if name == "esmm":
        return "esmm", ModelConfig(features, task_names=("visit", "ctcvr"), seed=seed, **SIZES), "ctcvr"
    kind, _, labels = name.partition("_")
    if kind in ("mmoe", "ple") and labels in ("masked", "entire"):
        return kind, ModelConfig(features, task_names=("visit", "conversion"), seed=seed, **SIZES), "conversion"
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def _scores(name: str, model, test: pd.DataFrame, encoder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(p_visit, cvr score, ctcvr score)`` on the test rows (``p_visit`` NaN for the naive model)."""
    if name == "esmm":
        p = predict_funnel(model, test, encoder=encoder)  # (M, 3): pCTR, pCVR, pCTCVR
        return p[:, 0], p[:, 1], p[:, 2]
    p = predict(model, test, encoder=encoder)
    if name == "naive_cvr":
        return np.full(len(test), np.nan), p[:, 0], p[:, 0]
    if name.endswith("_masked"):
        return p[:, 0], p[:, 1], p[:, 0] * p[:, 1]
    return p[:, 0], p[:, 1], p[:, 1]


def _fit_one(name: str, frames: dict, encoder, seed: int) -> dict:
    kind, config, monitored = model_setup(name, encoder.features, seed)
    data = _labelled(frames, name)
    model = build_model(kind, config)
    cfg = TrainConfig(epochs=MAX_EPOCHS, batch_size=512, optimizer="adam", lr=2e-3, seed=seed, progress=False,
                      early_stopping=EarlyStopping(metric="auc", tasks=(monitored,), patience=2, restore="best"))
    started = time.perf_counter()
    history = fit(model, data["fit"], cfg, encoder=encoder, valid=data["valid"])
    test = frames["test"]
    p_visit, cvr, ctcvr = _scores(name, model, test, encoder)
    y, visit = test["conversion"].to_numpy(), test["visit"].to_numpy() == 1
    eps = 1e-7
    q = np.clip(ctcvr, eps, 1 - eps)
    return {"model": name, "epochs_run": len(history), "best_epoch": history.best_epochs[monitored],
            "visit_auc": auc(visit.astype(float), p_visit, "visit") if name != "naive_cvr" else float("nan"),
            "cvr_auc_all": auc(y, cvr, "conversion"), "cvr_auc_visitors": auc(y[visit], cvr[visit], "conversion"),
            "ctcvr_auc_all": auc(y, ctcvr, "conversion"),
            "ctcvr_auc_visitors": auc(y[visit], ctcvr[visit], "conversion"),
            "ctcvr_mean": float(ctcvr.mean()), "conversion_rate": float(y.mean()),
            "ctcvr_logloss": float(-(y * np.log(q) + (1 - y) * np.log(1 - q)).mean()),
            "params": model.num_parameters(include_embedding=False), "seconds": time.perf_counter() - started}


def run_seed(seed: int, df: pd.DataFrame, models=MODELS) -> pd.DataFrame:
    """Every model of ``models`` on seed ``seed``'s split: one row per model."""
    frames = split(df, seed)
    encoder = FeatureEncoder(list(SPARSE), list(DENSE), emb_dim=4).fit(frames["fit"])
    rows = [_fit_one(name, frames, encoder, seed) for name in models]
    return pd.DataFrame(rows).assign(seed=seed)


def run_funnel(seeds, models=MODELS, df: pd.DataFrame | None = None, progress: bool = True,
               after_seed=None) -> pd.DataFrame:
    """:func:`run_seed` for every seed, one table with :data:`COLUMNS`. ``after_seed(table so far)``
    is called after each seed (the command writes its file there, so a stopped run keeps its seeds)."""
    df = load_hillstrom() if df is None else df
    parts = []
    for seed in seeds:
        started = time.perf_counter()
        parts.append(run_seed(seed, df, models))
        if progress:
            print(f"seed {seed}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if after_seed is not None:
            after_seed(pd.concat(parts, ignore_index=True)[COLUMNS])
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def load_funnel_runs(name: str = "funnel_runs") -> tuple[pd.DataFrame, dict]:
    """The shipped run chapter 12 reads: ``(results, metadata)``."""
    folder = files("mmoe_annotated.experiments") / "results"
    meta = json.loads((folder / f"{name}.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{name}.json has format version {meta.get('format_version')!r}; "
                         f"this package reads version {FORMAT_VERSION}")
    return pd.DataFrame(meta["runs"], columns=COLUMNS), meta


def _main(argv=None) -> None:
    """``python -m mmoe_annotated.experiments.funnel --out DIR [--seeds N] [--models ...]``."""
    import argparse

    from .arguments import clear_outputs, int_at_least, out_folder, positive_int

    p = argparse.ArgumentParser(prog="python -m mmoe_annotated.experiments.funnel",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=out_folder, help="folder for NAME.json")
    p.add_argument("--name", default="funnel_runs")
    p.add_argument("--seeds", type=positive_int, default=30, help="how many seeds")
    p.add_argument("--first-seed", type=int_at_least(0), default=0)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--path", type=Path, default=None, help="a folder holding hillstrom.csv (default: fetch)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    clear_outputs(args.out, [f"{args.name}.json"])
    torch.set_num_threads(1)
    argv = sys.argv[1:] if argv is None else list(argv)
    started = time.perf_counter()
    command = reader_command("mmoe_annotated.experiments.funnel", argv)

    def write(df: pd.DataFrame, complete: bool = False) -> dict:
        meta = {"format_version": FORMAT_VERSION, **provenance(command), "complete": complete,
                "seconds": round(time.perf_counter() - started, 1), "max_epochs": MAX_EPOCHS, "sizes": SIZES,
                "seeds": sorted(df["seed"].unique().tolist()),
                "runs": json.loads(df.to_json(orient="records", double_precision=7))}
        part = args.out / f"{args.name}.json.part"
        part.write_text(json.dumps(meta, indent=1) + "\n")
        part.replace(args.out / f"{args.name}.json")  # whole files only
        return meta

    df = run_funnel(range(args.first_seed, args.first_seed + args.seeds), models=tuple(args.models),
                    df=load_hillstrom(path=args.path), after_seed=write)
    meta = write(df, complete=True)
    summary = df.groupby("model")[["cvr_auc_all", "cvr_auc_visitors", "ctcvr_auc_all", "ctcvr_mean", "seconds"]]
    print(summary.mean().round(4).to_string())
    if len(meta["seeds"]) > 2 and set(MODELS) <= set(df["model"]):
        print(primary_table(df).round(4).to_string())


if __name__ == "__main__":
    _main()
