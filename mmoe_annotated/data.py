"""ByteRec data: the schema, a strict loader for the real files, and the split by row order.

Explained in chapter 2, "The data" (``book/02_data.ipynb``).

ByteRec is the short-video data of the ICME 2019 challenge (track 2): one row per
(user, video) impression, two labels per row, ``finish`` (watched to the end) and
``like``. The files are tab-separated with no header and exactly twelve columns, in
the order of :data:`COLUMNS`. Missing IDs are written as ``-1``.

:func:`load_byterec` reads a real ByteRec file (for example the 200-row sample that ships
with DeepCTR-Torch's examples). It checks every line and raises :class:`DataError` naming
the file, line and column of the first problem. The embedded, generated dataset the chapters
use by default is in :mod:`mmoe_annotated.example_data`.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "COLUMNS",
    "SPARSE_FEATURES",
    "DENSE_FEATURES",
    "TASKS",
    "DataError",
    "load_byterec",
    "load_byterec_sample",
    "write_byterec",
    "split_by_row",
]

#: The twelve ByteRec columns, in file order.
COLUMNS: tuple[str, ...] = (
    "uid", "user_city", "item_id", "author_id", "item_city", "channel",
    "finish", "like", "music_id", "device", "time", "duration_time",
)
#: The eight categorical ID features the tutorial label-encodes.
SPARSE_FEATURES: tuple[str, ...] = (
    "uid", "user_city", "item_id", "author_id", "item_city", "channel", "music_id", "device",
)
#: The one dense feature the tutorial min-max scales.
DENSE_FEATURES: tuple[str, ...] = ("duration_time",)
#: The two binary tasks.
TASKS: tuple[str, ...] = ("finish", "like")

_INT_COLUMNS = tuple(c for c in COLUMNS if c != "duration_time")


class DataError(ValueError):
    """Bad input data. The message names the file, line and column where it can.

    Attributes ``path``, ``line`` (1-based) and ``column`` hold the same facts for code.
    """

    def __init__(self, message: str, *, path=None, line: int | None = None, column: str | None = None):
        where = []
        if path is not None:
            where.append(f"{path}")
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column


# ---------------------------------------------------------------------------
# Reading real files
# ---------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError("no such file", path=path)
    if path.is_dir():
        raise DataError("is a directory, not a ByteRec file", path=path)
    try:
        raw = path.read_bytes()
    except OSError as exc:  # permissions, special files
        raise DataError(f"cannot be read ({exc.strerror or exc})", path=path) from exc
    if not raw.strip(b" \r\n"):  # a line of tabs is not empty: it is twelve missing values
        raise DataError("the file is empty; a ByteRec file has one row per line", path=path)
    for magic, (what, todo) in _MAGIC.items():
        if raw.startswith(magic):
            raise DataError(f"is {what}, not tab-separated text; {todo}", path=path)
    if b"\x00" in raw:
        raise DataError("contains NUL bytes: this is a binary file, not tab-separated text",
                        path=path, **_where(raw, raw.index(b"\x00")))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                        "re-save the file as UTF-8", path=path, **_where(raw, exc.start)) from exc


#: Leading bytes of files that people hand to a text loader by mistake.
_MAGIC = {
    b"\x1f\x8b": ("gzip-compressed", "decompress it first (gunzip) or pass the .txt"),
    b"PK\x03\x04": ("a zip archive", "extract the .txt file first"),
    b"BZh": ("bzip2-compressed", "decompress it first (bunzip2)"),
    b"\xfd7zXZ\x00": ("xz-compressed", "decompress it first (unxz)"),
    b"PAR1": ("a Parquet file", "read it with pandas.read_parquet instead"),
}


def _where(raw: bytes, offset: int) -> dict:
    """Line (1-based) and column name of a byte offset, for messages about bad bytes."""
    start = raw.rfind(b"\n", 0, offset) + 1
    field = raw[start:offset].count(b"\t")
    return {"line": raw.count(b"\n", 0, offset) + 1,
            "column": COLUMNS[field] if field < len(COLUMNS) else None}


def _check_lines(text: str, path: Path, skip: bool,
                 bad: list[tuple[int, str]]) -> tuple[list[str], np.ndarray, DataError | None]:
    """Split into lines and check each line's shape. In error mode, scanning stops at the first
    malformed line and returns its error as ``pending``: a bad value on an *earlier* line must
    still be reported first, so the caller raises whichever comes first in the file."""
    lines = text.split("\n")
    while lines and not lines[-1].strip(" \r"):  # trailing blank lines are harmless, not bad rows
        lines.pop()
    kept, numbers = [], []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")  # CRLF line endings
        n = line.count("\t") + 1
        if "\r" in line:  # the parser would split here and shift every later line
            reason = ("contains a carriage return (\\r) inside the line: the file mixes line endings "
                      "(or uses old Mac \\r endings); convert it to \\n line endings")
            if not skip:
                field = min(line[:line.index("\r")].count("\t"), len(COLUMNS) - 1)
                pending = DataError(reason, path=path, line=number, column=COLUMNS[field])
                return kept, np.asarray(numbers, dtype=np.int64), pending
            bad.append((number, reason))
            continue
        if n != len(COLUMNS):
            reason = ("empty line" if not line.strip() else
                      f"has {n} tab-separated columns, expected {len(COLUMNS)} ({', '.join(COLUMNS)})"
                      + ("; it looks comma-separated, but ByteRec files are tab-separated"
                         if n == 1 and line.count(",") == len(COLUMNS) - 1 else ""))
            if not skip:
                return kept, np.asarray(numbers, dtype=np.int64), DataError(reason, path=path, line=number)
            bad.append((number, reason))
            continue
        kept.append(line)
        numbers.append(number)
    return kept, np.asarray(numbers, dtype=np.int64), None


def _problems(frame: pd.DataFrame) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Validate the string frame column by column; return parsed values and (row, column, reason)."""
    problems: list[tuple[int, str, str]] = []
    parsed = {}
    for col in COLUMNS:
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce")
        bad_mask = values.isna().to_numpy()
        for row in np.flatnonzero(bad_mask):
            text = raw.iat[row]
            reason = ("missing value" if text.strip() == "" else f"{text!r} is not a number")
            if col in TASKS and text.strip() == "":
                reason = "missing label"
            problems.append((int(row), col, reason))
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~bad_mask
        if col in _INT_COLUMNS and col not in TASKS:  # a label like 0.5 gets the label message below
            frac = ok & (np.floor(arr) != arr)
            for row in np.flatnonzero(frac):
                problems.append((int(row), col, f"{raw.iat[row]!r} is not a whole number"))
            big = ok & (np.abs(arr) > 2**53)
            for row in np.flatnonzero(big):
                problems.append((int(row), col, f"{raw.iat[row]!r} is too large for an ID"))
        if col in TASKS:
            out = ok & ~np.isin(arr, (0.0, 1.0))
            for row in np.flatnonzero(out):
                problems.append((int(row), col, f"label {raw.iat[row]!r} is not 0 or 1"))
        if col == "duration_time":
            nonfinite = ok & ~np.isfinite(arr)
            for row in np.flatnonzero(nonfinite):
                problems.append((int(row), col, f"duration {raw.iat[row]!r} is not finite"))
            neg = ok & np.isfinite(arr) & (arr < 0)
            for row in np.flatnonzero(neg):
                problems.append((int(row), col, f"duration {raw.iat[row]!r} is negative"))
        parsed[col] = arr
    return parsed, problems


