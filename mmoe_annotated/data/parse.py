"""Parsing one chunk of a ByteRec file: its values checked, its columns typed.

Explained in chapter 2, "The data" (``book/02_data.ipynb``). A chunk that looks clean goes through
one typed ``pd.read_csv``; anything else goes line by line through the checks that name the file,
line and column of the first problem (column count, numbers, whole and exact ids, labels in
{0, 1}, finite non-negative durations). :mod:`~mmoe_annotated.data.reader` supplies the chunks, and
:func:`iter_byterec` chains the two. An empty label field is an error, or, with
``missing_labels=True``, a missing label: NaN in float64 label columns (chapter 12's task masks).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .schema import _INT_COLUMNS, COLUMNS, TASKS, DataError, _quote

from .reader import CHUNK_BYTES, Block, iter_blocks

__all__ = ["parse_block", "iter_byterec"]


_DTYPES = {**{c: np.int64 for c in _INT_COLUMNS}, "duration_time": np.float64}


def _fast_parse(data: bytes) -> dict[str, np.ndarray] | None:
    """The common case in one pandas call: every line well formed, every value valid. ``None``
    when anything is off; the careful path (:func:`_careful_parse`) then finds and names it."""
    if data.count(b"\r") != data.count(b"\r\n"):  # a stray \r: pandas would start a new row there
        return None
    try:
        with warnings.catch_warnings():  # a float too large for int64 warns before pandas refuses it
            warnings.simplefilter("ignore", RuntimeWarning)
            frame = pd.read_csv(io.BytesIO(data), sep="\t", header=None, names=list(COLUMNS), dtype=_DTYPES,
                                na_filter=False, quoting=3, skip_blank_lines=False, engine="c")
    except (ValueError, OverflowError):  # includes pandas' ParserError
        return None
    if len(frame) != data.count(b"\n") + (not data.endswith(b"\n")):
        return None
    cols = {c: frame[c].to_numpy() for c in COLUMNS}
    dur = cols["duration_time"]
    if not (np.isfinite(dur) & (dur >= 0)).all():
        return None
    if any(((cols[t] != 0) & (cols[t] != 1)).any() for t in TASKS):
        return None
    # "9007199254740993.0" passes through a float64 (and rounds): big IDs take the careful path
    if any(((cols[c] >= 2**53) | (cols[c] <= -2**53)).any() for c in _INT_COLUMNS):
        return None
    return cols


def _check_lines(text: str, path: Path, skip: bool, bad: list[tuple[int, str]],
                 first_line: int = 1) -> tuple[list[str], np.ndarray, DataError | None]:
    """Split into lines and check each line's shape. In error mode, scanning stops at the first
    malformed line and returns its error as ``pending``: a bad value on an *earlier* line must
    still be reported first, so the caller raises whichever comes first in the file."""
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the text ends with a line end
        lines.pop()
    kept, numbers = [], []
    for number, line in enumerate(lines, start=first_line):
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


def _exact_ids(raw: pd.Series, rows: np.ndarray, out: np.ndarray, col: str,
               problems: list[tuple[int, str, str]]) -> None:
    """IDs at or above 2**53 in size: kept exact when written as whole decimal numbers that fit int64
    (a float64 would round them), refused otherwise."""
    for row in rows:
        text = raw.iat[row].strip()
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not -2**63 <= value < 2**63:
            problems.append((int(row), col, f"{_quote(raw.iat[row])} is too large for an ID "
                             "(IDs must be whole numbers that fit in 64 bits)"))
        else:
            out[row] = value


def _problems(frame: pd.DataFrame, missing_labels: bool = False
              ) -> tuple[dict[str, np.ndarray], list[tuple[int, str, str]]]:
    """Validate the string frame column by column; return parsed values and (row, column, reason).
    With ``missing_labels``, an empty label field is no problem: its label is NaN."""
    problems: list[tuple[int, str, str]] = []
    parsed = {}
    for col in COLUMNS:
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce")
        bad_mask = values.isna().to_numpy()
        empty = np.zeros(len(raw), dtype=bool)
        if col in TASKS and missing_labels:
            empty = (raw.str.strip() == "").to_numpy()  # (M,) missing labels, not errors
            bad_mask = bad_mask & ~empty
        for row in np.flatnonzero(bad_mask):
            text = raw.iat[row]
            reason = ("missing value" if text.strip() == "" else f"{_quote(text)} is not a number")
            if col in TASKS and text.strip() == "":
                reason = "missing label"
            problems.append((int(row), col, reason))
        exact = values.to_numpy() if values.dtype == np.int64 else None
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~bad_mask & ~empty
        if col in _INT_COLUMNS and col not in TASKS:  # a label like 0.5 gets the label message below
            frac = ok & np.isfinite(arr) & (np.floor(arr) != arr)
            for row in np.flatnonzero(frac):
                problems.append((int(row), col, f"{_quote(raw.iat[row])} is not a whole number"))
            ids = exact.copy() if exact is not None else np.zeros(len(arr), dtype=np.int64)
            if exact is None:
                small = ok & ~frac & (np.abs(arr) < 2**53)
                ids[small] = arr[small].astype(np.int64)
                _exact_ids(raw, np.flatnonzero(ok & ~frac & ~small), ids, col, problems)
            parsed[col] = ids
            continue
        if col in TASKS:
            out = ok & ~np.isin(arr, (0.0, 1.0))
            for row in np.flatnonzero(out):
                problems.append((int(row), col, f"label {_quote(raw.iat[row])} is not 0 or 1"))
            parsed[col] = np.where(ok & ~out, arr, 0).astype(np.int64)
            if missing_labels:
                parsed[col] = np.where(empty, np.nan, parsed[col])  # float64
            continue
        nonfinite = ok & ~np.isfinite(arr)
        for row in np.flatnonzero(nonfinite):
            problems.append((int(row), col, f"duration {_quote(raw.iat[row])} is not finite"))
        neg = ok & np.isfinite(arr) & (arr < 0)
        for row in np.flatnonzero(neg):
            problems.append((int(row), col, f"duration {_quote(raw.iat[row])} is negative"))
        parsed[col] = arr
    return parsed, problems


def _looks_like_header(row: pd.Series) -> bool:
    """Most fields are words, or one of them is a column name: a header, not a data row."""
    words = (pd.to_numeric(row, errors="coerce").isna() & (row.str.strip() != "")).sum()
    return words > len(COLUMNS) // 2 or any(v.strip().lower() in COLUMNS for v in row)


def _careful_parse(block: Block, path: Path, skip: bool, bad: list[tuple[int, str]],
                   missing_labels: bool = False) -> dict[str, np.ndarray]:
    """Check every line and value of ``block`` and name the first problem (error mode) or collect
    one ``(line, reason)`` per bad line in ``bad`` and leave those lines out (skip mode)."""
    lines, numbers, pending = _check_lines(block.data.decode("utf-8"), path, skip, bad, block.first_line)
    if lines:
        frame = pd.read_csv(io.StringIO("\n".join(lines)), sep="\t", header=None, names=list(COLUMNS),
                            dtype=str, keep_default_na=False, na_filter=False, quoting=3,
                            skip_blank_lines=False, engine="c")
        if len(frame) != len(lines):  # the C parser split a line somewhere: fall back to plain splitting
            frame = pd.DataFrame([line.split("\t") for line in lines], columns=list(COLUMNS), dtype=str)
    else:
        frame = pd.DataFrame({c: pd.Series([], dtype=str) for c in COLUMNS})
    parsed, problems = _problems(frame, missing_labels)
    keep = np.ones(len(frame), dtype=bool)
    if problems:
        problems.sort(key=lambda p: (p[0], COLUMNS.index(p[1])))  # first problem in file order
        header = numbers[0] == 1 and _looks_like_header(frame.iloc[0])
        if not skip:
            row, col, reason = problems[0]
            if numbers[row] == 1 and header:
                reason += ("; line 1 looks like a header row, but ByteRec files have none: delete that "
                           "line, or pass on_bad_lines='skip'")
            raise DataError(reason, path=path, line=int(numbers[row]), column=col)
        per_row: dict[int, list[tuple[str, str]]] = {}
        for row, col, reason in problems:  # sorted by row, then column: one pass
            per_row.setdefault(row, []).append((col, reason))
        for row, found in per_row.items():  # one entry per line: its first problem, in column order
            col, reason = found[0]
            if numbers[row] == 1 and header:
                reason, more = "looks like a header row; ByteRec files have none", ""
            else:
                more = f" (and {len(found) - 1} more problem(s) on this line)" if len(found) > 1 else ""
            bad.append((int(numbers[row]), f"column {col!r}: {reason}{more}"))
        keep[list(per_row)] = False
    if pending is not None:  # no bad value before the first malformed line
        raise pending
    return {c: parsed[c][keep] for c in COLUMNS}


def parse_block(block: Block, path: str | os.PathLike, *, on_bad_lines: str = "error",
                bad: list[tuple[int, str]] | None = None, missing_labels: bool = False
                ) -> dict[str, np.ndarray]:
    """Parse one :class:`Block` into column arrays (IDs, labels, ``time`` int64; ``duration_time``
    float64), with every check of :func:`load_byterec`. Bad lines (skip mode) go to ``bad``.
    ``missing_labels``: an empty label field is a missing label, NaN (labels then float64)."""
    cols = _fast_parse(block.data)  # an empty label field fails it: the careful path reads it
    if cols is None:
        cols = _careful_parse(block, Path(path), on_bad_lines == "skip", [] if bad is None else bad,
                              missing_labels)
    if missing_labels:  # one dtype for every chunk, with or without a missing label
        cols.update({t: cols[t].astype(np.float64) for t in TASKS})
    if block.last and not block.data.endswith(b"\n") and len(cols["uid"]):
        line = block.first_line + block.data.count(b"\n")
        warnings.warn(f"{path}: the last line (line {line}) has no line end; it parsed completely and is "
                      f"kept (duration_time={cols['duration_time'][-1]:g}), but a file cut short or still "
                      "being written ends like this, with its last value possibly cut; files written "
                      "by write_byterec end with a line end", UserWarning, stacklevel=3)
    return cols


def iter_byterec(path: str | os.PathLike, *, on_bad_lines: str = "error", chunk_bytes: int = CHUNK_BYTES,
                 bad: list[tuple[int, str]] | None = None, missing_labels: bool = False):
    """Yield ``(block, columns)`` for each chunk of the file: the one parser behind
    :func:`load_byterec` and the stream (:mod:`mmoe_annotated.scale.stream`), with the same checks."""
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
    for block in iter_blocks(path, chunk_bytes):
        yield block, parse_block(block, path, on_bad_lines=on_bad_lines, bad=bad,
                                 missing_labels=missing_labels)
