"""Streaming: ByteRec files larger than memory, read in chunks, never whole.

Explained in the appendix "Scaling out" (``book/appendix_scaling.ipynb``). The chapters keep the
simple in-memory path (:func:`~mmoe_annotated.data.load_byterec`); this module is for files that
do not fit.

Three passes over the file, each holding one chunk (a few MiB) at a time:

1. :func:`index_byterec` finds the chunks (byte offset, first line, rows) by counting line ends,
   without parsing: cheap, and it lets each process later read only its own chunks;
2. :func:`fit_encoder` fits the :class:`~mmoe_annotated.features.FeatureEncoder` in one pass over
   the training rows (vocabulary counts with ``min_count``, min-max ranges): the same encoder as
   ``FeatureEncoder.fit`` on the whole training split;
3. :class:`ByteRecStream` (a ``torch.utils.data.IterableDataset``) yields shuffled batches, one pass
   per epoch, shuffling the chunk order and the rows within a buffer of ``buffer_rows`` rows.

Every chunk goes through the one parser of :mod:`mmoe_annotated.data` (``parse_block``), so the
stream has exactly the loader's checks and errors (file, line, column). The stream is strict: a bad
line stops it (clean a damaged file with ``load_byterec(on_bad_lines="skip")`` first). A file whose
empty label fields are missing labels (chapter 12's task masks) is indexed with
``index_byterec(path, missing_labels=True)``, the loader's option: every pass over it then reads
those labels as NaN, and the stream's batches carry them, masked by the loss.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import IterableDataset

from ..data.reader import CHUNK_BYTES, Block, FileIdentity, fingerprint, iter_blocks, read_block
from ..data.schema import COLUMNS, TASKS, DataError
from ..data.parse import parse_block
from ..features.encoder import FeatureEncoder
from ..features.encoders import HashBuckets, MinMax, Vocabulary

__all__ = ["Chunk", "ByteRecIndex", "index_byterec", "VocabCounts", "EncoderStats", "fit_encoder",
           "shard", "shard_rows", "ByteRecStream"]


# ---------------------------------------------------------------------------
# 1. The index: where each chunk starts and how many rows it holds
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    """Whole lines of the file: bytes ``[offset, offset + length)``, rows ``[first_row, first_row + rows)``;
    ``sha256``: the fingerprint of those bytes when the file was indexed."""

    offset: int
    length: int
    first_line: int
    first_row: int
    rows: int
    last: bool
    sha256: str | None = None


@dataclass(frozen=True)
class ByteRecIndex:
    """The chunks of one file, and the split of its rows by row order (as :func:`split_by_row`).

    ``identity`` is the file's size, modification time and inode when it was indexed; with each
    chunk's fingerprint it lets :func:`read_part` refuse a file that changed under its index.
    ``missing_labels``: every read of the file takes an empty label field for a missing label (NaN),
    as ``load_byterec(missing_labels=True)`` does; otherwise it is an error."""

    path: str
    chunks: tuple[Chunk, ...]
    identity: FileIdentity | None = None
    missing_labels: bool = False

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)

    def split(self, train_fraction: float = 0.8) -> tuple[list[tuple[Chunk, int, int]], list[tuple[Chunk, int, int]]]:
        """``(train, test)`` parts ``(chunk, lo, hi)``: rows ``lo:hi`` of a chunk. The first
        ``train_fraction`` of rows train, the rest test, cut exactly where ``split_by_row`` cuts."""
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}")
        n = self.rows
        if n < 2:
            raise DataError(f"the file holds {n} row; splitting it into training and test rows needs at "
                            "least 2", path=self.path)
        cut = min(max(int(n * train_fraction), 1), n - 1)
        train, test = [], []
        for c in self.chunks:
            lo, hi = c.first_row, c.first_row + c.rows
            if lo < cut:
                train.append((c, 0, min(hi, cut) - lo))
            if hi > cut:
                test.append((c, max(cut - lo, 0), c.rows))
        return train, test


def index_byterec(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES, *,
                  missing_labels: bool = False) -> ByteRecIndex:
    """Find the chunks of a ByteRec file by counting line ends, with the loader's checks on raw bytes
    (regular file, not empty, not compressed or binary, UTF-8). The first line is parsed (a header
    line is refused here, not after a pass); the other values are checked when read. Records the
    file's identity and each chunk's SHA-256, so that a file changed later is refused, not misread.
    ``missing_labels=True``: an empty label field is a missing label (NaN) in every read of the file."""
    chunks, row = [], 0
    before = _identity(path)
    for b in iter_blocks(path, chunk_bytes):
        if not chunks:
            _check_first_line(b, path, missing_labels)
        rows = b.data.count(b"\n") + (not b.data.endswith(b"\n"))
        chunks.append(Chunk(b.offset, len(b.data), b.first_line, row, rows, b.last, fingerprint(b.data)))
        row += rows
    changed = before.changes(_identity(path))
    if changed:
        raise DataError(f"the file changed while it was indexed ({'; '.join(changed)}); index it again once "
                        "nothing writes to it", path=path)
    return ByteRecIndex(str(path), tuple(chunks), before, bool(missing_labels))


def _identity(path: str | os.PathLike) -> FileIdentity:
    try:
        return FileIdentity.of(os.stat(path))
    except OSError:
        list(iter_blocks(path, 1))  # the reader's own message (no such file, permission, ...)
        raise


def _check_first_line(block: Block, path: str | os.PathLike, missing_labels: bool = False) -> None:
    """Parse the file's first line with the loader's checks: a file holding only a header line (or a
    header above its rows) is refused with the loader's message, not counted as a row."""
    end = block.data.find(b"\n")
    first = block.data if end < 0 else block.data[:end + 1]
    parse_block(Block(block.offset, block.first_line, first, False), path, missing_labels=missing_labels)


