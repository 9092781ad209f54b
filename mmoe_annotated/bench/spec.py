"""What the side-by-side benchmark runs: its implementations, its configurations and its targets.

Explained in the appendix "Performance" (``book/appendix_performance.ipynb``); the benchmark
itself is :mod:`mmoe_annotated.bench.run`.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIN_ROWS", "SCHEMA_KEYS", "TARGETS", "TARGETS_CUDA", "TARGETS_TAUGHT", "OMOE_WITHIN", "TABLES", "IMPLS",
           "MODELS",
           "TAUGHT_SETUP", "FAST_SETUP", "DEEPCTR_SETUP", "ours_setup", "BenchSpec"]

#: The fewest rows a benchmark generates (80 % train, the rest tested).
MIN_ROWS = 100

#: Keys every record of the JSON output has.
SCHEMA_KEYS = ("impl", "model", "batch_size", "emb_dim", "device", "train_rows", "predict_rows", "train_samples_per_s",
               "predict_samples_per_s", "train_seconds", "predict_seconds", "peak_rss_mb", "auc", "auc_per_task",
               "train_gflops")

#: The fast wing's targets on a CPU: (what, batch size or None for all, emb dim or None for all,
#: minimum ratio fast / DeepCTR-Torch). Peak RSS no higher and AUC within 0.01 are judged too.
TARGETS = (
    ("train", 256, 4, 2.5),
    ("train", 256, 16, 3.5),
    ("train", 4096, None, 1.5),
    ("predict", None, None, 2.5),
)

#: The fast wing's targets on a CUDA GPU, same form as :data:`TARGETS`.
TARGETS_CUDA = (
    ("train", 256, None, 2.5),
    ("train", 4096, None, 10.0),
    ("predict", None, None, 15.0),
)

#: The taught path's targets, CPU or GPU: it must beat DeepCTR-Torch everywhere by at least this
#: much, in training and in prediction (same form as :data:`TARGETS`).
TARGETS_TAUGHT = (
    ("train", None, None, 1.2),
    ("predict", None, None, 1.2),
)

#: On the taught path OMoE trains within this factor of MMoE's time (its one gate is no hidden cost).
OMOE_WITHIN = 1.10

_CONFIG = ("sparse_embeddings=True; "
           "TrainConfig(optimizer='adagrad', embedding_l2=1e-5, embedding_l2_mode='rows', epochs=1)")
#: How the taught path is configured: what a user who wants speed would choose, default code.
TAUGHT_SETUP = f"build_model(kind, {_CONFIG}); mm.fit; mm.predict"
#: How the fast wing is configured: the same model and config, the wing's functions.
FAST_SETUP = f"MMoE({_CONFIG}); mm.fast.fit; mm.fast.predict"


def ours_setup(impl: str = "fast", block_rows: int | None = None) -> str:
    """:data:`TAUGHT_SETUP` or :data:`FAST_SETUP`, with ``block_rows`` when a fast run sets it."""
    if impl == "taught":
        return TAUGHT_SETUP
    if block_rows is None:
        return FAST_SETUP
    return FAST_SETUP.replace("mm.fast.fit", f"mm.fast.fit(block_rows={block_rows})")


DEEPCTR_SETUP = "MMOE(defaults, l2_reg_embedding=1e-5); compile('adagrad', ['binary_crossentropy'] * 2); fit(epochs=1)"

#: The implementations: the package's default (taught) code, its fast wing, DeepCTR-Torch 0.3.0.
IMPLS = ("taught", "fast", "deepctr")

#: The models the taught path trains (the fast wing and DeepCTR-Torch run MMoE).
MODELS = ("mmoe", "omoe", "shared_bottom")

#: How the embedding tables are sized (``--tables``; see :func:`prepare_data`).
TABLES = ("catalog", "fitted")


@dataclass(frozen=True)
class BenchSpec:
    """What to run. ``rows`` is the whole generated set; 80 % trains, and prediction covers all rows."""

    rows: int = 200_000
    batch_sizes: tuple[int, ...] = (256, 4096)
    emb_dims: tuple[int, ...] = (4, 16)
    impls: tuple[str, ...] = IMPLS
    #: The taught path's models; MMoE always runs, OMoE and Shared-Bottom where listed.
    models: tuple[str, ...] = MODELS
    repeats: int = 3
    threads: int = 2
    device: str = "cpu"
    seed: int = 0
    tables: str = "catalog"
    #: The fast wing only: ``mm.fast.fit(block_rows=...)`` (None: its default, blocks of
    #: ``CPU_BLOCK_ROWS`` on a CPU). ``--block-rows 4096`` shows what one pass per batch costs.
    block_rows: int | None = None

    def __post_init__(self):
        for name in ("batch_sizes", "emb_dims", "impls", "models"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if int(self.rows) < MIN_ROWS:
            raise ValueError(f"rows must be >= {MIN_ROWS}, got {self.rows}")
        if not self.batch_sizes or any(int(b) < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive ints, got {self.batch_sizes}")
        if not self.emb_dims or any(int(k) < 1 for k in self.emb_dims):
            raise ValueError(f"emb_dims must be positive ints, got {self.emb_dims}")
        unknown = set(self.impls) - set(IMPLS)
        if unknown or not self.impls:
            raise ValueError(f"impls must be a non-empty subset of {IMPLS}, got {self.impls}")
        if set(self.models) - set(MODELS) or "mmoe" not in self.models:
            raise ValueError(f"models must be a subset of {MODELS} that holds 'mmoe', got {self.models}")
        if int(self.repeats) < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.tables not in TABLES:
            raise ValueError(f"tables must be one of {TABLES}, got {self.tables!r}")
        if self.block_rows is not None and int(self.block_rows) < 1:
            raise ValueError(f"block_rows must be >= 1 (or None), got {self.block_rows}")
