"""ByteRec data: the schema, a strict loader for the real files, and the split by row order.

Explained in chapter 2, "The data" (``book/02_data.ipynb``).

ByteRec is the short-video data of the ICME 2019 challenge (track 2): one row per
(user, video) impression, two labels per row, ``finish`` (watched to the end) and
``like``. The files are tab-separated with no header and exactly twelve columns, in
the order of :data:`COLUMNS`. Missing IDs are written as ``-1``.

:func:`load_byterec` reads a real ByteRec file (for example the 200-row sample that ships
with DeepCTR-Torch's examples). It checks every line and raises :class:`DataError` naming
the file, line and column of the first problem. It reads the file in chunks through one parser
(:func:`iter_blocks` for the bytes, :func:`parse_block` for the values), which the stream for files
larger than memory (:mod:`mmoe_annotated.stream`, appendix "Scaling out") uses too.

The embedded, generated dataset the chapters use by default is in :mod:`mmoe_annotated.example_data`.
"""
from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from pathlib import Path
from typing import NamedTuple

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
    "iter_byterec",
    "iter_blocks",
    "parse_block",
    "read_block",
    "Block",
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
# Reading real files: one chunked parser for load_byterec and the stream
# ---------------------------------------------------------------------------

#: Bytes read per chunk. Lines never straddle chunks, so each chunk parses on its own.
CHUNK_BYTES = 4 << 20
#: A ByteRec line is under 200 bytes; a "line" longer than this is not a ByteRec file.
MAX_LINE_BYTES = 64 << 20
#: Longest piece of a field that an error message quotes.
QUOTE_CHARS = 40

_BOM = b"\xef\xbb\xbf"

#: Leading bytes of files that people hand to a text loader by mistake.
_MAGIC = {
    b"\x1f\x8b": ("gzip-compressed", "decompress it first (gunzip) or pass the .txt"),
    b"PK\x03\x04": ("a zip archive", "extract the .txt file first"),
    b"BZh": ("bzip2-compressed", "decompress it first (bunzip2)"),
    b"\xfd7zXZ\x00": ("xz-compressed", "decompress it first (unxz)"),
    b"PAR1": ("a Parquet file", "read it with pandas.read_parquet instead"),
}

_NOT_REGULAR = [(stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]


def _quote(text: str) -> str:
    """``repr`` of a field, cut to :data:`QUOTE_CHARS` characters: a 10 MB field makes a short message."""
    if len(text) <= QUOTE_CHARS:
        return repr(text)
    return f"{text[:QUOTE_CHARS]!r}... ({len(text):,} characters)"


def _refuse_special(mode: int, path: Path) -> None:
    if stat.S_ISDIR(mode):
        raise DataError("is a directory, not a ByteRec file", path=path)
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
        raise DataError(f"is {what}, not a regular file; the loader reads ByteRec files only "
                        "(write the data to a file first)", path=path)


def _open(path: Path):
    """Open ``path`` for reading, refusing anything that is not a regular file *before* reading:
    a FIFO would block forever and a device such as /dev/zero never ends. Returns (file, size)."""
    try:  # O_NONBLOCK: opening a FIFO must not wait for a writer; it changes nothing for regular files
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(f"is a symbolic link to {os.readlink(path)!r}, which does not exist", path=path) from None
        raise DataError("no such file", path=path) from None
    except PermissionError as exc:
        raise DataError("cannot be read: permission denied; check the file's permissions (ls -l) "
                        "and those of its folders", path=path) from exc
    except IsADirectoryError:
        raise DataError("is a directory, not a ByteRec file", path=path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataError("is a symbolic link loop (too many levels of symbolic links); "
                            "point the link at the real file", path=path) from None
        try:  # a socket cannot be opened at all: say what it is
            _refuse_special(os.stat(path).st_mode, path)
        except OSError:
            pass
        raise DataError(f"cannot be read ({exc.strerror or exc})", path=path) from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        _refuse_special(st.st_mode, path)
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0), st.st_size


def _where(raw: bytes, offset: int, first_line: int = 1) -> dict:
    """Line (1-based) and column name of a byte offset, for messages about bad bytes."""
    start = raw.rfind(b"\n", 0, offset) + 1
    field = raw[start:offset].count(b"\t")
    return {"line": first_line + raw.count(b"\n", 0, offset),
            "column": COLUMNS[field] if field < len(COLUMNS) else None}


def _content_end(buf: bytes) -> int:
    """Index just past the last line that is not blank (blank: only spaces, ``\\r``): trailing
    blank lines are harmless, not bad rows, so they are held back until more text follows."""
    i = len(buf)
    while i and buf[i - 1] in b" \r\n":  # no copy of the buffer, unlike rstrip
        i -= 1
    if not i:
        return 0
    nl = buf.find(b"\n", i)
    return len(buf) if nl < 0 else nl + 1


def _check_utf8(data: bytes, path: Path, offset: int, line: int) -> None:
    try:
        data.isascii() or data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                        f"{offset + exc.start}); re-save the file as UTF-8",
                        path=path, **_where(data, exc.start, line)) from exc


