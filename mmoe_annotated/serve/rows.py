"""A request's body to rows the encoder reads: JSON checked field by field, every problem named.

Explained in the appendix "Serving the ranker" (``book/appendix_serving.ipynb``).

The service's ``POST /score`` takes ``{"rows": [{"uid": ..., "item_id": ..., ...}, ...]}``. Each
row must hold every column the encoder reads: a sparse column a string, a whole or fractional
number, or ``null`` (the encoder's MISSING id; an unseen value is its OOV id), a dense column a
number (``null`` only when the encoder has a ``dense_fill``). Other fields (labels, IDs of the
request) are ignored. Every refusal is a :class:`RequestError` with an HTTP status and a message
that names the row (counted from 0) and the field, so a client can find its mistake.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from ..features.encoder import FeatureEncoder

__all__ = ["RequestError", "parse_body", "rows_frame"]


class RequestError(ValueError):
    """Bad input to the service: ``status`` (400, 413 or 422), the message, and where (``row``, ``field``)."""

    def __init__(self, status: int, message: str, *, row: int | None = None, field: str | None = None):
        where = ", ".join(p for p in (None if row is None else f"row {row}",
                                      None if field is None else f"field {field!r}") if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.status, self.row, self.field = status, row, field

    def body(self) -> dict:
        return {"error": str(self), "row": self.row, "field": self.field}


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_body(raw: bytes) -> object:
    """The JSON document in ``raw``: UTF-8, standard JSON (no ``NaN`` or ``Infinity``)."""
    if not raw.strip():
        raise RequestError(400, 'the body is empty; send JSON: {"rows": [{...}, ...]}')
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the body is not UTF-8 text (byte {exc.start}); send JSON") from None
    except RecursionError:
        raise RequestError(400, "the body is not JSON this service reads: it nests too deeply") from None
    except ValueError as exc:
        raise RequestError(400, f"the body is not JSON: {exc}") from None


def _kind(value) -> str:
    return {bool: "a boolean", list: "a list", dict: "an object", str: "a string",
            type(None): "null"}.get(type(value), type(value).__name__)


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def rows_frame(document: object, encoder: FeatureEncoder, max_rows: int) -> pd.DataFrame:
    """The rows of a parsed body as the DataFrame the encoder reads (only its columns)."""
    if not isinstance(document, dict):
        raise RequestError(422, f'the body must be a JSON object {{"rows": [...]}}, got {_kind(document)}')
    if "rows" not in document:
        raise RequestError(422, f"missing; the body has {sorted(document)[:10]}", field="rows")
    rows = document["rows"]
    if not isinstance(rows, list):
        raise RequestError(422, f"must be a list of row objects, got {_kind(rows)}", field="rows")
    if len(rows) > max_rows:
        raise RequestError(413, f"too many rows: {len(rows)}, at most {max_rows} per request; split the "
                                "request", field="rows")
    fill = encoder.dense_fill
    sparse = {c: [None] * len(rows) for c in encoder.sparse}
    dense = {c: np.empty(len(rows)) for c in encoder.dense}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(422, f"must be an object of fields, got {_kind(row)}", row=i)
        for c in encoder.sparse:
            if c not in row:
                raise RequestError(422, "missing", row=i, field=c)
            v = row[c]
            if isinstance(v, bool) or not isinstance(v, (str, int, float, type(None))):
                raise RequestError(422, f"must be a string, a number or null, got {_kind(v)} {_shown(v)}",
                                   row=i, field=c)
            if isinstance(v, float) and not math.isfinite(v):
                raise RequestError(422, f"must be a finite number, got {v}", row=i, field=c)
            sparse[c][i] = v
        for c in encoder.dense:
            if c not in row:
                raise RequestError(422, "missing", row=i, field=c)
            v = row[c]
            if v is None and fill is not None:
                dense[c][i] = np.nan  # the encoder fills it
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                what = "null, and the model has no fill value for it" if v is None else f"{_kind(v)} {_shown(v)}"
                raise RequestError(422, f"must be a number, got {what}", row=i, field=c)
            try:
                dense[c][i] = float(v)
            except OverflowError:
                raise RequestError(422, f"is too large for a float64: {_shown(v)}", row=i, field=c) from None
    columns = {c: pd.Series(sparse[c], dtype=object) for c in encoder.sparse}
    columns.update({c: pd.Series(dense[c], dtype=np.float64) for c in encoder.dense})
    return pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))
