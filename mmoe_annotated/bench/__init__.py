"""Benchmarks: the taught path, the fast wing and DeepCTR-Torch 0.3.0, side by side, and an ablation.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``).

Run ``python -m mmoe_annotated.bench`` (``--help`` for the options). It generates a
ByteRec-format dataset with realistic vocabularies (embedding tables sized for its whole
catalog unless ``--tables fitted``), encodes it once, then trains one epoch and predicts the
full set at batch 256 and 4096 and embedding dims 4 and 16 with three implementations
(``impl``): ``"taught"`` (the default ``mm.fit`` / ``mm.predict``, also for OMoE and
Shared-Bottom), ``"fast"`` (``mm.fast.*``) and ``"deepctr"``, each configuration in its own
process (so that peak memory is per implementation), and prints samples/s, ratios to
DeepCTR-Torch, peak RSS, one-epoch AUC and the benchmark's targets.
``--ablation`` instead measures which design choice buys which speedup.

This sits on top of the package and uses its public API; nothing in the package imports it.
"""
from .core import IMPLS, MODELS, OMOE_WITHIN, SCHEMA_KEYS, TABLES, TARGETS, TARGETS_CUDA, TARGETS_TAUGHT, BenchSpec, catalog_sizes, flops_per_sample, format_table, matmul_gflops, peak_rss_mb, prepare_data, run_benchmark, run_one, targets_report
from .ablation import ABLATIONS, format_ablation, run_ablation
from .results import load_committed

__all__ = ["IMPLS", "MODELS", "OMOE_WITHIN", "SCHEMA_KEYS", "TABLES", "TARGETS", "TARGETS_CUDA", "TARGETS_TAUGHT", "BenchSpec", "catalog_sizes", "flops_per_sample", "format_table",
           "matmul_gflops", "peak_rss_mb", "prepare_data", "run_benchmark", "run_one", "targets_report", "ABLATIONS",
           "format_ablation", "run_ablation", "load_committed"]
