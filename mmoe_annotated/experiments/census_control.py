"""An identical-task control for MMoE's gates on Census-Income: the main task beside a copy of itself.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``),
section 7. How far apart two tasks' mean gates sit (:func:`~mmoe_annotated.model.health.gate_distance`)
means something only beside what two gates that serve *the same* label do. Experts can trade
places and each task's tower can absorb a different mixture, so two gates trained on one label
need not agree. The control trains, for every seed, two MMoEs exactly alike:

* ``pair="tasks"``: the group's two tasks, e.g. (income, never married), as in the shipped runs;
* ``pair="copy"``: the main task twice, (income, income), under two task names.

Both go through the protocol of :func:`~.census_protocol.train_one` (the same configuration,
seed, batch order and training settings as the shipped run of that family), then each task's
gate is averaged over the test rows and the two averages are compared. Run from a shell with
``python -m mmoe_annotated.experiments.census_control --out DIR`` (with ``--patience`` and
``--hparams HPARAMS.json`` it follows a run that trains to convergence); the package ships one such
run (:func:`load_gate_control`).
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from importlib.resources import files

import numpy as np
import pandas as pd

from ..data import census
from ..model import build_model
from ..model.health import gate_distance
from ..train.inference import evaluate, predict
from ..train.loop import fit
from .census_protocol import CensusData, CensusExperiment, _configs, family, prepare
from .census_search import read_hparams
from .provenance import git_commit, machine

__all__ = ["FORMAT_VERSION", "PAIRS", "CONTROL_COLUMNS", "pair_labels", "train_pair", "run_gate_control",
           "load_gate_control"]

#: Version of the shipped control's format (its columns and its record); a change bumps it.
FORMAT_VERSION = 1
#: The two kinds of pair: the group's two tasks, and the main task beside a copy of itself.
PAIRS = ("tasks", "copy")
CONTROL_COLUMNS = ["group", "seed", "pair", "label_a", "label_b", "distance", "auc_a", "auc_b", "seconds"]


def pair_labels(group: int, pair: str) -> tuple[str, str]:
    """The two labels a pair trains on: ``("income", "never_married")`` or ``("income", "income")``."""
    if group not in census.GROUPS:
        raise ValueError(f"group must be one of {sorted(census.GROUPS)}, got {group!r}")
    if pair not in PAIRS:
        raise ValueError(f"pair must be one of {PAIRS}, got {pair!r}")
    main, aux = census.GROUPS[group]
    return (main, aux) if pair == "tasks" else (main, main)


def train_pair(data: CensusData, exp: CensusExperiment, group: int, seed: int, pair: str,
               model: str = "mmoe") -> tuple[object, dict]:
    """One model of the control: ``model``'s family in ``group``, trained with ``seed`` on the
    labels of ``pair`` (:func:`pair_labels`). Returns ``(model, row)``, the row with the gate
    distance between the two tasks and each task's test AUC (:data:`CONTROL_COLUMNS`)."""
    labels = pair_labels(group, pair)
    key = family(model, group=group)
    kind, mc, tc = _configs(key, exp, exp.hparams_of(key), seed, data)  # the shipped run's protocol
    names = labels if pair == "tasks" else (labels[0], f"{labels[0]}_copy")
    net = build_model(kind, replace(mc, task_names=names))
    y = {s: data.y[s][list(labels)].to_numpy(np.float32) for s in ("train", "valid", "test")}
    started = time.perf_counter()
    valid = (data.x["valid"], y["valid"]) if exp.patience is not None else None  # stops on the main task
    fit(net, (data.x["train"], y["train"]), tc, valid=valid)
    seconds = time.perf_counter() - started
    metrics = evaluate(net, (data.x["test"], y["test"]), device=exp.device)
    _, gates = predict(net, data.x["test"], return_gates=True, device=exp.device)  # (M, T, E)
    row = {"group": group, "seed": seed, "pair": pair, "label_a": labels[0], "label_b": labels[1],
           "distance": gate_distance(gates), "auc_a": metrics[names[0]]["auc"],
           "auc_b": metrics[names[1]]["auc"], "seconds": round(seconds, 2)}
    return net, row