def read_part(index: ByteRecIndex, part: tuple[Chunk, int, int]) -> pd.DataFrame:
    """Rows ``lo:hi`` of one chunk as a DataFrame of :data:`COLUMNS`, with every check of the loader."""
    chunk, lo, hi = part
    block = read_block(index.path, chunk.offset, chunk.length, chunk.first_line, chunk.last,
                       identity=index.identity, sha256=chunk.sha256)
    cols = parse_block(block, index.path, missing_labels=index.missing_labels)
    if len(cols["uid"]) != chunk.rows:
        raise DataError(f"chunk at line {chunk.first_line} holds {len(cols['uid'])} rows, the index said "
                        f"{chunk.rows}; was the file rewritten?", path=index.path)
    return pd.DataFrame({c: cols[c][lo:hi] for c in COLUMNS}, copy=False)


# ---------------------------------------------------------------------------
# 2. Fitting the encoder in one pass
# ---------------------------------------------------------------------------

class VocabCounts:
    """Counts of each ID and the row where it first appeared, added up chunk by chunk.

    Ends as the :class:`~mmoe_annotated.features.Vocabulary` that ``Vocabulary.fit`` builds from all
    rows at once: values seen at least ``min_count`` times, most frequent first, ties by first
    appearance. Holds one entry per distinct ID, never the rows."""

    def __init__(self):
        self.keys = np.zeros(0, dtype=np.int64)  # (V,) sorted
        self.counts = np.zeros(0, dtype=np.int64)  # (V,)
        self.first = np.zeros(0, dtype=np.int64)  # (V,) row of first appearance

    def add(self, values: np.ndarray, first_row: int) -> "VocabCounts":
        keys, where, counts = np.unique(values, return_index=True, return_counts=True)
        return self._merge(keys, counts, where.astype(np.int64) + first_row)

    def merge(self, other: "VocabCounts") -> "VocabCounts":
        """Add another process's counts (their rows are elsewhere in the file)."""
        return self._merge(other.keys, other.counts, other.first)

    def _merge(self, keys, counts, first) -> "VocabCounts":
        all_counts = np.concatenate([self.counts, counts])
        all_first = np.concatenate([self.first, first])
        self.keys, inverse = np.unique(np.concatenate([self.keys, keys]), return_inverse=True)
        self.counts = np.bincount(inverse, weights=all_counts, minlength=len(self.keys)).astype(np.int64)
        self.first = np.full(len(self.keys), np.iinfo(np.int64).max)
        np.minimum.at(self.first, inverse, all_first)
        return self

    def vocabulary(self, min_count: int = 1) -> Vocabulary:
        # most frequent first, ties by first appearance
        order = np.lexsort((self.first, -self.counts))
        # the loader's int64 IDs, keyed as Vocabulary.fit keys them
        return Vocabulary.from_counts([str(k) for k in self.keys[order]],
                                      self.counts[order], min_count)


