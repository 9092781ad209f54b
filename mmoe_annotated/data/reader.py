"""The strict ByteRec reader: a file's bytes, one chunk at a time, each chunk checked and parsed.

Explained in chapter 2, "The data" (``book/02_data.ipynb``). :func:`iter_blocks` reads the raw
bytes (regular files only, binary content refused at the first chunk, every chunk ending at a line
end); :mod:`~mmoe_annotated.data.parse` checks and parses the values of each chunk.
:func:`~mmoe_annotated.data.load_byterec` and the stream for files larger than memory
(:mod:`mmoe_annotated.scale.stream`) both read through here, so every file meets one set of checks.
"""
from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import NamedTuple

from .schema import COLUMNS, DataError

__all__ = ["CHUNK_BYTES", "Block", "FileIdentity", "iter_blocks", "read_block", "fingerprint"]


# ---------------------------------------------------------------------------
# Reading real files: one chunked parser for load_byterec and the stream
# ---------------------------------------------------------------------------

#: Bytes read per chunk. Lines never straddle chunks, so each chunk parses on its own.
CHUNK_BYTES = 4 << 20
#: A ByteRec line is under 200 bytes; a "line" longer than this is not a ByteRec file.
MAX_LINE_BYTES = 64 << 20

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


def _first_piece(piece: bytes, path: Path) -> tuple[bytes, int]:
    """The file's first bytes, refused when their magic bytes say compressed or another format;
    a UTF-8 byte order mark is dropped. Returns the piece and the file offset of its first byte."""
    for magic, (what, todo) in _MAGIC.items():
        if piece.startswith(magic):
            raise DataError(f"is {what}, not tab-separated text; {todo}", path=path)
    if piece.startswith(_BOM):
        return piece[len(_BOM):], len(_BOM)
    return piece, 0


def _refuse_endless_line(pending: bytes, path: Path, line: int) -> None:
    """``pending`` (the cut line waiting for its end, ``line`` its first line) may not outgrow
    :data:`MAX_LINE_BYTES`: a file without line ends is not a ByteRec file."""
    if len(pending) > MAX_LINE_BYTES and pending.strip(b" \r\n"):
        line += pending.count(b"\n")
        raise DataError(f"line {line} runs over {MAX_LINE_BYTES >> 20} MiB without a line end: "
                        "this is not a ByteRec file", path=path, line=line)


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
                piece, offset = _first_piece(piece, path)
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
            _refuse_endless_line(pending, path, line)
    if not any_text:  # a line of tabs is not empty: it is twelve missing values
        raise DataError("the file is empty; a ByteRec file has one row per line", path=path)


class FileIdentity(NamedTuple):
    """What identifies one version of a file: its size, modification time (ns) and inode. A file
    rewritten in place, replaced by another or appended to differs in at least one of them."""
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> "FileIdentity":
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    def changes(self, now: "FileIdentity") -> list[str]:
        """What differs in ``now``, in words."""
        out = []
        if now.size != self.size:
            out.append(f"its size went from {self.size:,} to {now.size:,} bytes")
        if now.mtime_ns != self.mtime_ns:
            out.append("its modification time changed")
        if now.inode != self.inode:
            out.append("it is another file under the same name (its inode changed)")
        return out


def fingerprint(data: bytes) -> str:
    """SHA-256 of a block's bytes: what the stream's index records of each chunk's content."""
    return hashlib.sha256(data).hexdigest()


_REINDEX = "index it again and fit the encoder again (the rows read so far came from the old file)"


def read_block(path: str | os.PathLike, offset: int, length: int, first_line: int, last: bool, *,
               identity: FileIdentity | None = None, sha256: str | None = None) -> Block:
    """Read again a block that :func:`iter_blocks` yielded (the stream reads its chunks this way, each
    process its own), with the same checks on its bytes.

    ``identity`` (the file's when it was indexed) and ``sha256`` (the block's :func:`fingerprint`
    then) refuse a file that changed since: a :class:`DataError` names what changed."""
    path = Path(path)
    f, size = _open(path)
    with f:
        if identity is not None:
            changed = identity.changes(FileIdentity.of(os.fstat(f.fileno())))
            if changed:
                raise DataError(f"the file changed since it was indexed ({'; '.join(changed)}); {_REINDEX}",
                                path=path, line=first_line)
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise DataError(f"the file is shorter than when it was indexed ({size:,} bytes); was it rewritten?",
                        path=path, line=first_line)
    if sha256 is not None and fingerprint(data) != sha256:
        raise DataError(f"the bytes of the chunk starting at line {first_line} differ from when the file was "
                        f"indexed (SHA-256 of the chunk changed, same size); {_REINDEX}", path=path, line=first_line)
    _check_nul(data, path, first_line)
    _check_utf8(data, path, offset, first_line)
    return Block(offset, first_line, data, last)


def _count_lines(path: Path) -> int:
    """Lines in the file (an upper bound on its rows), counted in pieces without parsing."""
    f, size = _open(path)
    with f:
        return sum(piece.count(b"\n") for piece in iter(lambda: f.read(CHUNK_BYTES), b"")) + 1
