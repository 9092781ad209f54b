"""mm.use_book_style: the book's figures tell series apart without colour, and are vector graphics
in Jupyter (chapter 1 explains the call; every chapter makes it)."""
from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mmoe_annotated as mm  # noqa: E402
from mmoe_annotated.train import inspect  # noqa: E402


@pytest.fixture
def style():
    with matplotlib.rc_context():  # the rcParams come back after the test
        mm.use_book_style()
        yield
    plt.close("all")


def test_the_nth_line_gets_the_nth_colour_and_line_style(style):
    fig, ax = plt.subplots()
    lines = [ax.plot(np.arange(5), np.arange(5) * k)[0] for k in range(3)]
    assert [line.get_color() for line in lines] == list(inspect.BOOK_COLORS[:3])
    styles = {line.get_linestyle() for line in lines}
    assert len(styles) == 3, styles  # three lines, three dash patterns: colour is never alone
    assert plt.rcParams["legend.fontsize"] >= 9 and plt.rcParams["xtick.labelsize"] >= 9


def test_points_drawn_with_a_format_keep_no_line(style):
    _, ax = plt.subplots()
    (points,) = ax.plot([0, 1], [1, 0], "o")
    assert points.get_linestyle() == "None" and points.get_marker() == "o"


def test_the_call_is_idempotent(style):
    before = dict(plt.rcParams)
    mm.use_book_style()
    assert dict(plt.rcParams) == before


def test_histogram_series_differ_by_hatch_and_outline(style):
    _, ax = plt.subplots()
    patches = [ax.hist(np.random.default_rng(t).random(50), **inspect._patch_style(t))[2][0]
               for t in range(3)]
    assert len({p.get_hatch() for p in patches}) == 3
    assert len({p.get_linestyle() for p in patches}) == 3


def test_plot_history_gives_each_column_its_marker(style):
    import pandas as pd

    frame = pd.DataFrame({"a": [1.0, 0.5, 0.2], "b": [0.9, 0.6, 0.4]}, index=[1, 2, 3])
    ax = mm.plot_history(frame, ["a", "b"])
    assert [line.get_marker() for line in ax.lines] == list(inspect.BOOK_MARKERS[:2])
    assert ax.lines[0].get_linestyle() != ax.lines[1].get_linestyle()


def test_figures_are_svg_in_jupyter(style):
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib.figure import Figure

    shell = InteractiveShell.instance()
    try:
        svg = shell.display_formatter.formatters["image/svg+xml"]
        png = shell.display_formatter.formatters["image/png"]
        svg.pop(Figure, None)
        mm.use_book_style()
        assert Figure in svg.type_printers and Figure not in png.type_printers
    finally:
        InteractiveShell.clear_instance()


def test_outside_jupyter_nothing_imports_ipython(tmp_path):
    import subprocess

    code = ("import sys, matplotlib; matplotlib.use('Agg'); import mmoe_annotated as mm; "
            "mm.use_book_style(); print('IPython' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_patch_styles_are_strings_that_any_hist_reads_as_one_value():
    """matplotlib 3.10's hist reads a tuple (an RGBA colour, a dash pattern) as one value per
    dataset, so a series' style must give strings only (Colab's matplotlib failed on an RGBA)."""
    from mmoe_annotated.train.inspect import _patch_style

    for n in range(8):
        style = _patch_style(n)
        assert all(isinstance(v, (str, float)) for v in style.values()), style
