"""Benchmarks: the taught path, the fast wing and DeepCTR-Torch 0.3.0, side by side; prediction
against ``torch.compile``; and an ablation.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``).

Run ``python -m mmoe_annotated.bench`` (``--help`` for the options). It generates a
ByteRec-format dataset with realistic vocabularies (embedding tables sized for its whole
catalog unless ``--tables fitted``), encodes it once, then trains one epoch and predicts the
full set at batch 256 and 4096 and embedding dims 4 and 16 with three implementations
(``impl``): ``"taught"`` (the default ``mm.fit`` / ``mm.predict``, also for OMoE and
Shared-Bottom), ``"fast"`` (``mm.fast.*``) and ``"deepctr"``, each configuration in its own
process (so that peak memory is per implementation), and prints samples/s, ratios to
DeepCTR-Torch, peak RSS, one-epoch AUC and the benchmark's targets. ``--prediction`` instead
times prediction alone by the taught path, the fast wing and ``"compiled"`` (``torch.compile``);
``--ablation`` measures which design choice buys which speedup.

==================  ==============================================================
module              what
==================  ==============================================================
``spec``            the implementations, configurations and targets (``BenchSpec``)
``data``            the generated data, encoded once for every worker
``machine``         peak memory, matrix-multiply speed, the machine and the code that ran
``core``            one implementation at one configuration, in one worker process
``run``             the benchmark: workers interleaved, their runs merged
``report``          targets and printed tables
``compiled``        ``mm.predict`` through ``torch.compile``
``prediction``      prediction alone: taught, fast and compiled, and the choice between the last two
``ablation``        leave-one-out variants of the taught path
``results``         the shipped results
``scaling``         the measurements of the appendix "Scaling out"
``step_breakdown``  one data-parallel training step taken apart (appendix "Scaling out")
==================  ==============================================================

This sits on top of the package and uses its public API; nothing in the package imports it.
"""
from .spec import (IMPLS, MODELS, OMOE_WITHIN, SCHEMA_KEYS, TABLES, TARGETS, TARGETS_CUDA, TARGETS_TAUGHT,
                   BenchSpec)
from .data import catalog_sizes, prepare_data
from .machine import flops_per_sample, machine_info, matmul_gflops, peak_rss_mb, provenance
from .core import run_one
from .run import run_benchmark
from .report import format_table, shown_command, targets_report
from .compiled import CompiledPredict
from .prediction import PREDICTION_IMPLS, REPLACE_AT, decide, format_prediction, run_prediction
from .ablation import ABLATIONS, format_ablation, run_ablation
from .results import load_committed

__all__ = ["IMPLS", "MODELS", "OMOE_WITHIN", "SCHEMA_KEYS", "TABLES", "TARGETS", "TARGETS_CUDA", "TARGETS_TAUGHT",
           "BenchSpec", "catalog_sizes", "flops_per_sample", "format_table", "shown_command", "machine_info",
           "matmul_gflops",
           "peak_rss_mb", "prepare_data", "provenance", "run_benchmark", "run_one", "targets_report",
           "CompiledPredict", "PREDICTION_IMPLS", "REPLACE_AT", "decide", "format_prediction", "run_prediction",
           "ABLATIONS", "format_ablation", "run_ablation", "load_committed"]