def _looks_like_header(row: pd.Series) -> bool:
    """Most fields are words, or one of them is a column name: a header, not a data row."""
    words = (pd.to_numeric(row, errors="coerce").isna() & (row.str.strip() != "")).sum()
    return words > len(COLUMNS) // 2 or any(v.strip().lower() in COLUMNS for v in row)


def load_byterec(path: str | os.PathLike, *, on_bad_lines: str = "error") -> pd.DataFrame:
    """Read a ByteRec file (12 tab-separated columns, no header) into a DataFrame.

    Every line is checked: column count, numbers in numeric columns, labels in {0, 1},
    finite non-negative ``duration_time``. The first problem raises :class:`DataError`
    naming the file, line and column. Nothing is dropped silently: with
    ``on_bad_lines="skip"`` bad lines are left out, a warning says how many, and
    ``df.attrs["bad_lines"]`` lists ``(line, reason)`` for each of them.

    Returns a DataFrame with the columns of :data:`COLUMNS`: IDs, labels and ``time``
    as int64, ``duration_time`` as float64.
    """
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
    skip = on_bad_lines == "skip"
    path = Path(path)
    text = _read_text(path)
    bad: list[tuple[int, str]] = []
    lines, numbers, pending = _check_lines(text, path, skip, bad)
    if lines:
        frame = pd.read_csv(io.StringIO("\n".join(lines)), sep="\t", header=None, names=list(COLUMNS),
                            dtype=str, keep_default_na=False, na_filter=False, quoting=3,
                            skip_blank_lines=False, engine="c")
        if len(frame) != len(lines):  # the C parser split a line somewhere: fall back to plain splitting
            frame = pd.DataFrame([line.split("\t") for line in lines], columns=list(COLUMNS), dtype=str)
    else:
        frame = pd.DataFrame({c: pd.Series([], dtype=str) for c in COLUMNS})
    parsed, problems = _problems(frame)
    if problems:
        problems.sort(key=lambda p: (p[0], COLUMNS.index(p[1])))  # first problem in file order
        if not skip:
            row, col, reason = problems[0]
            if numbers[row] == 1 and _looks_like_header(frame.iloc[0]):
                reason += ("; line 1 looks like a header row, but ByteRec files have none: delete that "
                           "line, or pass on_bad_lines='skip'")
            raise DataError(reason, path=path, line=int(numbers[row]), column=col)
        drop = sorted({row for row, _, _ in problems})
        per_row: dict[int, list[tuple[str, str]]] = {}
        for row, col, reason in problems:  # sorted by row, then column: one pass
            per_row.setdefault(row, []).append((col, reason))
        for row, found in per_row.items():  # one entry per line: its first problem, in column order
            col, reason = found[0]
            if numbers[row] == 1 and _looks_like_header(frame.iloc[0]):
                reason, more = "looks like a header row; ByteRec files have none", ""
            else:
                more = f" (and {len(found) - 1} more problem(s) on this line)" if len(found) > 1 else ""
            bad.append((int(numbers[row]), f"column {col!r}: {reason}{more}"))
        keep = np.ones(len(frame), dtype=bool)
        keep[drop] = False
    else:
        keep = np.ones(len(frame), dtype=bool)
    if pending is not None:  # no bad value before the first malformed line
        raise pending
    if not keep.any():
        raise DataError("no valid rows: every line is malformed", path=path)
    out = pd.DataFrame({c: parsed[c][keep] for c in COLUMNS})
    for c in _INT_COLUMNS:
        out[c] = out[c].astype(np.int64)
    out["duration_time"] = out["duration_time"].astype(np.float64)
    bad.sort()
    out.attrs["source"] = str(path)
    out.attrs["bad_lines"] = bad
    if bad:
        lines_txt = ", ".join(str(n) for n, _ in bad[:10]) + (" ..." if len(bad) > 10 else "")
        warnings.warn(f"{path}: skipped {len({n for n, _ in bad})} bad line(s): {lines_txt}; "
                      "see df.attrs['bad_lines']", stacklevel=2)
    return out


