"""Census runs made in parts, merged into one shipped run.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``) and
chapter 10, "Beyond MMoE" (``book/10_beyond_mmoe.ipynb``), whose Census-Income runs are made in
parts (per model and group, per range of seeds, per task-loss weighting) and merged with
``python -m mmoe_annotated.experiments merge --name NAME --out DIR FOLDER...``. Each folder is one
``census`` command's output, and must have finished by its own record (``run.json``'s
``finished``, its seeds all in ``results.csv``). The parts must share their data and every setting
(:data:`TRAINING_SETTINGS` and the rest of the record) and give a family the same
hyper-parameters; they may differ in what they cover (:data:`PART_SETTINGS`: seeds, models and
groups), and in how the task losses are weighted: then the merged tables get a ``balancing``
column (and ``gradnorm_alpha`` or ``balance_lr`` where those differ). A setting named with
``--column`` may differ too, recorded as a column of its own. The JSON keeps every part's command, provenance, settings and
search; the parts' search tables go to ``NAME_search.csv.gz`` and their learning curves to
``NAME_curves.csv.gz``. :func:`~mmoe_annotated.experiments.census_report.load_census_run` reads the
result.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd

from .arguments import clear_outputs
from .census_protocol import CensusExperiment

__all__ = ["TRAINING_SETTINGS", "PART_SETTINGS", "merge_census_runs", "read_searches"]

#: What every part of one run must share: how each model is trained and on which rows. Every other
#: setting of a part's record must be shared too, but those of :data:`PART_SETTINGS` (what a part
#: covers) and the weighting (a column); ``columns=`` records one that differs as a column instead.
TRAINING_SETTINGS = ("epochs", "patience", "batch_size", "emb_dim", "tower_units", "split_seed", "max_train_rows")
#: What the parts may differ in: which models, groups and seeds each covers (and the families'
#: hyper-parameters, compared family by family).
PART_SETTINGS = ("groups", "models", "seeds", "first_seed", "hparams")
#: How the task losses are weighted: parts may differ here; the merged tables then say how.
_BALANCING = {"task_balancing": "balancing", "gradnorm_alpha": "gradnorm_alpha", "balance_lr": "balance_lr"}
_PROVENANCE = ("package_version", "commit", "torch_version", "device")


def _part(folder: Path) -> tuple[dict, dict]:
    missing = [f for f in ("results.csv", "gates.csv", "run.json") if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a finished census run: {', '.join(missing)} missing")
    meta = json.loads((folder / "run.json").read_text())
    if meta.get("finished") is not True:
        raise ValueError(f"{folder} did not finish: its run.json has no \"finished\": true ({meta.get('seeds_done')} "
                         f"of {meta.get('settings', {}).get('seeds')} seeds written); finish it with --resume")
    tables = {n: pd.read_csv(folder / f"{n}.csv") for n in ("results", "gates", "curves", "search")
              if (folder / f"{n}.csv").is_file()}
    _check_complete(folder, tables["results"], meta)
    return tables, meta


def _check_complete(folder: Path, results: pd.DataFrame, meta: dict) -> None:
    """The tables are the ones the completion record describes: every seed it names, no other."""
    settings = meta.get("settings", {})
    if "seeds" not in settings:
        return
    first = settings.get("first_seed", CensusExperiment.first_seed)
    want, have = set(range(first, first + settings["seeds"])), set(results["seed"].astype(int))
    if have != want or meta.get("seeds_done", len(want)) != len(want):
        raise ValueError(f"{folder} did not finish as its run.json says: it names seeds {sorted(want)}, "
                         f"results.csv holds {sorted(have)} (seeds_done {meta.get('seeds_done')}); "
                         "finish it with --resume")


def _portable(command: str) -> str:
    """The command with its output folder written ``DIR``: the folder is this machine's, not the run's."""
    words = shlex.split(command)
    for i, w in enumerate(words[:-1]):
        if w == "--out":
            words[i + 1] = "DIR"
    return shlex.join(words)


def _setting(meta: dict, name: str):
    return meta["settings"].get(name, getattr(CensusExperiment, name))


def _check_alike(folders, metas, columns=()) -> dict:
    """The training settings the parts share, and the hyper-parameters of every family; refuses parts
    that differ in either."""
    if len({json.dumps(m["rows"], sort_keys=True) for m in metas}) > 1:
        raise ValueError("the folders were run on different data (their 'rows' differ)")
    shared = {}
    names = dict.fromkeys([*TRAINING_SETTINGS, *(k for m in metas for k in m["settings"])])
    for name in names:
        if name in PART_SETTINGS or name in _BALANCING or name in columns:
            continue
        values = {json.dumps(_setting(m, name)): f for f, m in zip(folders, metas)}
        if len(values) > 1:
            raise ValueError(f"the parts differ in the training setting {name!r}: "
                             + ", ".join(f"{v} ({f})" for v, f in values.items()) + "; merge parts made alike, "
                             f"or record the setting as a column (--column {name})")
        shared[name] = _setting(metas[0], name)
    hparams: dict = {}
    for f, m in zip(folders, metas):
        for key, hp in m["settings"]["hparams"].items():
            if hparams.setdefault(key, (hp, f))[0] != hp:
                raise ValueError(f"{key} was trained with other hyper-parameters in {hparams[key][1]} "
                                 f"({hparams[key][0]}) than in {f} ({hp})")
    return {**shared, "hparams": {k: v for k, (v, _) in hparams.items()}}


def _label(tables: dict, meta: dict, differ: list[str]) -> dict:
    """The part's tables with a column per weighting setting the parts differ in."""
    how = {_BALANCING.get(s, s): _setting(meta, s) for s in differ}
    if "gradnorm_alpha" in how and _setting(meta, "task_balancing") != "gradnorm":
        how["gradnorm_alpha"] = float("nan")  # alpha means nothing to the other weightings
    return {n: (t.assign(**how) if n != "search" else t) for n, t in tables.items()}


