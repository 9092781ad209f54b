"""Checked command-line values, shared by the experiments' and the benchmark's commands.

Explained in chapter 8, "Reproducing the paper" (``book/08_reproducing_paper.ipynb``). Each is an
``argparse`` ``type=``: a bad value ends the command at once with argparse's usage error (exit 2,
naming the argument), never a traceback, and never after the work. Output paths are checked the
same way, so that a run never trains for an hour and then fails creating its folder:

* :func:`out_folder`: a folder that is, or can be created (not a file, under a writable folder);
* :func:`out_file`: a file that can be written (not a folder, under a writable folder).
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

__all__ = ["int_at_least", "positive_int", "positive_float", "nonnegative_float", "fraction", "correlation",
           "out_folder", "out_file", "writable_folder", "writable_file", "clear_outputs"]


def int_at_least(low: int):
    """An ``argparse`` type: a whole number ``>= low``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {v}")
        return v

    parse.__name__ = f"int >= {low}"
    return parse


positive_int = int_at_least(1)


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return v


def positive_float(text: str) -> float:
    """A finite number ``> 0``."""
    v = _float(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def nonnegative_float(text: str) -> float:
    """A finite number ``>= 0``."""
    v = _float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return v


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    v = _float(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text!r}")
    return v


def correlation(text: str) -> float:
    """A correlation, in ``[-1, 1]``."""
    v = _float(text)
    if not -1 <= v <= 1:
        raise argparse.ArgumentTypeError(f"a correlation lies in [-1, 1], got {text!r}")
    return v


def _writable_parent(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    while not parent.exists():  # the nearest folder that exists must be a writable folder
        if parent.is_symlink() or parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"{path}: {parent} is a file, so the {what} cannot be made under it")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: cannot write in {parent}")


def writable_folder(path) -> Path:
    """``path`` as a :class:`Path` if it is a folder that can be written, or one that can be made;
    else a ``ValueError`` saying why. Call it before the work, not after."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; give a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write in {path}")
    else:
        _writable_parent(path, "folder")
    return path


def writable_file(path) -> Path:
    """``path`` as a :class:`Path` if a file can be written there (not a folder, in a folder that
    exists or can be made); else a ``ValueError`` saying why. Call it before the work, not after."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"cannot write {path}")
    _writable_parent(path, "file")
    return path


def _as_type(check, name: str):
    def parse(text: str) -> Path:
        try:
            return check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = name
    return parse


#: ``argparse`` types: an output folder (existing, or one that can be made) and an output file.
out_folder = _as_type(writable_folder, "folder")
out_file = _as_type(writable_file, "file")


def clear_outputs(folder: Path, names) -> None:
    """Remove the files ``names`` from ``folder``: what a command writes, cleared before it starts, so that
    a folder never shows an earlier run's output beside this run's (its record says when it finished)."""
    for name in names:
        (Path(folder) / name).unlink(missing_ok=True)
