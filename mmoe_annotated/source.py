"""Show the package's real source in a notebook, so chapters explain code without copying it.

Used by every chapter of the book (the preface explains the convention). Long lines are wrapped
for the page (``width=76`` characters by default): code breaks only inside brackets, after a comma
or before an operator, so what the page shows is still valid Python; comments and docstring
lines break between words.
"""
from __future__ import annotations

import inspect
import io
import textwrap
import tokenize

__all__ = ["show_source", "source_of", "wrap_source"]

WIDTH = 76


def source_of(obj) -> str:
    """The source text of a package class, function or method, dedented."""
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError) as exc:
        raise TypeError(f"cannot show the source of {obj!r}: {exc}") from exc


_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python 3.12+ tokenizes f-strings
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def _may_start_line(tok, prev) -> bool:
    """Whether a line may break before ``tok``: not inside ``a.b``, ``f(``, ``x[`` or ``k=v``,
    and not before a closing bracket or a separator."""
    if prev is None or prev.string in (".", "=", "**", "~") or tok.string in (".", ")", "]", "}", ",", ":", "="):
        return False
    if tok.string in ("(", "[") and (prev.type in (tokenize.NAME, tokenize.STRING) or prev.string in (")", "]")):
        return False  # a call or a subscript: keep it on the name's line
    return True


def _scan(text: str):
    """Per line (1-based): columns where the code may break inside brackets, as (column,
    after_comma) pairs; the lines that lie in a docstring or other multi-line string; and
    the column where each line's trailing comment starts."""
    points: dict[int, list[tuple[int, bool]]] = {}
    in_string: set[int] = set()
    comments: dict[int, int] = {}
    strings: dict[int, list[tuple[int, int]]] = {}
    depth = fstring = 0
    last_row = 0
    prev = None
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        (row, col), (end_row, end_col) = tok.start, tok.end
        if tok.type == _FSTRING_START:
            fstring += 1
        elif tok.type == _FSTRING_END:
            fstring -= 1
            continue
        if fstring:
            if fstring == 1 and tok.type == _FSTRING_START and depth > 0 and row == last_row:
                points.setdefault(row, []).append((col, False))
            continue
        if tok.type == tokenize.STRING and (end_row > row or tok.string.lstrip("rbuRBU").startswith(('"""', "'''"))):
            in_string.update(range(row, end_row + 1))
        if tok.type == tokenize.COMMENT:
            comments[row] = col
        if tok.type == tokenize.STRING and depth > 0 and end_row == row:
            strings.setdefault(row, []).append((col, end_col))
        if (depth > 0 and row == last_row and tok.type not in (tokenize.NL, tokenize.COMMENT)
                and _may_start_line(tok, prev)):
            points.setdefault(row, []).append((col, False))  # a token inside brackets may start a line
        if tok.type == tokenize.OP:
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
            elif depth > 0 and tok.string == ",":
                points.setdefault(row, []).append((end_col, True))  # best: just after a comma
        last_row = end_row
        prev = tok
    return points, in_string, comments, strings


def _split_strings(line: str, points: list[tuple[int, bool]], strings: list[tuple[int, int]],
                   piece: int) -> tuple[str, list[tuple[int, bool]]]:
    """Cut string literals longer than ``piece`` into adjacent literals at spaces (Python joins
    adjacent literals, so the value is unchanged) and add the cuts as break points."""
    for col, end in sorted(strings, reverse=True):  # right to left: earlier columns stay valid
        token = line[col:end]
        body_at = len(token) - len(token.lstrip("rbufRBUF"))
        prefix, quote = token[:body_at], token[body_at]
        if len(token) <= piece or token[body_at:body_at + 3] == quote * 3:
            continue
        body, parts, braces, last_cut = token[body_at + 1:-1], [], 0, 0
        for i, ch in enumerate(body):
            braces += (ch == "{") - (ch == "}") if "f" in prefix.lower() else 0
            if ch == " " and braces == 0 and i + 1 - last_cut >= piece - len(prefix) - 2:
                parts.append(body[last_cut:i + 1])
                last_cut = i + 1
        parts.append(body[last_cut:])
        parts = [p for p in parts if p]
        if len(parts) < 2:
            continue
        literals = [f"{prefix}{quote}{p}{quote}" for p in parts]
        new = " ".join(literals)
        shift = len(new) - len(token)
        points = [(p + shift if p >= end else p, c) for p, c in points if not col < p < end]
        at = col
        for lit in literals[:-1]:
            at += len(lit) + 1
            points.append((at, False))
        line = line[:col] + new + line[end:]
    return line, sorted(points)