def run_gate_control(data: CensusData, exp: CensusExperiment, pairs=PAIRS, model: str = "mmoe",
                     progress: bool = False) -> pd.DataFrame:
    """Every pair of ``pairs`` for every group and seed of ``exp``: one row each (:data:`CONTROL_COLUMNS`)."""
    rows = []
    for group in exp.groups:
        for seed in exp.seed_list:
            for pair in pairs:
                rows.append(train_pair(data, exp, group, seed, pair, model)[1])
                if progress:
                    r = rows[-1]
                    print(f"group {group} seed {seed} {pair}: distance {r['distance']:.3f} ({r['seconds']:.0f} s)",
                          flush=True)
    return pd.DataFrame(rows, columns=CONTROL_COLUMNS)


def load_gate_control(name: str = "census_gate_control") -> tuple[pd.DataFrame, dict]:
    """The control shipped with the package: its table (:data:`CONTROL_COLUMNS`) and its record
    (format version, package version, commit, torch, machine, exact command, settings)."""
    folder = files("mmoe_annotated.experiments") / "results"
    table = folder / f"{name}.csv.gz"
    if not table.is_file():
        raise ValueError(f"no shipped gate control {name!r} in the package results")
    with table.open("rb") as f:
        df = pd.read_csv(f, compression="gzip")
    meta = json.loads((folder / f"{name}.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{name}.json has format version {meta.get('format_version')!r}; "
                         f"this package reads version {FORMAT_VERSION}")
    return df, meta


def _main(argv=None) -> None:
    """``python -m mmoe_annotated.experiments.census_control --out DIR``: the control chapter 9 loads."""
    import argparse
    import shlex
    import sys
    from pathlib import Path

    import torch

    from ..runtime import package_version

    from .arguments import clear_outputs, int_at_least, out_folder, positive_int

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=out_folder)
    p.add_argument("--name", default="census_gate_control")
    p.add_argument("--group", type=int, nargs="+", choices=[1, 2], default=[1, 2])
    p.add_argument("--seeds", type=positive_int, default=10)
    p.add_argument("--first-seed", type=int_at_least(0), default=0)
    p.add_argument("--epochs", type=positive_int, default=CensusExperiment().epochs)
    p.add_argument("--patience", type=positive_int, default=None,
                   help="early stopping on the main task (census --patience)")
    p.add_argument("--hparams", type=Path, default=None, help="JSON: family -> hyper-parameters (a run's hparams.json)")
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=PAIRS)
    p.add_argument("--data", type=Path, default=None, help="a folder with the Census files (else the cache)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)  # before the long run; the JSON, written last, says it finished
    clear_outputs(a.out, [f"{a.name}.json", f"{a.name}.csv.gz"])
    commit = git_commit()  # the source that runs, read before the long run
    torch.set_num_threads(1)
    exp = CensusExperiment(groups=tuple(a.group), models=("mmoe",), seeds=a.seeds, first_seed=a.first_seed,
                           epochs=a.epochs, patience=a.patience, hparams=read_hparams(a.hparams) if a.hparams else {})
    train, test = census.load_census(path=a.data)
    data = prepare(train, test, exp)
    started = time.perf_counter()
    df = run_gate_control(data, exp, pairs=tuple(a.pairs), progress=True)
    df.to_csv(a.out / f"{a.name}.csv.gz", index=False, compression="gzip", float_format="%.6g")
    args = sys.argv[1:] if argv is None else argv
    # the folders are the reader's own: the record names them DIR (output) and DATA (the Census files)
    args = [{"--out": "DIR", "--data": "DATA"}.get(args[i - 1], x) if i else x for i, x in enumerate(args)]
    meta = {"format_version": FORMAT_VERSION,
            "command": "python -m mmoe_annotated.experiments.census_control " + shlex.join(args),
            "package_version": package_version(), "commit": commit, "torch": torch.__version__,
            "device": exp.device, "machine": machine(exp.device),
            "seconds": round(time.perf_counter() - started, 1), "rows": data.rows,
            "settings": {**exp.to_dict(), "model": "mmoe", "pairs": list(a.pairs),
                         "hparams": {family("mmoe", group=g): exp.hparams_of(family("mmoe", group=g))
                                     for g in exp.groups}}}
    (a.out / f"{a.name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(df.groupby(["group", "pair"])["distance"].describe().round(3).to_string())


if __name__ == "__main__":
    _main()
