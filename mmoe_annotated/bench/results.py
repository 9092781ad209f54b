"""Committed benchmark runs, shipped with the package so the appendix runs anywhere (Colab too).

``load_committed("bench_cpu")`` returns the JSON that ``python -m mmoe_annotated.bench --json``
wrote, with the exact command, date, machine and every timed run inside.
"""
from __future__ import annotations

import json
from importlib.resources import files

__all__ = ["load_committed"]


def load_committed(name: str = "bench_cpu") -> dict:
    """A committed benchmark result by name: ``bench_cpu`` (the comparison, tables sized for the
    catalog), ``bench_cpu_run1`` and ``bench_cpu_run2`` (the two runs of the same command just before
    it), ``bench_cpu_fitted`` (the same with ``--tables fitted``), ``bench_cpu_one_pass`` (batch
    4096 with ``--block-rows 4096``: training without blocks), ``bench_cuda`` (the comparison on a
    GPU, ``--device cuda``) or ``bench_ablation``."""
    folder = files("mmoe_annotated.bench") / "results"
    path = folder / f"{name.removesuffix('.json')}.json"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))
        raise ValueError(f"no committed benchmark {name!r}; the package holds {known}")
    return json.loads(path.read_text())
