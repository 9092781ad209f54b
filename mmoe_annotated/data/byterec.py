"""ByteRec data: a strict loader for the real files, the real 200-row sample, the split by row order.

Explained in chapter 2, "The data" (``book/02_data.ipynb``).

ByteRec is the short-video data of the ICME 2019 challenge (track 2): one row per
(user, video) impression, two labels per row, ``finish`` (watched to the end) and
``like``. The files are tab-separated with no header and exactly twelve columns, in
the order of :data:`COLUMNS`. Missing IDs are written as ``-1``.

:func:`load_byterec` reads a real ByteRec file (for example the 200-row sample that ships
with DeepCTR-Torch's examples). It checks every line and raises :class:`DataError` naming
the file, line and column of the first problem. It reads the file in chunks through one parser,
:mod:`~mmoe_annotated.data.parse`, which the stream for files larger than memory
(:mod:`mmoe_annotated.scale.stream`, appendix "Scaling out") uses too. The schema (:data:`COLUMNS`,
:class:`DataError`) is in :mod:`mmoe_annotated.data.schema`.

The embedded, generated dataset the chapters use by default is in :mod:`mmoe_annotated.data.example`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .parse import iter_byterec
from .reader import CHUNK_BYTES, _count_lines
from .schema import COLUMNS, DataError

__all__ = ["load_byterec", "load_byterec_sample", "write_byterec", "split_by_row"]


def load_byterec(path: str | os.PathLike, *, on_bad_lines: str = "error",
                 chunk_bytes: int = CHUNK_BYTES,
                 missing_labels: bool = False) -> pd.DataFrame:
    """Read a ByteRec file (12 tab-separated columns, no header) into a DataFrame.

    Every line is checked: column count, numbers in numeric columns, labels in {0, 1},
    finite non-negative ``duration_time``, IDs exact (whole numbers that fit in 64 bits;
    never rounded through a float). The first problem raises :class:`DataError`
    naming the file, line and column. Nothing is dropped silently: with
    ``on_bad_lines="skip"`` bad lines are left out, a warning says how many, and
    ``df.attrs["bad_lines"]`` lists ``(line, reason)`` for each of them. An empty
    label field is an error too; with ``missing_labels=True`` it is a missing label,
    NaN (chapter 12), and the labels are float64.

    Only regular files are read (a FIFO or a device is refused before reading). The file
    is read in chunks of ``chunk_bytes``, so binary content is refused at its first
    chunk and the loader's peak memory stays near the size of the result. A last line
    without a line end is kept when it parses completely, with a warning: a file cut
    short or still being written ends like that, possibly inside its last value, which
    no check can see.

    Returns a DataFrame with the columns of :data:`COLUMNS`: IDs, labels and ``time``
    as int64, ``duration_time`` as float64.
    """
    if on_bad_lines not in ("error", "skip"):
        raise ValueError("on_bad_lines must be 'error' or 'skip', got "
                         f"{on_bad_lines!r}")
    path = Path(path)
    bad: list[tuple[int, str]] = []
    room = None
    out: dict[str, np.ndarray] = {}
    n = 0
    for _, cols in iter_byterec(path, on_bad_lines=on_bad_lines, bad=bad,
                                chunk_bytes=chunk_bytes, missing_labels=missing_labels):
        # one array per column, sized once: no list of chunks, no concatenation
        if room is None:
            room = _count_lines(path)
            out = {c: np.empty(room, dtype=cols[c].dtype) for c in COLUMNS}
        m = len(cols["uid"])
        if n + m > room:
            raise DataError("the file changed while it was read; is another program "
                            "writing it?", path=path)
        for c in COLUMNS:
            out[c][n:n + m] = cols[c]
        n += m
    if n == 0:
        raise DataError("no valid rows: every line is malformed", path=path)
    frame = pd.DataFrame({c: out[c][:n] for c in COLUMNS}, copy=False)
    bad.sort()
    frame.attrs["source"] = str(path)
    frame.attrs["bad_lines"] = bad
    if bad:
        lines_txt = ", ".join(str(n) for n, _ in bad[:10]) + (" ..." if len(bad) > 10 else "")
        warnings.warn(f"{path}: skipped {len({n for n, _ in bad})} bad line(s): {lines_txt}; "
                      "see df.attrs['bad_lines']", stacklevel=2)
    return frame


def write_byterec(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` in the ByteRec file format (the format :func:`load_byterec` reads)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"cannot write ByteRec: missing columns {missing}")
    path = Path(path)
    df.loc[:, list(COLUMNS)].to_csv(path, sep="\t", header=False, index=False, lineterminator="\n")
    return path


def split_by_row(df: pd.DataFrame,
                 train_fraction: float = 0.8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by row order, as the tutorial does: the first ``train_fraction`` of rows
    train, the rest test. The embedded data's rows are in time order, so there this is a
    split by time; the real 200-row sample's rows are not (chapter 2), so there it is in
    effect a random split."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError("train_fraction must be strictly between 0 and 1, got "
                         f"{train_fraction}")
    if len(df) < 2:
        raise ValueError(f"need at least 2 rows to split, got {len(df)}")
    cut = min(max(int(len(df) * train_fraction), 1), len(df) - 1)
    return df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True)


def load_byterec_sample() -> pd.DataFrame:
    """The real 200-row ByteRec sample the tutorial trains on, read through :func:`load_byterec`.

    The file ships inside the package (``mmoe_annotated/data/sample/byterec_sample.txt``), copied from
    DeepCTR-Torch's examples under the Apache License 2.0; its notice is in the same folder.
    Chapter 2 compares it with the embedded data; chapter 7 runs the tutorial's recipe on it.
    """
    from importlib.resources import as_file, files

    with as_file(files("mmoe_annotated.data") / "sample" / "byterec_sample.txt") as path:
        df = load_byterec(path)
    df.attrs["source"] = "byterec_sample.txt (DeepCTR-Torch examples, Apache-2.0)"
    return df
