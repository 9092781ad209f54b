"""The ByteRec schema: its columns, features and tasks, and the error every bad input raises.

Explained in chapter 2, "The data" (``book/02_data.ipynb``). Read it through
:mod:`mmoe_annotated.data`, which re-exports every name here.
"""
from __future__ import annotations

__all__ = ["COLUMNS", "SPARSE_FEATURES", "DENSE_FEATURES", "TASKS", "DataError"]

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

    def __init__(self, message: str, *, path=None, line: int | None = None,
                 column: str | None = None):
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


#: Longest piece of a field that an error message quotes.
QUOTE_CHARS = 40


def _quote(text: str) -> str:
    """``repr`` of a field, cut to :data:`QUOTE_CHARS` characters: a 10 MB field makes a short message."""
    if len(text) <= QUOTE_CHARS:
        return repr(text)
    return f"{text[:QUOTE_CHARS]!r}... ({len(text):,} characters)"