def _wrap_code(line: str, points: list[tuple[int, bool]], width: int) -> list[str]:
    indent = " " * (len(line) - len(line.lstrip()) + 4)
    out, start, used = [], 0, 0
    while used + len(line) - start > width:
        fits = [(p, comma) for p, comma in points
                if start < p and used + p - start <= width and line[start:p].strip()]
        if not fits:
            break
        commas = [p for p, comma in fits if comma and used + p - start >= 0.6 * width]
        cut = commas[-1] if commas else fits[-1][0]
        out.append((line[:cut] if not out else indent + line[start:cut].lstrip()).rstrip())
        start, used = cut, len(indent)
    out.append(line if not out else indent + line[start:].lstrip())
    return out


def _wrap_text(line: str, width: int, comment: bool) -> list[str]:
    body = line.lstrip()
    indent = line[: len(line) - len(body)]
    if comment:
        indent, body = indent + "# ", body[1:].lstrip()
        if body and set(body) <= set("-=#"):  # a ruler: shorten it
            return [(indent + body)[:width]]
    return textwrap.wrap(body, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False) or [line]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _reflow(paragraph: list[str], width: int) -> list[str]:
    """Docstring lines of one paragraph, rewrapped together if any is too long."""
    if all(len(line) <= width for line in paragraph):
        return paragraph
    indent = _indent(paragraph[0])
    words = " ".join(line.strip() for line in paragraph)
    return textwrap.wrap(words, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def wrap_source(text: str, width: int = WIDTH) -> str:
    """``text`` with lines longer than ``width`` wrapped (see the module docstring)."""
    try:
        points, in_string, comments, strings = _scan(text)
    except (tokenize.TokenError, IndentationError, SyntaxError):  # not whole Python: leave it
        return text
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        i += 1
        if number in in_string and line.strip() and line.strip() not in ('"""', "'''"):
            paragraph = [line]  # a docstring paragraph: consecutive lines at one indent
            while (i < len(lines) and i + 1 in in_string and lines[i].strip()
                   and lines[i].strip() not in ('"""', "'''") and _indent(lines[i]) == _indent(line)):
                paragraph.append(lines[i])
                i += 1
            out.extend(_reflow(paragraph, width))
        elif len(line) <= width:
            out.append(line)
        elif line.lstrip().startswith("#"):
            out.extend(_wrap_text(line, width, comment=True))
        else:
            code, comment = line, ""
            if number in comments:
                code, comment = line[:comments[number]].rstrip(), line[comments[number]:]
            indent = len(code) - len(code.lstrip()) + 4
            code, cuts = _split_strings(code, points.get(number, []), strings.get(number, []),
                                        max((width - indent) * 2 // 3, 20))
            wrapped = _wrap_code(code, cuts, width)
            if comment and len(wrapped[-1]) + 2 + len(comment) <= width:
                wrapped[-1] += "  " + comment  # the comment still fits after the code's last line
            elif comment:  # otherwise it goes on its own line above the code
                out.extend(_wrap_text(_indent(line) + comment, width, comment=True))
            out.extend(wrapped)
    return "\n".join(out)


def show_source(obj, *, lines: tuple[int, int] | None = None, width: int | None = WIDTH):
    """Display ``obj``'s source with syntax highlighting (a plain string outside IPython).

    ``lines=(first, last)`` shows only those lines (1-based, inclusive) of the object's source.
    Lines longer than ``width`` characters are wrapped for the page; ``width=None`` shows them
    as they are in the file."""
    text = source_of(obj)
    if lines is not None:
        first, last = lines
        text = "\n".join(text.splitlines()[first - 1:last])
    if width is not None:
        text = wrap_source(text, width)
    try:
        from IPython.display import Code
    except ImportError:  # plain Python: just return the text
        return text
    return Code(text, language="python")