@dataclass
class EncoderStats:
    """What one pass over the training rows collects: ID counts per sparse column, min and max per
    dense column, and the rows seen. Stats of different processes merge into the whole file's."""

    counts: dict[str, VocabCounts]
    low: dict[str, float]
    high: dict[str, float]
    rows: int = 0

    @classmethod
    def empty(cls, sparse: Sequence[str], dense: Sequence[str]) -> "EncoderStats":
        return cls({c: VocabCounts() for c in sparse}, {c: np.inf for c in dense}, {c: -np.inf for c in dense})

    def add(self, frame: pd.DataFrame, first_row: int) -> "EncoderStats":
        for c, counts in self.counts.items():
            counts.add(frame[c].to_numpy(), first_row)
        for c in self.low:
            values = frame[c].to_numpy()
            if len(values):
                self.low[c] = min(self.low[c], float(values.min()))
                self.high[c] = max(self.high[c], float(values.max()))
        self.rows += len(frame)
        return self

    def merge(self, other: "EncoderStats") -> "EncoderStats":
        for c in self.counts:
            self.counts[c].merge(other.counts[c])
        for c in self.low:
            self.low[c], self.high[c] = min(self.low[c], other.low[c]), max(self.high[c], other.high[c])
        self.rows += other.rows
        return self

    def encoder(self, template: FeatureEncoder) -> FeatureEncoder:
        """The fitted encoder: ``template``'s settings (columns, emb_dim, min_count, hash buckets)."""
        if self.rows == 0:
            raise DataError("cannot fit an encoder on an empty frame")
        enc = FeatureEncoder(template.sparse, template.dense, emb_dim=dict(template.emb_dim) or 4,
                             hash_buckets=dict(template.hash_buckets), dense_fill=template.dense_fill,
                             min_count=template.min_count)
        enc.encoders = {c: (HashBuckets(template.hash_buckets[c]) if c in template.hash_buckets
                            else self.counts[c].vocabulary(template.min_count)) for c in template.sparse}
        enc.scalers = {c: MinMax(self.low[c], self.high[c]) for c in template.dense}
        return enc


def collect_stats(index: ByteRecIndex, parts: Sequence[tuple[Chunk, int, int]],
                  template: FeatureEncoder) -> EncoderStats:
    """One pass over ``parts`` (this process's share of the training rows)."""
    stats = EncoderStats.empty(template.sparse, template.dense)
    for part in parts:
        chunk, lo, _ = part
        stats.add(read_part(index, part), chunk.first_row + lo)
    return stats


def fit_encoder(index: ByteRecIndex, parts: Sequence[tuple[Chunk, int, int]],
                template: FeatureEncoder) -> FeatureEncoder:
    """Fit ``template``'s settings on the rows of ``parts`` in one streaming pass."""
    return collect_stats(index, parts, template).encoder(template)


# ---------------------------------------------------------------------------
# 3. Batches: shuffled within a buffer, one pass per epoch, a share per process
# ---------------------------------------------------------------------------

def shard(parts: Sequence[tuple[Chunk, int, int]], rank: int, world_size: int) -> list[tuple[Chunk, int, int]]:
    """Process ``rank``'s share of ``parts`` (``(chunk, lo, hi)``, rows ``lo:hi`` of a chunk): rows
    ``[rank * n // world_size, (rank + 1) * n // world_size)`` of their ``n`` rows, in order. The
    shares differ by at most one row, however few chunks a small file has (a chunk may be cut
    between two processes), so every process gets rows once ``n >= world_size``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank {rank} of {world_size}")
    n = sum(hi - lo for _, lo, hi in parts)
    start, stop = rank * n // world_size, (rank + 1) * n // world_size
    out, at = [], 0
    for chunk, lo, hi in parts:
        a, b = max(start, at), min(stop, at + hi - lo)
        if a < b:
            out.append((chunk, lo + a - at, lo + b - at))
        at += hi - lo
    return out


def shard_rows(parts: Sequence[tuple[Chunk, int, int]], world_size: int) -> list[int]:
    """The rows of each process's :func:`shard`, in rank order."""
    return [sum(hi - lo for _, lo, hi in shard(parts, r, world_size)) for r in range(world_size)]