def write_byterec(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` in the ByteRec file format (the format :func:`load_byterec` reads)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"cannot write ByteRec: missing columns {missing}")
    path = Path(path)
    df.loc[:, list(COLUMNS)].to_csv(path, sep="\t", header=False, index=False, lineterminator="\n")
    return path


def split_by_row(df: pd.DataFrame, train_fraction: float = 0.8) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by row order, as the tutorial does: the first ``train_fraction`` of rows train,
    the rest test. The embedded data's rows are in time order, so there this is a split by time;
    the real 200-row sample's rows are not (chapter 2), so there it is in effect a random split."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}")
    if len(df) < 2:
        raise ValueError(f"need at least 2 rows to split, got {len(df)}")
    cut = min(max(int(len(df) * train_fraction), 1), len(df) - 1)
    return df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True)


def load_byterec_sample() -> pd.DataFrame:
    """The real 200-row ByteRec sample the tutorial trains on, read through :func:`load_byterec`.

    The file ships inside the package (``mmoe_annotated/datasets/byterec_sample.txt``), copied from
    DeepCTR-Torch's examples under the Apache License 2.0; its notice is in the same folder.
    Chapter 2 compares it with the embedded data; chapter 7 runs the tutorial's recipe on it.
    """
    from importlib.resources import as_file, files

    with as_file(files("mmoe_annotated") / "datasets" / "byterec_sample.txt") as path:
        df = load_byterec(path)
    df.attrs["source"] = "byterec_sample.txt (DeepCTR-Torch examples, Apache-2.0)"
    return df
