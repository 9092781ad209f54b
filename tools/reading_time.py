"""Estimate each book page's reading time from a formula: prose at 200 words a minute, code at
10 lines a minute, one minute per figure. The result is an estimate, not a measurement of readers:
it counts what a page holds, not how long anyone took to read it.

What counts:
- prose: the words of markdown cells (and of ``.md`` pages), outside code fences and without
  MyST directive lines (```{exercise}, :label:, ...);
- code: non-blank lines of code cells and of code fences, plus the lines of package source the
  page displays with ``mm.show_source(...)`` (as the page shows them); cells tagged
  ``remove-cell`` or ``hide-input`` (the Colab install cell, checks folded for the test suite)
  are not read and do not count;
- figures: one per ``plt.show()`` in a read code cell, or one per cell that draws without it
  (``mm.plot_...``, ``.plot(``, ``plt.subplots``), and one per image in markdown.

``python tools/reading_time.py`` prints a table: page, stated minutes, estimated minutes, and the
totals. ``tests/book/test_book.py`` keeps every stated time within 25 % of the estimate.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
WORDS_PER_MINUTE = 200
CODE_LINES_PER_MINUTE = 10
MINUTES_PER_FIGURE = 1.0

STATED = re.compile(r"Time:\**\s*about\s+(\d+)\s+minutes")
FENCE = re.compile(r"^(```|~~~)")
DIRECTIVE = re.compile(r"^\s*:\w[\w-]*:")
DRAWS = re.compile(r"\bmm\.plot_\w+\(|\.plot(\.\w+)?\(|plt\.subplots\(|\breport\.plot_\w+\(")
IMAGE = re.compile(r"!\[[^\]]*\]\(|```\{(figure|image)\}")
SKIP_TAGS = {"remove-cell", "hide-input"}


def _markdown(text: str) -> tuple[int, int, int]:
    """(prose words, code lines, images) of markdown text."""
    words = lines = 0
    state = None  # None, "code" (a code fence) or "directive" (```{exercise} ... ```: prose)
    for line in text.splitlines():
        fence = line.strip()
        if fence.startswith(("```", "~~~")):
            if fence.startswith("```{") and state is None:
                state = "directive"
            elif fence in ("```", "~~~") and state is not None:
                state = None
            elif state is None:
                state = "code"
            continue
        if state == "code":
            lines += bool(fence)
        elif not DIRECTIVE.match(line):
            words += len(line.replace("|", " ").split()) - line.count(" --- ")
    return words, lines, len(IMAGE.findall(text))


def _namespace(nb) -> dict:
    import mmoe_annotated as mm
    ns = {"mm": mm}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for stmt in re.findall(r"^(from mmoe_annotated[\w.]* import (?:\([^)]*\)|[^\n(]*)|"
                               r"import mmoe_annotated[\w.]*(?: as \w+)?)$", cell.source, re.M):
            exec(stmt, ns)
    return ns


def _shown_source_lines(source: str, ns: dict) -> int:
    """Lines of package source that ``mm.show_source(...)`` calls in ``source`` display.
    Functions the notebook defines itself are already counted as the cell's own lines."""
    import ast

    from mmoe_annotated.source import show_source
    total = 0
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and ast.unparse(node.func).endswith("show_source")):
            continue
        call = ast.unparse(node).replace(ast.unparse(node.func), "_show", 1)
        try:
            shown = eval(call, {**ns, "_show": show_source})
        except NameError:  # defined in the notebook: its lines are on the page already
            continue
        except Exception as exc:  # noqa: BLE001 - name the call that cannot be measured
            raise ValueError(f"cannot measure {ast.unparse(node)}: {type(exc).__name__}: {exc}") from exc
        text = shown if isinstance(shown, str) else shown.data
        total += sum(bool(line.strip()) for line in text.splitlines())
    return total


def measure(path: Path) -> dict:
    """Words, code lines, figures, stated and estimated minutes of one page (``"estimate"``;
    ``"measured"`` holds the same number, the name older callers use)."""
    words = code = figures = 0
    stated = None
    if path.suffix == ".md":
        text = path.read_text(encoding="utf-8")
        words, code, figures = _markdown(text)
        m = STATED.search(text)
        stated = int(m.group(1)) if m else None
    else:
        nb = nbformat.read(path, as_version=4)
        ns = None
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                w, c, f = _markdown(cell.source)
                words, code, figures = words + w, code + c, figures + f
                m = STATED.search(cell.source)
                if m and stated is None:
                    stated = int(m.group(1))
                continue
            if cell.cell_type != "code" or SKIP_TAGS & set(cell.get("metadata", {}).get("tags", [])):
                continue
            code += sum(bool(line.strip()) for line in cell.source.splitlines())
            if "show_source(" in cell.source:
                ns = ns if ns is not None else _namespace(nb)
                code += _shown_source_lines(cell.source, ns)
            shows = cell.source.count("plt.show()")
            figures += shows if shows else int(bool(DRAWS.search(cell.source)))
    minutes = words / WORDS_PER_MINUTE + code / CODE_LINES_PER_MINUTE + figures * MINUTES_PER_FIGURE
    return {"page": path.name, "words": words, "code_lines": code, "figures": figures,
            "stated": stated, "estimate": minutes, "measured": minutes}


def pages(root: Path = ROOT) -> list[Path]:
    book = root / "book"
    return sorted([*book.glob("*.ipynb"), *book.glob("*.md")])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="pages (default: every page of book/)")
    args = parser.parse_args(argv)
    print(f"{'page':34s} {'words':>6s} {'code':>5s} {'figs':>4s} {'stated':>6s} {'estimate':>8s}")
    failed, stated_total, estimate_total = 0, 0, 0.0
    for path in args.paths or pages():
        try:
            r = measure(path)
        except ValueError as exc:  # a page that shows source the package no longer has
            print(f"{path.name:34s} cannot be measured: {exc}")
            failed += 1
            continue
        stated = "-" if r["stated"] is None else str(r["stated"])
        print(f"{r['page']:34s} {r['words']:6d} {r['code_lines']:5d} {r['figures']:4d} {stated:>6s} "
              f"{r['estimate']:8.1f}")
        if r["stated"] is not None:
            stated_total += r["stated"]
            estimate_total += r["estimate"]
    print(f"{'pages that state a time, in all':34s} {'':6s} {'':5s} {'':4s} {stated_total:6d} "
          f"{estimate_total:8.1f}  minutes ({stated_total / 60:.1f} h stated)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