class ByteRecStream(IterableDataset):
    """Batches ``(ids, dense, labels)`` from a ByteRec file, one pass per epoch, a chunk at a time.

    Each process (``rank`` of ``world_size``) reads its own share of the rows (:func:`shard`:
    equal to a row, however few chunks the file has).
    With ``shuffle``, the order of a process's chunks is shuffled each epoch and rows are shuffled
    within a buffer of about ``buffer_rows`` rows (a full shuffle would need the whole file in
    memory). ``batches`` caps the batches per epoch: processes under DistributedDataParallel must
    take the same number of steps (:meth:`steps_for`).

    Use it with ``DataLoader(stream, batch_size=None)``: the stream makes the batches itself.
    Labels are NaN where missing, when ``index`` was made with ``missing_labels=True``.
    """

    def __init__(self, index: ByteRecIndex, parts: Sequence[tuple[Chunk, int, int]], encoder: FeatureEncoder, *,
                 batch_size: int = 256, buffer_rows: int = 65_536, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, batches: int | None = None, drop_last: bool = False,
                 tasks: Sequence[str] = TASKS):
        if batch_size < 1 or buffer_rows < 1:
            raise ValueError(f"batch_size and buffer_rows must be >= 1, got {batch_size} and {buffer_rows}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size), got rank {rank} of {world_size}")
        self.index, self.encoder, self.tasks = index, encoder, list(tasks)
        self.parts = shard(list(parts), rank, world_size)
        self.batch_size, self.buffer_rows, self.shuffle = int(batch_size), int(buffer_rows), shuffle
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.batches, self.drop_last, self.epoch = batches, drop_last, 0

    @property
    def rows(self) -> int:
        return sum(hi - lo for _, lo, hi in self.parts)

    @staticmethod
    def steps_for(parts: Sequence[tuple[Chunk, int, int]], world_size: int, batch_size: int) -> int:
        """Full batches that every one of ``world_size`` processes can make from its share of ``parts``."""
        return min(shard_rows(list(parts), world_size)) // batch_size

    def set_epoch(self, epoch: int) -> None:
        """A different shuffle each epoch (the same on every run with the same seed)."""
        self.epoch = int(epoch)

    def _encoded(self, part) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        frame = read_part(self.index, part)
        x = self.encoder.transform(frame)
        y = torch.from_numpy(frame[self.tasks].to_numpy(dtype=np.float32, copy=True))  # (M, T)
        return x.ids, x.dense, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        order = (rng.permutation(len(self.parts)) if self.shuffle
                 else range(len(self.parts)))
        parts = [self.parts[i] for i in order]
        buffered: list[tuple[torch.Tensor, ...]] = []
        made = 0
        for i, part in enumerate(parts):
            buffered.append(self._encoded(part))
            if (sum(len(b[2]) for b in buffered) < self.buffer_rows
                    and i < len(parts) - 1):
                continue
            ids, dense, y = (None if b[0] is None else torch.cat(b)
                             for b in zip(*buffered))
            if self.shuffle:
                perm = torch.from_numpy(rng.permutation(len(y)))
                ids, dense, y = (None if t is None else t[perm]
                                 for t in (ids, dense, y))
            last = i == len(parts) - 1
            full = len(y) // self.batch_size * self.batch_size
            stop = len(y) if last and not self.drop_last else full
            for lo in range(0, stop, self.batch_size):
                if self.batches is not None and made >= self.batches:
                    return
                sl = slice(lo, min(lo + self.batch_size, stop))
                yield (None if ids is None else ids[sl],
                       None if dense is None else dense[sl], y[sl])
                made += 1
            # the rows short of a batch wait for the next buffer
            buffered = [] if last else [tuple(None if t is None else t[full:]
                                              for t in (ids, dense, y))]

