"""The model's inputs: feature specs, encoded batches and the input layer.

Explained in chapter 3, "Feature transforms" (``book/03_features.ipynb``).

What the network sees, apart from how the pandas encoders (:mod:`mmoe_annotated.features.encoder`)
make it: a :class:`SparseFeature` or :class:`DenseFeature` per column, batches as
:class:`EncodedFeatures` (``int64`` ids and ``float32`` dense values kept apart), and the
:class:`InputLayer` that turns a batch into one vector per row.

Shape letters used in comments throughout the package:
``B`` batch, ``F`` sparse fields, ``K`` embedding dim, ``N`` dense width,
``I`` input width (F*K + N), ``E`` experts, ``H`` hidden width, ``D`` expert output,
``G`` gates, ``T`` tasks, ``V`` total vocabulary rows, ``M`` rows of a split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence, Union

import torch
from torch import nn

__all__ = ["SparseFeature", "DenseFeature", "FeatureSpec", "EncodedFeatures", "InputLayer", "input_dim"]


@dataclass(frozen=True)
class SparseFeature:
    """A categorical feature: ids in ``[0, vocab_size)``, each with a learned ``emb_dim`` vector."""

    name: str
    vocab_size: int
    emb_dim: int = 4

    def __post_init__(self):
        if not self.name:
            raise ValueError("SparseFeature needs a name")
        if int(self.vocab_size) < 1:
            raise ValueError(f"SparseFeature {self.name!r}: vocab_size must be >= 1, got {self.vocab_size}")
        if int(self.emb_dim) < 1:
            raise ValueError(f"SparseFeature {self.name!r}: emb_dim must be >= 1, got {self.emb_dim}")


@dataclass(frozen=True)
class DenseFeature:
    """A numeric feature of width ``dim`` fed to the network as it is (after scaling)."""

    name: str
    dim: int = 1

    def __post_init__(self):
        if not self.name:
            raise ValueError("DenseFeature needs a name")
        if int(self.dim) < 1:
            raise ValueError(f"DenseFeature {self.name!r}: dim must be >= 1, got {self.dim}")


FeatureSpec = Union[SparseFeature, DenseFeature]


def input_dim(features: Sequence[FeatureSpec]) -> int:
    """Width ``I`` of the input vector: all embeddings concatenated, then all dense values."""
    return sum(f.emb_dim if isinstance(f, SparseFeature) else f.dim for f in features)


class EncodedFeatures(NamedTuple):
    """Model input for ``B`` rows: categorical ids and dense values, kept apart.

    ``ids`` is int64 ``(B, F)`` (or ``None`` with no sparse features); ``dense`` is
    float32 ``(B, N)`` (or ``None`` with no dense features)."""

    ids: torch.Tensor | None
    dense: torch.Tensor | None

    def __len__(self) -> int:  # number of rows, not number of fields
        t = self.ids if self.ids is not None else self.dense
        return 0 if t is None else int(t.shape[0])

    def index(self, rows) -> "EncodedFeatures":
        return EncodedFeatures(None if self.ids is None else self.ids[rows],
                               None if self.dense is None else self.dense[rows])

    def to(self, device, non_blocking: bool = False) -> "EncodedFeatures":
        return EncodedFeatures(None if self.ids is None else self.ids.to(device, non_blocking=non_blocking),
                               None if self.dense is None else self.dense.to(device, non_blocking=non_blocking))



class InputLayer(nn.Module):
    """Embeds all sparse fields with **one** lookup into one table and appends the dense values.

    Each field owns a slice of the table; ``offsets`` shifts field ``f``'s ids into its
    slice, so ``table[ids + offsets]`` embeds every field at once. All sparse features
    must share one embedding width ``K`` for this (the common case, and the tutorial's).

    ``sparse=True`` makes the table's gradient sparse (only looked-up rows), which
    Adagrad and SGD support; it rules out an L2 penalty on the whole table.
    """

    def __init__(self, features: Sequence[FeatureSpec], init_std: float = 1e-4, sparse: bool = False):
        super().__init__()
        self.sparse_features = [f for f in features if isinstance(f, SparseFeature)]
        self.dense_features = [f for f in features if isinstance(f, DenseFeature)]
        if len(self.sparse_features) + len(self.dense_features) != len(features):
            raise TypeError("features must be SparseFeature or DenseFeature instances")
        if not features:
            raise ValueError("the model needs at least one feature")
        if self.sparse_features:
            dims = {f.emb_dim for f in self.sparse_features}
            if len(dims) != 1:
                raise ValueError(f"all sparse features must share one emb_dim for the single-table "
                                 f"lookup, got {sorted(dims)}")
            self.emb_dim = dims.pop()
            sizes = torch.tensor([f.vocab_size for f in self.sparse_features])
            self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)  # (F,)
            self.register_buffer("vocab_sizes", sizes, persistent=False)  # (F,)
            V = sum(int(f.vocab_size) for f in self.sparse_features)  # plain ints: builds on the meta device too
            self.table = nn.Embedding(V, self.emb_dim, sparse=sparse)  # (V, K)
            nn.init.normal_(self.table.weight, mean=0.0, std=init_std)
        else:
            self.emb_dim = 0
            self.table = None
        self.num_fields = len(self.sparse_features)
        self.dense_dim = sum(f.dim for f in self.dense_features)
        self.output_dim = self.num_fields * self.emb_dim + self.dense_dim

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Look up every field at once: ``(B, F)`` int64 ids -> ``(B, F, K)`` vectors."""
        return self.table(ids + self.offsets)  # (B, F, K)

    def _dense_name(self, col: int) -> str:
        """The dense feature that column ``col`` of ``dense`` belongs to."""
        for f in self.dense_features:
            if col < f.dim:
                return f.name if f.dim == 1 else f"{f.name}[{col}]"
            col -= f.dim
        raise IndexError(col)

    def check(self, ids: torch.Tensor | None, dense: torch.Tensor | None) -> None:
        """Clear errors for inputs that would otherwise fail deep inside torch, or give NaN.

        ``fit``, ``predict`` and ``evaluate`` call this once on all their rows: ids in range,
        shapes, and dense values finite (an infinite input makes every prediction NaN).
        Calling the model directly skips the value checks, which would cost a device sync
        per batch."""
        if self.num_fields:
            if ids is None:
                raise ValueError(f"the model has {self.num_fields} sparse features but got ids=None")
            if ids.dim() != 2 or ids.shape[1] != self.num_fields:
                raise ValueError(f"ids must have shape (B, {self.num_fields}), got {tuple(ids.shape)}")
            if ids.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"ids must be int64, got {ids.dtype}")
            if ids.numel():
                low = ids.min(0).values
                high = ids.max(0).values
                bad = (low < 0) | (high >= self.vocab_sizes.to(high.device))  # the model may sit on a GPU
                if bad.any():
                    f = int(torch.nonzero(bad)[0])
                    feat = self.sparse_features[f]
                    raise ValueError(f"feature {feat.name!r}: ids must lie in [0, {feat.vocab_size}), "
                                     f"got values in [{int(low[f])}, {int(high[f])}]; encode raw values "
                                     "with a fitted FeatureEncoder (unseen values map to OOV)")
        if self.dense_dim:
            if dense is None:
                raise ValueError(f"the model has {self.dense_dim} dense inputs but got dense=None")
            if dense.dim() != 2 or dense.shape[1] != self.dense_dim:
                raise ValueError(f"dense must have shape (B, {self.dense_dim}), got {tuple(dense.shape)}")
            if dense.numel() and dense.is_floating_point():
                finite = torch.isfinite(dense)  # (B, N)
                if not bool(finite.all()):
                    row, col = (int(i) for i in torch.nonzero(~finite)[0])
                    raise ValueError(f"dense input {self._dense_name(col)!r}: {int((~finite).sum())} value(s) "
                                     f"are NaN or infinite, first at row {row} ({float(dense[row, col])}); the "
                                     "model would predict NaN. Encode raw values with a fitted FeatureEncoder "
                                     "(it refuses them, naming the column) or replace them first")
        if self.num_fields and self.dense_dim and ids.shape[0] != dense.shape[0]:
            raise ValueError(f"ids and dense disagree on the batch size: {ids.shape[0]} vs {dense.shape[0]}")

    def forward(self, ids: torch.Tensor | None,
                dense: torch.Tensor | None) -> torch.Tensor:
        if self.dense_dim and (dense is None or dense.dim() != 2
                               or dense.shape[1] != self.dense_dim):
            # shape checks cost nothing; a wrong width would fail far from here
            self.check(ids, dense)
        parts = []
        if self.num_fields:
            try:
                parts.append(self.embed(ids).flatten(1))  # (B, F*K)
            except (IndexError, RuntimeError, TypeError, AttributeError):
                # the value checks run only on failure: they need a device sync
                self.check(ids, dense)
                raise
        if self.dense_dim:
            parts.append(dense)  # (B, N)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, I)