def _check_nul(data: bytes, path: Path, line: int) -> None:
    if b"\x00" in data:
        raise DataError("contains NUL bytes: this is a binary file, not tab-separated text",
                        path=path, **_where(data, data.index(b"\x00"), line))


class Block(NamedTuple):
    """Whole lines of a ByteRec file: where they start and their bytes."""
    offset: int  # byte offset in the file
    first_line: int  # 1-based line number of the first line
    data: bytes
    last: bool  # the file's last lines (trailing blank lines already dropped)


def iter_blocks(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES):
    """Yield the file's text as :class:`Block` s of whole lines, about ``chunk_bytes`` each.

    Checks what can be checked on raw bytes as it reads, so bad content is refused early:
    not a regular file, empty, compressed or binary (magic bytes, NUL bytes), not UTF-8.
    """
    path = Path(path)
    f, size = _open(path)
    with f:
        pending, offset, line, left, first, any_text = b"", 0, 1, size, True, False
        while True:
            piece = f.read(min(chunk_bytes, left)) if left > 0 else b""
            left -= len(piece)
            if first:
                first = False
                for magic, (what, todo) in _MAGIC.items():
                    if piece.startswith(magic):
                        raise DataError(f"is {what}, not tab-separated text; {todo}", path=path)
                if piece.startswith(_BOM):
                    piece, offset = piece[len(_BOM):], len(_BOM)
            if b"\x00" in piece:
                _check_nul(pending + piece, path, line)
            end = not piece
            if end and left > 0:
                raise DataError(f"the file shrank while it was read ({size - left:,} of {size:,} bytes); "
                                "is another program rewriting it?", path=path)
            if end:
                head, rest = pending, b""
            else:  # whole lines go on now (one copy), the cut line waits for the next piece
                stop = piece.rfind(b"\n") + 1
                head = b"".join((pending, memoryview(piece)[:stop])) if stop else b""
                rest = piece[stop:] if stop else pending + piece
                del piece
            cut = _content_end(head)
            if cut:
                data = head if cut == len(head) else head[:cut]
                _check_utf8(data, path, offset, line)
                yield Block(offset, line, data, end)
                any_text = True
                offset, line = offset + cut, line + data.count(b"\n")
                del data
            pending = head[cut:] + rest
            del head, rest
            if end:
                break
            if len(pending) > MAX_LINE_BYTES and pending.strip(b" \r\n"):
                line += pending.count(b"\n")
                raise DataError(f"line {line} runs over {MAX_LINE_BYTES >> 20} MiB without a line end: "
                                "this is not a ByteRec file", path=path, line=line)
    if not any_text:  # a line of tabs is not empty: it is twelve missing values
        raise DataError("the file is empty; a ByteRec file has one row per line", path=path)


def read_block(path: str | os.PathLike, offset: int, length: int, first_line: int, last: bool) -> Block:
    """Read again a block that :func:`iter_blocks` yielded (the stream reads its chunks this way, each
    process its own), with the same checks on its bytes."""
    path = Path(path)
    f, size = _open(path)
    with f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise DataError(f"the file is shorter than when it was indexed ({size:,} bytes); was it rewritten?",
                        path=path, line=first_line)
    _check_nul(data, path, first_line)
    _check_utf8(data, path, offset, first_line)
    return Block(offset, first_line, data, last)


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


