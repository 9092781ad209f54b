"""Files written safely: atomic replacement, stale temporary files removed, OS errors said plainly.

Explained in the appendix "When things go wrong" (``book/appendix_troubleshooting.ipynb``), with
:mod:`mmoe_annotated.checkpoint`, which writes every checkpoint through these helpers: a temporary
file beside the target (mode ``0o666`` less the umask), torch's writes kept in a sink that
remembers the operating system's own error, and the clean-up of what a killed save left.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from pathlib import Path

__all__ = ["STALE_AFTER_S", "remove_stale_temps", "temp_file", "write_atomically", "write_all", "Sink",
           "raise_clearly", "file_kind"]


# A temporary file is ".<target name>.<pid>.<random hex>.tmp" beside the target; one whose
# process has ended and that nobody has written for a minute is what a killed save left (the
# minute spares a save in progress on another machine sharing the directory).
STALE_AFTER_S = 60.0


def abandoned(pid: int, age_s: float) -> bool:
    """Whether a temporary file of process ``pid``, last written ``age_s`` seconds ago, was left
    behind by a save that was killed."""
    if age_s < STALE_AFTER_S or pid == os.getpid():
        return False
    if os.name != "posix":  # no harmless way to ask whether a process lives: wait a day
        return age_s > 24 * 3600
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists and belongs to someone else
    return False


def remove_stale_temps(path: Path) -> None:
    """Delete temporary files that killed saves to ``path`` left behind."""
    prefix, now = f".{path.name}.", time.time()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        found = re.fullmatch(r"(\d+)\.[0-9a-f]+", entry.name[len(prefix):-len(".tmp")])
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if found and stat.S_ISREG(st.st_mode) and abandoned(int(found.group(1)), now - st.st_mtime):
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def temp_file(path: Path, clearly=None) -> tuple[int, Path]:
    """Create the temporary file with mode 0o666 less the umask, as ``open()`` would. An OS error
    goes to ``clearly(exc, path)`` (default :func:`raise_clearly`), which raises it in words."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as exc:
            (clearly or raise_clearly)(exc, path)


def write_atomically(path: Path, fill, mode: int | None = None, clearly=None) -> None:
    """``fill(raw)`` writes a temporary file beside ``path`` (``raw``: unbuffered); it is flushed
    to disk, given ``mode`` (default: 0o666 less the umask) and renamed over ``path``: a crash
    leaves the old file or the new one, never half of one, and no temporary file. An OS error goes
    to ``clearly(exc, path)`` (default :func:`raise_clearly`)."""
    clearly = clearly or raise_clearly
    fd, tmp = temp_file(path, clearly)
    try:
        with os.fdopen(fd, "wb", buffering=0) as raw:
            fill(raw)
            os.fsync(raw.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            clearly(exc, path)
        raise


def write_all(raw, data) -> None:
    """All of ``data`` into the unbuffered file ``raw``, which may take only part of it per write."""
    view = memoryview(data).cast("B")
    while view:
        view = view[raw.write(view):]


class Sink:
    """The file torch writes into. torch reports a failed write as "unexpected pos"; this keeps
    the operating system's own error (no space left, quota, I/O error) to report instead."""

    def __init__(self, raw):
        self.raw, self.error = raw, None

    def write(self, data) -> int:
        try:
            write_all(self.raw, data)
        except OSError as exc:
            self.error = self.error or exc
            raise
        return len(data)

    def flush(self) -> None:
        pass


def raise_clearly(exc: OSError, path: Path):
    """Raise the operating system's error again, saying which checkpoint and what to do."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        raise OSError(exc.errno, f"cannot save the checkpoint {path}: no space left on device "
                      f"({exc.strerror}); nothing was replaced; free some space and save again", str(path)) from exc
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        raise PermissionError(exc.errno, f"cannot save the checkpoint {path}: no permission to write in "
                              f"{path.parent} ({exc.strerror}); the save writes a temporary file there, then "
                              "renames it over the target", str(path)) from exc
    raise exc


def file_kind(mode: int) -> str:
    return ("directory" if stat.S_ISDIR(mode) else "named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "character device" if stat.S_ISCHR(mode) else "block device" if stat.S_ISBLK(mode)
            else "socket" if stat.S_ISSOCK(mode) else "special file")
