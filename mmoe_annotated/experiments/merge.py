"""Merge Census run folders into one shipped run: ``NAME.csv.gz``, ``NAME_gates.csv.gz``, ``NAME.json``.

Explained in chapter 10, "Beyond MMoE: CGC, PLE and the seesaw" (``book/10_beyond_mmoe.ipynb``),
whose Census-Income runs were made in parts (one process per task group, or per task-loss
weighting) and merged with ``python -m mmoe_annotated.experiments merge --name NAME --out DIR FOLDER...``.
Each folder is one ``census`` command's output. Where the folders differ in
``--balancing``, the merged tables get a ``balancing`` column; the JSON keeps every part's
command, settings and search, and the hyper-parameters of all parts together.
:func:`~mmoe_annotated.experiments.census_report.load_census_run` reads the result.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd

__all__ = ["merge_census_runs"]


def _part(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    missing = [f for f in ("results.csv", "gates.csv", "run.json") if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a finished census run: {', '.join(missing)} missing")
    meta = json.loads((folder / "run.json").read_text())
    return pd.read_csv(folder / "results.csv"), pd.read_csv(folder / "gates.csv"), meta


def _portable(command: str) -> str:
    """The command with its output folder written ``DIR``: the folder is this machine's, not the run's."""
    words = shlex.split(command)
    for i, w in enumerate(words[:-1]):
        if w == "--out":
            words[i + 1] = "DIR"
    return shlex.join(words)


def merge_census_runs(folders, out: Path, name: str, note: str = "") -> dict:
    """Write the merged run ``name`` into ``out`` and return its JSON record. Refuses folders
    that overlap (the same model, group, seed and weighting twice) or come from different data."""
    parts = [_part(Path(f)) for f in folders]
    if not parts:
        raise ValueError("no run folders to merge")
    if len({json.dumps(m["rows"], sort_keys=True) for _, _, m in parts}) > 1:
        raise ValueError("the folders were run on different data (their 'rows' differ)")
    weightings = [m["settings"].get("task_balancing", "fixed") for _, _, m in parts]
    results, gates = [], []
    for (r, g, _), how in zip(parts, weightings):
        if len(set(weightings)) > 1:
            r, g = r.assign(balancing=how), g.assign(balancing=how)
        results.append(r)
        gates.append(g)
    results, gates = pd.concat(results, ignore_index=True), pd.concat(gates, ignore_index=True)
    key = ["model", "group", "seed", "task", "split"] + (["balancing"] if "balancing" in results else [])
    if results.duplicated(key).any():
        raise ValueError(f"the folders overlap: {results[results.duplicated(key)][key].iloc[0].to_dict()}")
    for _, _, m in parts:
        m["command"] = _portable(m["command"])
    record = {"command": " ; ".join(m["command"] for _, _, m in parts), "note": note,
              "machine": parts[0][2]["machine"], "rows": parts[0][2]["rows"],
              "seconds": round(sum(m["seconds"] for _, _, m in parts), 1),
              "settings": {"hparams": {k: v for _, _, m in parts for k, v in m["settings"]["hparams"].items()}},
              "parts": [{k: m[k] for k in ("command", "seconds", "finished_utc", "seeds_done", "settings", "search")
                         if k in m} for _, _, m in parts]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / f"{name}.csv.gz", index=False, compression="gzip", float_format="%.7g")
    gates.to_csv(out / f"{name}_gates.csv.gz", index=False, compression="gzip", float_format="%.7g")
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record
