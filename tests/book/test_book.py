"""Checks of the book's sources: table of contents, Colab install cells, notebook conventions.

The conventions are in CONTRIBUTING.md; executing the notebooks is nbval's job
(``pytest --nbval-lax book``) and the -W build's (``make book``).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
#: Chapters carry the full teaching apparatus (learn/time, exercises, asserts, a figure).
CHAPTERS = [p for p in NOTEBOOKS if re.match(r"\d\d_", p.name)]
#: Placeholder pages exist so that the build works while a chapter is being written.

INSTALL_URL = re.compile(r"%pip install[^\n]*\"mmoe-annotated @ git\+(?P<url>[^\"@]+?)(?:\.git)?(?:@[^\"]*)?\"")
EXERCISE = re.compile(r"```\{exercise\}[^\n]*\n(?:[^\n]*\n)*?:label: (?P<label>[\w-]+)")
SOLUTION = re.compile(r"```\{solution(?:-start)?\} (?P<label>[\w-]+)")


def _toc_files(node) -> list[str]:
    files = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root"):
                files.append(value)
            else:
                files.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            files.extend(_toc_files(item))
    return files


def _resolve(entry: str) -> Path | None:
    for suffix in ("", ".ipynb", ".md"):
        path = ROOT / f"{entry}{suffix}"
        if path.is_file():
            return path
    return None


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


# ---------------------------------------------------------------------------
# Table of contents and configuration
# ---------------------------------------------------------------------------

def test_toc_files_exist():
    entries = _toc_files(TOC)
    assert TOC["root"] in entries
    missing = [e for e in entries if _resolve(e) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    assert len(entries) == len(set(entries)), "a file is listed twice in _toc.yml"


def test_every_book_page_is_in_the_toc():
    # only_build_toc_files: a page missing from the toc would be skipped by the build without a word.
    listed = {_resolve(e) for e in _toc_files(TOC)}
    pages = {p for p in BOOK.iterdir() if p.suffix in (".md", ".ipynb")}
    assert not pages - listed, f"pages in book/ that _toc.yml does not list: {sorted(p.name for p in pages - listed)}"


def test_colab_configured_once():
    url = CONFIG["repository"]["url"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), \
        f"repository.url must be a GitHub repository URL (Colab opens notebooks from GitHub): {url!r}"
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["branch"]
    # The buttons open the Jupyter-friendly copies in colab/ (tests/test_colab_notebooks.py);
    # "." would give Colab links like .../blob/main/./book/x.ipynb
    assert CONFIG["repository"]["path_to_book"] == "colab"


def test_build_excludes_and_pytest_skips_build_outputs():
    excluded = CONFIG["exclude_patterns"]
    for pattern in ("_build", ".venv", "tests"):
        assert pattern in excluded
    assert CONFIG["only_build_toc_files"] is True
    assert CONFIG["execute"]["allow_errors"] is False
    norecurse = re.search(r"^norecursedirs\s*=\s*\[([^\]]*)\]", (ROOT / "pyproject.toml").read_text(), re.M)
    assert norecurse and '"_build"' in norecurse[1], "pytest would collect the executed copies in _build/**.ipynb"


def test_every_bib_key_cited_exists():
    keys = set(re.findall(r"@\w+\{([\w-]+),", (BOOK / "references.bib").read_text()))
    pages = [p for p in BOOK.iterdir() if p.suffix in (".md", ".ipynb")]
    cited = set()
    for page in pages:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", page.read_text()):
            cited.update(k.strip() for k in group.split(","))
    assert cited, "no citations found at all"
    assert not cited - keys, f"cited keys missing from references.bib: {sorted(cited - keys)}"


# ---------------------------------------------------------------------------
# Every notebook: clean, with the Colab install cell first
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path):
    nb = _read(path)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"{path.name}: cells {[i + 1 for i in dirty]} (counting from 1, markdown "
                       "cells included) carry outputs or execution counts; run `make strip`")
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_first_and_matches_config(path):
    nb = _read(path)
    code = _code_cells(nb)
    assert code, f"{path.name} has no code cell"
    first = code[0]
    assert "remove-cell" in _tags(first), f"{path.name}: the install cell must be tagged remove-cell"
    assert 'if "google.colab" in sys.modules:' in first.source, \
        f"{path.name}: the install cell must only install inside Colab"
    match = INSTALL_URL.search(first.source)
    assert match, f"{path.name}: the first code cell is not the Colab install cell of CONTRIBUTING.md"
    assert match["url"] == CONFIG["repository"]["url"], (
        f"{path.name}: installs from {match['url']}, but _config.yml's repository.url is "
        f"{CONFIG['repository']['url']}; run `make fork REPO=...` to repoint both")
    others = [i for i, c in enumerate(code[1:], start=1) if "git+" in c.source and "%pip" in c.source]
    assert not others, f"{path.name}: only the first code cell may install the package"


def test_install_url_check_catches_a_mismatch():
    # The check above must be able to fail: a cell pointing at another repository does not match.
    cell = 'import sys\nif "google.colab" in sys.modules:\n    %pip install -q "mmoe-annotated @ git+https://github.com/someone/else"'
    match = INSTALL_URL.search(cell)
    assert match and match["url"] == "https://github.com/someone/else" != CONFIG["repository"]["url"]


# ---------------------------------------------------------------------------
# Every chapter: what you will learn, time, exercises with solutions, asserts, a figure
# ---------------------------------------------------------------------------

def _chapter(path):
    return _read(path)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_with_learn_and_time(path):
    nb = _chapter(path)
    first_code = nb.cells.index(_code_cells(nb)[0])
    opening = "\n".join(c.source for c in nb.cells[:first_code + 2] if c.cell_type == "markdown")
    assert "What you will learn" in opening, f"{path.name}: no 'What you will learn' at the top"
    assert re.search(r"Time: about \d+ minutes", opening), f"{path.name}: no 'Time: about N minutes' at the top"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_exercises_have_solutions(path):
    nb = _chapter(path)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    exercises = EXERCISE.findall(markdown)
    solutions = SOLUTION.findall(markdown)
    assert len(exercises) >= 2, f"{path.name}: {len(exercises)} exercise(s), at least 2 expected"
    assert len(set(exercises)) == len(exercises), f"{path.name}: duplicate exercise labels"
    assert not set(exercises) - set(solutions), \
        f"{path.name}: exercises without a solution: {sorted(set(exercises) - set(solutions))}"
    assert any(c.cell_type == "code" and "solution" in _tags(c) for c in nb.cells), \
        f"{path.name}: at least one exercise needs a worked solution in code"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_solution_cells_are_tagged(path):
    # `make student` strips cells tagged `solution`: every cell of a gated solution needs the tag.
    nb = _chapter(path)
    inside = False
    for i, cell in enumerate(nb.cells):
        starts = cell.cell_type == "markdown" and "```{solution-start}" in cell.source
        ends = cell.cell_type == "markdown" and "```{solution-end}" in cell.source
        assert not (starts and inside), f"{path.name}: cell {i} opens a solution inside another"
        if starts:
            inside = True
        if inside:
            assert "solution" in _tags(cell), f"{path.name}: cell {i} is part of a solution but lacks the tag"
        if ends:
            assert inside, f"{path.name}: cell {i} closes a solution that was never opened"
            inside = False
    assert not inside, f"{path.name}: a solution-start has no solution-end"
    stray = [i for i, c in enumerate(nb.cells) if "solution" in _tags(c) and c.cell_type == "code"
             and not any("```{solution-start}" in p.source for p in nb.cells[:i] if p.cell_type == "markdown")]
    assert not stray, f"{path.name}: cells {stray} are tagged solution outside any solution"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_checks_claims_and_draws(path):
    nb = _chapter(path)
    code = [c.source for c in _code_cells(nb) if "solution" not in _tags(c)]
    assert any(re.search(r"^\s*assert\b", s, re.M) for s in code), f"{path.name}: no assert cell outside the solutions"
    assert any(re.search(r"\bplt\.|\bmm\.plot_|\.plot(\.|\()", s) for s in code), f"{path.name}: no figure"
    assert any("mm.show_source(" in s for s in code), f"{path.name}: shows no package source"
    assert "import mmoe_annotated as mm" in "\n".join(code)


def test_exercise_labels_unique_across_the_book():
    labels = []
    for path in NOTEBOOKS:
        labels += EXERCISE.findall("\n".join(c.source for c in _read(path).cells if c.cell_type == "markdown"))
    for path in BOOK.glob("*.md"):
        labels += EXERCISE.findall(path.read_text())
    assert len(labels) == len(set(labels)), f"duplicate exercise labels: {sorted({l for l in labels if labels.count(l) > 1})}"


def test_no_page_is_a_placeholder():
    stale = [p.name for p in sorted(BOOK.glob("*")) if p.suffix in (".md", ".ipynb")
             and "PLACEHOLDER: being written" in p.read_text(encoding="utf-8")]
    assert not stale, f"placeholder pages left in the book: {stale}"


DOWNLOADS = re.compile(r"\b(urllib|urlopen|requests\.get|http\.client|wget|curl)\b")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_never_download(path):
    # Chapters run offline and in Colab from the installed package alone: data comes from the
    # package (embedded or generated), never from the network. Only the Colab cell installs.
    code = _code_cells(_read(path))[1:]
    hits = [i for i, c in enumerate(code, start=1) if DOWNLOADS.search(c.source)]
    assert not hits, f"{path.name}: code cells {hits} fetch from the network"


def _discarded_source_displays(source: str) -> list[str]:
    """``mm.show_source(...)`` statements whose display object is dropped: only a cell's last
    expression is displayed, so an earlier one shows nothing unless wrapped in ``display``."""
    import ast
    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython magics; such cells show no source
        return []
    return [ast.unparse(s) for s in body[:-1] if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
            and ast.unparse(s.value.func).endswith("show_source")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_show_source_is_displayed(path):
    lost = {i: d for i, c in enumerate(_code_cells(_read(path))) if (d := _discarded_source_displays(c.source))}
    assert not lost, f"{path.name}: show_source results that are never displayed (wrap them in display()): {lost}"


def test_the_show_source_check_catches_a_dropped_display():
    assert _discarded_source_displays("mm.show_source(mm.fit)\nx = 1") == ["mm.show_source(mm.fit)"]
    assert _discarded_source_displays("display(mm.show_source(mm.fit))\nmm.show_source(mm.predict)") == []


# ---------------------------------------------------------------------------
# Speaking to the reader: no narration of how the project was built
# ---------------------------------------------------------------------------

#: Phrases that narrate the project's making (issues, rounds, scratch work, machine anecdotes,
#: logs of individual runs) instead of teaching. Name the hardware a figure came from, no more.
PROCESS_PHRASES = re.compile(
    r"\bissues?\b|\bthis round\b|\b(?:previous|last|next|earlier|later|first|second) round\b|\bround \d"
    r"|\bscratch\b|\bbuild machine\b|\brun logs?\b|\bshared (?:\d-core )?machine\b|\bour (?:\w+ )?machine\b"
    r"|\bmachine was (?:busy|available|lent|free)\b|\bwhile (?:it|the machine) was available\b"
    r"|\bhelper (?:sessions?|engineers?)\b|\bthe lead\b|\bbudget of device time\b|\bwe were lent\b",
    re.IGNORECASE)
READER_PAGES = [*NOTEBOOKS, *sorted(BOOK.glob("*.md")), ROOT / "README.md"]


def _reader_text(path: Path) -> str:
    """What a reader reads: markdown, and the comments of code cells."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    parts = []
    for cell in _read(path).cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
        elif cell.cell_type == "code":
            parts += re.findall(r"#[^\n]*", cell.source)
    return "\n".join(parts)


