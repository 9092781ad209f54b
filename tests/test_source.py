"""mm.show_source prints the package's source verbatim, and every object a chapter shows fits
the book's code width (WIDTH) as it stands in the file: the page never wraps or cuts it."""
import ast
import inspect
import re
from pathlib import Path

import nbformat
import pytest

import mmoe_annotated as mm
from mmoe_annotated.source import WIDTH, show_source, source_of

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _code(cell_source: str) -> str:
    # IPython's ! and % lines are not Python: ``pass`` in their place keeps blocks whole.
    return "\n".join(line[: len(line) - len(line.lstrip())] + "pass"
                     if line.lstrip().startswith(("!", "%")) else line
                     for line in cell_source.splitlines())


def _resolve(expr: ast.expr, names: dict):
    """The object an ``a.b.c`` expression names, from the notebook's package imports."""
    if isinstance(expr, ast.Attribute):
        return getattr(_resolve(expr.value, names), expr.attr)
    if isinstance(expr, ast.Name):
        if expr.id not in names:
            raise LookupError(f"{expr.id} is not imported from mmoe_annotated in this notebook")
        return names[expr.id]
    raise LookupError(f"not a plain name or attribute: {ast.unparse(expr)}")


def shown_objects(path: Path) -> list[tuple[str, object, tuple[int, int] | None]]:
    """Every ``show_source(...)`` call of a notebook, read statically: ``(call, object,
    lines)``. Names come from the notebook's ``import mmoe_annotated ...`` and
    ``from mmoe_annotated... import ...`` statements, the only imports executed."""
    names, calls = {}, []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(_code(cell.source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.startswith("mmoe_annotated")
                                                    for a in node.names):
                exec(compile(ast.Module([node], []), str(path), "exec"), names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "mmoe_annotated"):
                exec(compile(ast.Module([node], []), str(path), "exec"), names)
            elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("show_source"):
                calls.append(node)
    out = []
    for node in calls:
        lines = {k.arg: ast.literal_eval(k.value) for k in node.keywords}.get("lines")
        out.append((ast.unparse(node), _resolve(node.args[0], names), lines))
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_shown_object_fits_the_page_verbatim(path):
    shown = shown_objects(path)
    # Every call in the text is found (none hides behind an alias the parser misses).
    text = "".join(c.source for c in nbformat.read(path, as_version=4).cells
                   if c.cell_type == "code")
    assert len(shown) == len(re.findall(r"\bshow_source\(", text)), path.name
    for call, obj, lines in shown:
        page = show_source(obj, lines=lines).data.splitlines()  # raises if a line is wider
        wide = [(n, len(line)) for n, line in enumerate(page, 1) if len(line) > WIDTH]
        assert not wide, f"{path.name}: {call} shows lines wider than {WIDTH}: {wide}"
        source = source_of(obj).splitlines()
        if lines is not None:
            source = source[lines[0] - 1:lines[1]]
        assert page == source, f"{path.name}: {call} does not show the source as it is"


def test_the_book_shows_source():
    # The check above must have something to check.
    assert sum(len(shown_objects(p)) for p in NOTEBOOKS) >= 40


def _too_wide_for_the_page(x):
    return x  # a comment that runs on and on, past the book's code width, so this line cannot be shown


def test_show_source_refuses_a_line_wider_than_the_page():
    with pytest.raises(ValueError) as err:
        show_source(_too_wide_for_the_page)
    message = str(err.value)
    _, start = inspect.getsourcelines(_too_wide_for_the_page)
    width = len(source_of(_too_wide_for_the_page).splitlines()[1])
    assert width > WIDTH
    assert "test_source._too_wide_for_the_page" in message  # the object
    assert "line 2 (" in message and f"test_source.py:{start + 1})" in message  # the line
    assert f"is {width} characters" in message and str(WIDTH) in message  # its width
    # Lines outside the shown range are not the page's concern.
    assert show_source(_too_wide_for_the_page, lines=(1, 1)).data.startswith("def ")


def test_show_source_prints_the_source_verbatim():
    assert show_source(mm.mix).data == source_of(mm.mix)
    first = show_source(mm.mix, lines=(2, 3)).data.splitlines()
    assert first == source_of(mm.mix).splitlines()[1:3]