def _problems(frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], list[tuple[int, str, str]]]:
    """Validate the string frame column by column; return parsed values and (row, column, reason)."""
    problems: list[tuple[int, str, str]] = []
    parsed = {}
    for col in COLUMNS:
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce")
        bad_mask = values.isna().to_numpy()
        for row in np.flatnonzero(bad_mask):
            text = raw.iat[row]
            reason = ("missing value" if text.strip() == "" else f"{_quote(text)} is not a number")
            if col in TASKS and text.strip() == "":
                reason = "missing label"
            problems.append((int(row), col, reason))
        exact = values.to_numpy() if values.dtype == np.int64 else None
        arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~bad_mask
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


def _careful_parse(block: Block, path: Path, skip: bool,
                   bad: list[tuple[int, str]]) -> dict[str, np.ndarray]:
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
    parsed, problems = _problems(frame)
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
                bad: list[tuple[int, str]] | None = None) -> dict[str, np.ndarray]:
    """Parse one :class:`Block` into column arrays (IDs, labels, ``time`` int64; ``duration_time``
    float64), with every check of :func:`load_byterec`. Bad lines (skip mode) go to ``bad``."""
    cols = _fast_parse(block.data)
    if cols is None:
        cols = _careful_parse(block, Path(path), on_bad_lines == "skip", [] if bad is None else bad)
    if block.last and not block.data.endswith(b"\n") and len(cols["uid"]):
        line = block.first_line + block.data.count(b"\n")
        warnings.warn(f"{path}: the last line (line {line}) has no line end; it parsed completely and is "
                      f"kept (duration_time={cols['duration_time'][-1]:g}), but a file cut short or still "
                      "being written ends like this, with its last value possibly cut; files written "
                      "by write_byterec end with a line end", UserWarning, stacklevel=3)
    return cols


def iter_byterec(path: str | os.PathLike, *, on_bad_lines: str = "error", chunk_bytes: int = CHUNK_BYTES,
                 bad: list[tuple[int, str]] | None = None):
    """Yield ``(block, columns)`` for each chunk of the file: the one parser behind
    :func:`load_byterec` and the stream (:mod:`mmoe_annotated.stream`), with the same checks."""
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
    for block in iter_blocks(path, chunk_bytes):
        yield block, parse_block(block, path, on_bad_lines=on_bad_lines, bad=bad)


def _count_lines(path: Path) -> int:
    """Lines in the file (an upper bound on its rows), counted in pieces without parsing."""
    f, size = _open(path)
    with f:
        return sum(piece.count(b"\n") for piece in iter(lambda: f.read(CHUNK_BYTES), b"")) + 1


def load_byterec(path: str | os.PathLike, *, on_bad_lines: str = "error",
                 chunk_bytes: int = CHUNK_BYTES) -> pd.DataFrame:
    """Read a ByteRec file (12 tab-separated columns, no header) into a DataFrame.

    Every line is checked: column count, numbers in numeric columns, labels in {0, 1},
    finite non-negative ``duration_time``, IDs exact (whole numbers that fit in 64 bits;
    never rounded through a float). The first problem raises :class:`DataError`
    naming the file, line and column. Nothing is dropped silently: with
    ``on_bad_lines="skip"`` bad lines are left out, a warning says how many, and
    ``df.attrs["bad_lines"]`` lists ``(line, reason)`` for each of them.

    Only regular files are read (a FIFO or a device is refused before reading). The file is
    read in chunks of ``chunk_bytes``, so binary content is refused at its first chunk and
    the loader's peak memory stays near the size of the result. A last line without a line
    end is kept when it parses completely, with a warning: a file cut short or still being
    written ends like that, possibly inside its last value, which no check can see.

    Returns a DataFrame with the columns of :data:`COLUMNS`: IDs, labels and ``time``
    as int64, ``duration_time`` as float64.
    """
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
    path = Path(path)
    bad: list[tuple[int, str]] = []
    room = None
    out: dict[str, np.ndarray] = {}
    n = 0
    for _, cols in iter_byterec(path, on_bad_lines=on_bad_lines, chunk_bytes=chunk_bytes, bad=bad):
        if room is None:  # one array per column, sized once: no list of chunks, no concatenation
            room = _count_lines(path)
            out = {c: np.empty(room, dtype=_DTYPES[c]) for c in COLUMNS}
        m = len(cols["uid"])
        if n + m > room:
            raise DataError("the file changed while it was read; is another program writing it?", path=path)
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