def process_phrases(text: str) -> list[str]:
    return sorted({m.group(0).lower() for m in PROCESS_PHRASES.finditer(text)})


@pytest.mark.parametrize("path", READER_PAGES, ids=lambda p: p.name)
def test_pages_speak_to_the_reader_not_about_the_project(path):
    found = process_phrases(_reader_text(path))
    assert not found, f"{path.relative_to(ROOT)} narrates how the project was built: {found}"


def test_the_process_phrase_check_catches_narration():
    assert process_phrases("As issue 12 asked, this round we reran the scratch script on the build machine.") == [
        "build machine", "issue", "scratch", "this round"]
    assert process_phrases("Measured on an NVIDIA H200; rounded to 3 digits; the loss of one round trip.") == []


#: The language of building and testing the book ("NOT MET", "committed", "load average", "2-core",
#: "CI", "make test", "tests/"): one list, tools/build_check.py's BUILD_TALK, with the pages that
#: may use a phrase (BUILD_TALK_ALLOWED: the README and the teaching page name the commands an
#: instructor runs). Here on the sources, before a build; `make test-build` checks the built pages
#: and every output with the same list.
@functools.lru_cache(maxsize=None)
def _build_check():
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("tools_build_check", ROOT / "tools" / "build_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def _reader_prose(path: Path) -> str:
    """What a reader reads as prose: `_reader_text` without fenced code blocks (a command shown in
    a code block is an instruction, not talk)."""
    return re.sub(r"^(```+|~~~+).*?^\1[ \t]*$", "", _reader_text(path), flags=re.M | re.S)


def _page_key(path: Path) -> str:
    return "README" if path == ROOT / "README.md" else f"book/{path.stem}"


@pytest.mark.parametrize("path", READER_PAGES, ids=lambda p: p.name)
def test_pages_do_not_talk_about_the_build(path):
    found = _build_check().build_talk(_reader_prose(path), _page_key(path))
    assert not found, (f"{path.relative_to(ROOT)} talks about building or testing the book: {found} "
                       "(tools/build_check.py: BUILD_TALK, BUILD_TALK_ALLOWED)")


def test_the_build_talk_check_catches_build_talk(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("The target is NOT MET on the 2-core runner; CI runs `make test`.\n\n"
                    "```bash\nmake test   # a command in a code block is fine\n```\n")
    assert _build_check().build_talk(_reader_prose(page), "book/page") == [
        "NOT MET", "2-core", "CI", "make test"]
    page.write_text("```bash\nmake test\n```\n")
    assert _build_check().build_talk(_reader_prose(page), "book/page") == []


# ---------------------------------------------------------------------------
# Reading times are estimated by one formula (tools/reading_time.py), not guessed
# ---------------------------------------------------------------------------

def _reading_time():
    import importlib.util
    spec = importlib.util.spec_from_file_location("tools_reading_time", ROOT / "tools" / "reading_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", [p for p in _reading_time().pages(ROOT)], ids=lambda p: p.name)
def test_stated_reading_time_is_within_a_quarter_of_the_estimate(path):
    r = _reading_time().measure(path)
    if path in CHAPTERS or path.name.startswith("appendix_"):
        assert r["stated"] is not None, f"{path.name}: states no reading time"
    if r["stated"] is not None:
        assert abs(r["stated"] - r["estimate"]) <= 0.25 * r["estimate"], (
            f"{path.name} says {r['stated']} minutes; the estimate is {r['estimate']:.1f} ({r['words']} words, "
            f"{r['code_lines']} code lines, {r['figures']} figures): run tools/reading_time.py")


def test_reading_time_counts_prose_code_and_figures(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("**Time: about 2 minutes.**\n\n" + "word " * 196),
                nbformat.v4.new_code_cell("x = 1\ny = 2\n\nplt.plot([x, y])\nplt.show()"),
                nbformat.v4.new_code_cell("assert x == 1", metadata={"tags": ["hide-input"]})]
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    r = _reading_time().measure(path)
    assert (r["words"], r["code_lines"], r["figures"], r["stated"]) == (200, 4, 1, 2)
    assert r["estimate"] == pytest.approx(200 / 200 + 4 / 10 + 1)


def test_bibliography_protects_acronyms_and_dates_the_tutorial():
    # BibTeX styles lowercase titles: "MMoE" would print as "mmoe" unless it sits in braces.
    bib = (BOOK / "references.bib").read_text()
    for title in re.findall(r"^\s*(?:title|booktitle)\s*=\s*\{(.*)\},?\s*$", bib, re.M):
        unprotected = re.sub(r"\{[^{}]*\}", "", title)
        shouting = re.findall(r"\b\w*[A-Z]\w*[A-Z]\w*\b", unprotected)
        assert not shouting, f"references.bib: protect {shouting} with braces in {title!r}"
    tutorial = re.search(r"@misc\{meng2024annotated,(.*?)\n\}", bib, re.S).group(1)
    assert "url" in tutorial and "2024" in tutorial and "month" in tutorial


def test_numbered_chapters_are_numbered_in_the_toc():
    # A page the text calls "chapter N" (file NN_*.ipynb) must sit in a numbered part of the toc.
    numbered = []
    for part in TOC["parts"]:
        if part.get("numbered"):
            numbered += _toc_files(part["chapters"])
    chapters = [f"book/{p.stem}" for p in CHAPTERS]
    assert not set(chapters) - set(numbered), f"chapters outside a numbered part: {sorted(set(chapters) - set(numbered))}"
    assert CONFIG.get("html", {}).get("use_multitoc_numbering", True), \
        "numbering must continue across parts (use_multitoc_numbering)"


#: The rendered page cuts code lines at about 80-90 characters: keep what the reader sees within it.
PAGE_WIDTH = 88


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_cells_fit_the_page(path):
    long = [(i, len(line)) for i, c in enumerate(_read(path).cells) if c.cell_type == "code"
            and "remove-cell" not in _tags(c) for line in c.source.splitlines() if len(line) > PAGE_WIDTH]
    assert not long, f"{path.name}: code lines wider than {PAGE_WIDTH} characters (cell, width): {long[:10]}"


# Reading an environment variable counts; passing the environment on to a child process does not.
OUTSIDE_PATHS = re.compile(r"""["'](?:\.\./|/work/|/home/|/tmp/|~/)|os\.environ(?:\[|\.get)|\bshared/data\b""")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_read_nothing_outside_the_package_and_the_book(path):
    # Data comes from the installed package (mm.load_example, mm.load_byterec_sample, committed
    # results) or is written by the notebook itself into a temporary folder it creates.
    hits = [i for i, c in enumerate(_code_cells(_read(path))[1:], start=1) if OUTSIDE_PATHS.search(c.source)]
    assert not hits, f"{path.name}: code cells {hits} reach for files outside the package and the book"
