"""Benchmark runs shipped with the package, so that the appendix runs anywhere (Colab too).

``load_committed("bench_cpu")`` returns the JSON that ``python -m mmoe_annotated.bench --json``
wrote, with the exact command, date, machine and every timed run inside.
"""
from __future__ import annotations

import json
from importlib.resources import files

__all__ = ["load_committed"]


def load_committed(name: str = "bench_cpu") -> dict:
    """A committed benchmark result by name: ``bench_cpu`` (the comparison of the taught path, the
    fast wing and DeepCTR-Torch, tables sized for the catalog), ``bench_cpu_one_pass`` (the fast
    wing at batch 4096 with ``--block-rows 4096``: training without blocks), ``bench_cuda`` (the
    comparison on a GPU, ``--device cuda``, from before the taught path was timed: its ``"ours"``
    records are the fast wing's code), ``bench_ablation``, or ``prediction_cpu`` and
    ``prediction_cpu_1thread`` (prediction alone by the taught path, the fast wing and
    ``torch.compile``, on two threads and on one: ``--prediction``)."""
    folder = files("mmoe_annotated.bench") / "results"
    path = folder / f"{name.removesuffix('.json')}.json"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))
        raise ValueError(f"no committed benchmark {name!r}; the package holds {known}")
    return json.loads(path.read_text())
