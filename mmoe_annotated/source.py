"""Show the package's real source in a notebook, so chapters explain code without copying it.

Used by every chapter of the book (the preface explains the convention). The source is typeset
for the page: every object a chapter shows is formatted, by hand, to at most ``WIDTH``
characters a line, and ``show_source`` prints it exactly as it is in the file. A wider line is
an error naming the object, the line and its width, never something the page wraps or cuts.
"""
from __future__ import annotations

import inspect
import textwrap

__all__ = ["WIDTH", "show_source", "source_of"]

#: The book's code width: a code block of the built book (sphinx-book-theme) at a 1280-pixel
#: window holds about 88 to 90 monospace characters; the book's own code cells keep to it too.
WIDTH = 88


def source_of(obj) -> str:
    """The source text of a package class, function or method, dedented."""
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError) as exc:
        raise TypeError(f"cannot show the source of {obj!r}: {exc}") from exc


def _name(obj) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', repr(obj))}"


def show_source(obj, *, lines: tuple[int, int] | None = None):
    """Display ``obj``'s source, verbatim, with syntax highlighting (a plain string outside
    IPython).

    ``lines=(first, last)`` shows only those lines (1-based, inclusive) of the object's source.
    A shown line wider than ``WIDTH`` characters raises ``ValueError`` naming the object, the
    line (in the object's source and in its file) and the width: format the source to fit."""
    text = source_of(obj)
    first = 1
    if lines is not None:
        first, last = lines
        text = "\n".join(text.splitlines()[first - 1:last])
    too_wide = [(n, len(line)) for n, line in enumerate(text.splitlines(), start=first)
                if len(line) > WIDTH]
    if too_wide:
        try:
            found_in = inspect.unwrap(obj)  # a decorated method's own file, not the decorator's
            path, start = inspect.getsourcefile(found_in), inspect.getsourcelines(found_in)[1]
        except (TypeError, OSError):
            path, start = "?", 1
        found = ", ".join(f"line {n} ({path}:{start + n - 1}) is {w} characters"
                          for n, w in too_wide)
        raise ValueError(f"cannot show {_name(obj)} on the page: {found}, wider than the "
                         f"book's code width of {WIDTH}; format the source to fit")
    try:
        from IPython.display import Code
    except ImportError:  # plain Python: just return the text
        return text
    return Code(text, language="python")