def merge_census_runs(folders, out: Path, name: str, note: str = "", columns=()) -> dict:
    """Write the merged run ``name`` into ``out`` and return its JSON record. Refuses folders that
    did not finish (by their own record, whose seeds the tables must hold), overlap (the same model,
    group, seed and weighting twice), come from different data, or differ in a setting (but what
    a part covers and the weighting) or a family's hyper-parameters; ``columns`` names settings
    that may differ, recorded as a column of the merged tables."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("no run folders to merge")
    bad = [c for c in columns if c in PART_SETTINGS]
    if bad:
        raise ValueError(f"{bad} already differ between parts: no column needed")
    parts = [_part(f) for f in folders]
    metas = [m for _, m in parts]
    settings = _check_alike(folders, metas, tuple(columns))
    differ = [s for s in _BALANCING if len({json.dumps(_setting(m, s)) for m in metas}) > 1]
    differ = ["task_balancing", *[s for s in differ if s != "task_balancing"]] if differ else []  # always named
    differ += [c for c in columns if c not in differ]
    labelled = [_label(t, m, differ) for t, m in parts]
    merged = {n: pd.concat([t[n] for t in labelled if n in t], ignore_index=True)
              for n in ("results", "gates", "curves", "search") if any(n in t for t in labelled)}
    results = merged["results"]
    key = ["model", "group", "seed", "task", "split"] + [_BALANCING.get(s, s) for s in differ]
    if results.duplicated(key).any():
        raise ValueError(f"the folders overlap: {results[results.duplicated(key)][key].iloc[0].to_dict()}")
    if "search" in merged:
        from .census_search import HPARAM_COLUMNS
        cols = ["family", *[c for c in HPARAM_COLUMNS if c in merged["search"]], "seed"]
        merged["search"] = merged["search"].drop_duplicates(cols).reset_index(drop=True)
    for m in metas:
        m["command"] = _portable(m["command"])
    record = {"command": " ; ".join(m["command"] for m in metas), "note": note, "machine": metas[0]["machine"],
              **{k: _agreed([m.get(k) for m in metas]) for k in _PROVENANCE}, "rows": metas[0]["rows"],
              "seconds": round(sum(m["seconds"] for m in metas), 1), "finished": True, "settings": settings,
              "parts": [{k: m[k] for k in ("command", "commands", *_PROVENANCE, "machine", "seconds", "finished_utc",
                                           "seeds_done", "settings", "search") if k in m} for m in metas]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # an earlier merge's files under this name go first; the JSON, written last, says it finished
    clear_outputs(out, [f"{name}.json", *(f"{name}{s}.csv.gz" for s in ("", "_gates", "_curves", "_search"))])
    for n, table in merged.items():
        suffix = "" if n == "results" else f"_{n}"
        table.to_csv(out / f"{name}{suffix}.csv.gz", index=False, compression="gzip", float_format="%.7g")
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _agreed(values: list):
    """One value where the parts agree, else every value, in the parts' order."""
    return values[0] if len({json.dumps(v) for v in values}) == 1 else values


def read_searches(folders) -> pd.DataFrame:
    """The search tables of finished search parts as one table (a training listed twice counts once)."""
    from .census_search import HPARAM_COLUMNS
    tables = []
    for folder in map(Path, folders):
        meta = folder / "run.json"
        if not (folder / "search.csv").is_file() or not meta.is_file():
            raise ValueError(f"{folder} holds no census search (search.csv and run.json)")
        if not json.loads(meta.read_text()).get("finished"):
            raise ValueError(f"{folder}: its search did not finish (run.json has no \"finished\": true); "
                             "finish it with --resume")
        tables.append(pd.read_csv(folder / "search.csv"))
    table = pd.concat(tables, ignore_index=True)
    key = ["family", *[c for c in HPARAM_COLUMNS if c in table], "seed"]
    return table.drop_duplicates(key).reset_index(drop=True)
