"""Every figure of the book says what it shows, and looks like the book's.

A code cell that draws a figure carries its alt text in the cell's metadata,
``{"mystnb": {"image": {"alt": "..."}}}``: myst-nb puts it on the figure's ``<img>`` in the HTML
book (tools/browser_check.py checks the built pages). The text says what the figure shows, in
words: not blank, not a file name, not a word or two. A chapter that draws calls
``mm.use_book_style()`` before its first figure."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))

#: Calls that draw: the package's plot_ functions, pyplot, pandas' .plot, and Axes methods.
DRAWS = re.compile(r"\bplot_\w+\(|\bplt\.(?!rcParams)\w+\(|\.plot(?:\.\w+)?\("
                   r"|\.(?:hist|imshow|bar|barh|scatter|loglog|semilogx|semilogy|pcolormesh)\(")
FILE_NAME = re.compile(r"^\S+\.(?:png|svg|jpe?g|gif|pdf|webp)$", re.I)
MIN_WORDS = 5


def _code(cell) -> str:
    """The cell's code without comments (a comment that names plt.show draws nothing)."""
    return "\n".join(line.split("#", 1)[0] for line in cell.source.splitlines())


def draws(cell) -> bool:
    return cell.cell_type == "code" and bool(DRAWS.search(_code(cell)))


def alt_problem(cell) -> str | None:
    """What is wrong with a drawing cell's alt text (None: it says what the figure shows)."""
    alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt")
    if alt is None:
        return 'no alt text (cell metadata {"mystnb": {"image": {"alt": "..."}}})'
    if not isinstance(alt, str) or not alt.strip():
        return "a blank alt text"
    if FILE_NAME.match(alt.strip()):
        return f"an alt text that is a file name ({alt!r})"
    if len(alt.split()) < MIN_WORDS:
        return f"an alt text of fewer than {MIN_WORDS} words ({alt!r}): say what the figure shows"
    return None


def _read(path):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_has_an_alt_text_that_says_what_it_shows(path):
    nb = _read(path)
    wrong = [f"cell {i}: {problem}" for i, cell in enumerate(nb.cells, start=1)
             if draws(cell) and (problem := alt_problem(cell))]
    assert not wrong, f"{path.name}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_chapter_that_draws_sets_the_book_style_first(path):
    nb = _read(path)
    first = next((i for i, cell in enumerate(nb.cells) if draws(cell)), None)
    if first is None:
        return
    styled = any("mm.use_book_style()" in _code(cell) for cell in nb.cells[:first + 1]
                 if cell.cell_type == "code")
    assert styled, (f"{path.name}: cell {first + 1} draws a figure before any cell calls "
                    "mm.use_book_style() (call it with the imports)")


def test_the_book_has_figures_to_check():
    assert sum(draws(c) for p in NOTEBOOKS for c in _read(p).cells) >= 30


def _cell(source, alt=None):
    cell = nbformat.v4.new_code_cell(source)
    if alt is not None:
        cell.metadata["mystnb"] = {"image": {"alt": alt}}
    return cell


@pytest.mark.parametrize("source", ["mm.plot_history(history)", "plt.show()",
                                    "df.plot.bar(ax=ax)", "ax.hist(x, bins=10)",
                                    "unseen.plot(marker='.')", "ax.scatter(a, b)"])
def test_drawing_cells_are_recognised(source):
    assert draws(_cell(source))


@pytest.mark.parametrize("source", ["x = 1", "print(table)", "# plt.show() later",
                                    "mm.use_book_style()", "import matplotlib.pyplot as plt"])
def test_other_cells_are_not(source):
    assert not draws(_cell(source))


@pytest.mark.parametrize("alt, problem", [
    (None, "no alt text"), ("   ", "blank"), ("figure_3.png", "file name"),
    ("loss curves", "fewer than"),
])
def test_alt_text_defects_are_caught(alt, problem):
    assert problem in alt_problem(_cell("plt.show()", alt))


def test_a_real_alt_text_passes():
    assert alt_problem(_cell("plt.show()", "Held-out loss against training step, one line "
                                            "per model")) is None
