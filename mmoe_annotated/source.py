"""Show the package's real source in a notebook, so chapters explain code without copying it.

Used by every chapter of the book (the preface explains the convention).
"""
from __future__ import annotations

import inspect
import textwrap

__all__ = ["show_source", "source_of"]


def source_of(obj) -> str:
    """The source text of a package class, function or method, dedented."""
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError) as exc:
        raise TypeError(f"cannot show the source of {obj!r}: {exc}") from exc


def show_source(obj, *, lines: tuple[int, int] | None = None):
    """Display ``obj``'s source with syntax highlighting (a plain string outside IPython).

    ``lines=(first, last)`` shows only those lines (1-based, inclusive) of the object's source."""
    text = source_of(obj)
    if lines is not None:
        first, last = lines
        text = "\n".join(text.splitlines()[first - 1:last])
    try:
        from IPython.display import Code
    except ImportError:  # plain Python: just return the text
        return text
    return Code(text, language="python")
