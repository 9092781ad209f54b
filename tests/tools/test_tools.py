"""Tests for the book's tooling in tools/: MathJax fetch, browser check, student edition, fork.

Everything runs on temporary copies; nothing here changes the repository.
"""
from __future__ import annotations

import importlib.util
import io
import re
import shutil
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
FETCHED_MATHJAX = REPO / "_build" / "mathjax" / "_static" / "_mathjax"
CHROMIUM = Path("/usr/bin/chromium")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fetch_mathjax = load_tool("fetch_mathjax")
make_student = load_tool("make_student")
repoint = load_tool("repoint")
browser_check = load_tool("browser_check")

INSTALL_CELL = ('# Colab only: install the companion package from the book\'s repository.\n'
                'import sys\nif "google.colab" in sys.modules:\n'
                '    %pip install -q "mmoe-annotated @ git+{url}"')


# ----------------------------------------------------------------------------- fetch_mathjax

def _tgz(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_fetch_mathjax_keeps_only_what_tex_mml_chtml_loads(tmp_path):
    tgz = _tgz({
        "package/LICENSE": b"Apache",
        "package/es5/tex-mml-chtml.js": b"// bundle",
        "package/es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff": b"w",
        "package/es5/input/tex/extensions/boldsymbol.js": b"b",
        "package/es5/input/tex/extensions/ams.js": b"a",
        "package/es5/tex-svg-full.js": b"dropped",
        "package/es5/sre/mathmaps/en.json": b"dropped",
        "package/es5/output/svg/fonts/tex.js": b"dropped",
        "package/ts/core/MathItem.ts": b"dropped",
        "package/es5/input/tex/extensions/../../../../evil.js": b"dropped",
    })
    n = fetch_mathjax.extract(tgz, tmp_path)
    got = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert got == ["LICENSE", "input/tex/extensions/ams.js", "input/tex/extensions/boldsymbol.js",
                   "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff", "tex-mml-chtml.js"]
    assert n == 5


def test_fetch_mathjax_rejects_a_tarball_without_the_bundle(tmp_path):
    with pytest.raises(SystemExit, match="no es5/tex-mml-chtml.js"):
        fetch_mathjax.extract(_tgz({"package/index.js": b"x"}), tmp_path)


def test_config_loads_mathjax_from_the_fetched_folder():
    sphinx = yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]["config"]
    # Sphinx puts a relative mathjax_path under _static/; html_extra_path copies the folder's
    # contents to the output root, so the two must meet at _static/<mathjax_path>.
    extra = [REPO / p for p in sphinx["html_extra_path"]]
    assert any(FETCHED_MATHJAX.parent.parent == p for p in extra)
    assert sphinx["mathjax_path"] == f"{FETCHED_MATHJAX.name}/{fetch_mathjax.ENTRY}"
    assert not (REPO / "_static").exists(), "Jupyter Book 1 adds every JS/CSS file there to every page"


# ----------------------------------------------------------------------------- make_student

def _exercise_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    install = nbformat.v4.new_code_cell(INSTALL_CELL.format(url="https://github.com/o/r"))
    install.metadata["tags"] = ["remove-cell"]
    demo = nbformat.v4.new_code_cell("print(1 + 1)", execution_count=3,
                                     outputs=[nbformat.v4.new_output("stream", text="2\n")])
    sol = [nbformat.v4.new_markdown_cell("```{solution-start} ex-a\n:class: dropdown\n```"),
           nbformat.v4.new_code_cell("answer = 42"),
           nbformat.v4.new_markdown_cell("```{solution-end}\n```")]
    for c in sol:
        c.metadata["tags"] = ["solution"]
    prose_sol = nbformat.v4.new_markdown_cell("```{solution} ex-b\nBecause.\n```")
    prose_sol.metadata["tags"] = ["solution"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), install, demo,
                nbformat.v4.new_markdown_cell("```{exercise} A\n:label: ex-a\nDo it.\n```"), *sol,
                nbformat.v4.new_markdown_cell("```{exercise} B\n:label: ex-b\nWhy?\n```"), prose_sol,
                nbformat.v4.new_markdown_cell("## After")]
    return nb


def test_student_notebook_strips_solutions_and_keeps_the_colab_cell():
    nb = _exercise_notebook()
    student = make_student.student_notebook(nb, "t.ipynb")
    sources = [c.source for c in student.cells]
    assert not any("solution" in c.metadata.get("tags", []) for c in student.cells)
    assert not any("answer = 42" in s or "Because." in s or "solution-" in s for s in sources)
    # the Colab install cell: first code cell, unchanged, still hidden from the HTML book
    assert student.cells[1].source == nb.cells[1].source
    assert student.cells[1].metadata["tags"] == ["remove-cell"]
    # one empty answer cell where each solution was, everything else in order
    assert sources == ["# Title", nb.cells[1].source, "print(1 + 1)", nb.cells[3].source,
                       make_student.PLACEHOLDER, nb.cells[7].source, make_student.PLACEHOLDER,
                       "## After"]
    assert student.cells[2].outputs == [] and student.cells[2].execution_count is None
    assert nb.cells[5].source == "answer = 42", "the input notebook is not modified"


def test_student_notebook_refuses_an_untagged_solution():
    nb = _exercise_notebook()
    nb.cells[8].metadata["tags"] = []  # the prose solution, tag forgotten
    # named as Jupyter lists it: the 9th cell, 1-based, with its first line
    with pytest.raises(make_student.StudentEditionError,
                       match=r"t.ipynb: cell 9 \(markdown, starts '```\{solution\} ex-b'\) .*not tagged"):
        make_student.student_notebook(nb, "t.ipynb")


def test_student_notebook_requires_the_colab_cell_first():
    nb = _exercise_notebook()
    nb.cells[1], nb.cells[2] = nb.cells[2], nb.cells[1]
    with pytest.raises(make_student.StudentEditionError, match="Colab install cell"):
        make_student.student_notebook(nb, "t.ipynb")


def _solution_lines(nb, elsewhere):
    """Distinctive lines of the worked solutions (code and prose) of a chapter: long lines that
    no cell outside a solution holds."""
    lines = set()
    for cell in nb.cells:
        if make_student.is_solution(cell):
            lines |= {l.strip() for l in cell.source.splitlines()
                      if len(l.strip()) > 25 and "{solution" not in l}
    return {l for l in lines if l not in elsewhere}


def test_student_edition_of_the_real_book(tmp_path):
    """`make student` on the chapters as they stand: a repository with no solution and no book/."""
    dest = tmp_path / "student"
    (dest / ".git").mkdir(parents=True)  # a checkout of the student repository survives
    (dest / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (dest / "notes.txt").write_text("someone else's folder")
    with pytest.raises(SystemExit, match="was not written by make_student"):
        make_student.main([str(dest), "--root", str(REPO)])
    (dest / "notes.txt").unlink()
    assert make_student.main([str(dest), "--root", str(REPO), "--student-repo",
                              "https://github.com/teacher/course", "--student-ref", "spring"]) == 0
    assert (dest / ".git" / "HEAD").is_file()
    assert not (dest / "book").exists()
    assert list(dest.rglob("*.md")) == [dest / "README.md"], "no book sources"
    assert (dest / "pyproject.toml").is_file() and (dest / "mmoe_annotated" / "__init__.py").is_file()
    readme = (dest / "README.md").read_text()
    chapters = sorted((REPO / "book").glob("*.ipynb"))
    assert sorted(p.name for p in dest.glob("*.ipynb")) == [p.name for p in chapters]
    elsewhere = "\n".join(c.source for p in chapters for c in nbformat.read(p, as_version=4).cells
                          if not make_student.is_solution(c))
    # the notebooks' cells and the README (the package sources are the repository's, unchanged)
    everything = "\n".join([c.source for p in dest.glob("*.ipynb")
                            for c in nbformat.read(p, as_version=4).cells] + [readme])
    for src in (REPO / "mmoe_annotated").rglob("*.py"):
        assert (dest / src.relative_to(REPO)).read_bytes() == src.read_bytes()
    for path in chapters:
        nb = nbformat.read(path, as_version=4)
        assert f"https://colab.research.google.com/github/teacher/course/blob/spring/{path.name}" in readme
        leaked = _solution_lines(nb, elsewhere)
        assert leaked or not any(map(make_student.is_solution, nb.cells)), path.name
        for line in leaked:
            assert line not in everything, f"{path.name}: solution line leaked: {line!r}"
        student = nbformat.read(dest / path.name, as_version=4)
        text = "\n".join(c.source for c in student.cells)
        assert "Solution to Exercise" not in text and "{solution" not in text and "{exercise}" not in text
        n_ex = sum("{exercise}" in c.source for c in nb.cells)
        assert len(re.findall(r"^#### Exercise \d", text, re.M)) == n_ex, path.name
        assert text.count(make_student.PLACEHOLDER.strip()) == n_ex, path.name
        code = [c for c in student.cells if c.cell_type == "code"]
        assert code[0].source.endswith('"mmoe-annotated @ git+https://github.com/teacher/course@spring"')
        assert all(c.outputs == [] for c in code)
    make_student.check_edition(dest)


def test_student_edition_without_a_student_repository_installs_from_the_book(tmp_path, capsys):
    assert make_student.main([str(tmp_path / "s"), "--root", str(REPO)]) == 0
    out = capsys.readouterr().out
    assert "also holds the solutions" in out
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]
    nb = nbformat.read(tmp_path / "s" / "05_gates.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert f'git+{cfg["url"]}@{cfg["branch"]}"' in code[0].source


# ----------------------------------------------------------------------------- repoint

@pytest.fixture
def book_copy(tmp_path):
    for name in ("_config.yml", "_toc.yml", "README.md", "CONTRIBUTING.md", "pyproject.toml"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "book", tmp_path / "book")
    # one chapter with an install cell that had drifted from _config.yml
    nb = _exercise_notebook()
    nb.cells[1].source = INSTALL_CELL.format(url="https://github.com/someone/else")
    nbformat.write(nb, tmp_path / "book" / "zz_drifted.ipynb")
    return tmp_path


def test_repoint_rewrites_config_and_every_install_cell(book_copy):
    old = yaml.safe_load((book_copy / "_config.yml").read_text())["repository"]["url"]
    before = {p: p.read_text() for p in book_copy.rglob("*") if p.is_file()}
    got_old, new, changed = repoint.repoint(book_copy, "https://github.com/teacher/mmoe-course.git/",
                                            branch="spring")
    assert (got_old, new) == (old, "https://github.com/teacher/mmoe-course")

    config_text = (book_copy / "_config.yml").read_text()
    config = yaml.safe_load(config_text)
    assert config["repository"]["url"] == new and config["repository"]["branch"] == "spring"
    assert config["repository"]["path_to_book"] == yaml.safe_load(
        before[book_copy / "_config.yml"])["repository"]["path_to_book"]
    # only the two lines changed; comments and the rest of the file are kept
    diff = [(a, b) for a, b in zip(before[book_copy / "_config.yml"].splitlines(),
                                   config_text.splitlines()) if a != b]
    assert len(diff) == 2 and len(config_text.splitlines()) == len(
        before[book_copy / "_config.yml"].splitlines())

    urls = {}
    for path in sorted((book_copy / "book").glob("*.ipynb")):
        urls[path.name] = repoint.install_urls(nbformat.read(path, as_version=4))
    assert urls["zz_drifted.ipynb"] == [f"{new}@spring"]
    assert sum(map(len, urls.values())) >= 2
    assert all(u == f"{new}@spring" for us in urls.values() for u in us)
    old_colab = "colab.research.google.com/github/" + old.split("github.com/")[1] + "/blob/main/"
    new_colab = "colab.research.google.com/github/teacher/mmoe-course/blob/spring/"
    readme = (book_copy / "README.md").read_text()
    if old_colab in before[book_copy / "README.md"]:  # the README's direct Colab link follows
        assert new_colab in readme and old_colab not in readme
    for path, text in before.items():
        now = path.read_text()
        assert old not in now.replace(new, "")
        if path.name not in ("zz_drifted.ipynb", "_config.yml"):
            # nothing but the URL and the Colab links changed
            back = now.replace(new_colab, old_colab).replace(new, old)
            assert back.replace(f"{old}@spring", f"{old}@main") == text, path
    assert set(changed) == {p for p, t in before.items() if p.read_text() != t}


def test_repoint_refuses_a_repository_colab_cannot_open(book_copy):
    config = (book_copy / "_config.yml").read_text()
    for bad in ("https://gitlab.com/you/fork", "github.com/you/fork", "https://github.com/you",
                "https://github.com/you/fork/tree/main"):
        with pytest.raises(repoint.RepointError, match="https://github.com/OWNER/NAME"):
            repoint.repoint(book_copy, bad)
    assert (book_copy / "_config.yml").read_text() == config


def test_make_fork_cli_reports_changes_and_refreshes_generated_notebooks(book_copy, capsys):
    shutil.copytree(REPO / "mmoe_annotated", book_copy / "mmoe_annotated")
    for name in ("LICENSE", "LICENSE-text"):
        shutil.copy(REPO / name, book_copy / name)
    assert make_student.main([str(book_copy / "student"), "--root", str(book_copy)]) == 0
    assert repoint.main(["https://github.com/a/b", "--root", str(book_copy), "--branch", "fall"]) == 0
    out = capsys.readouterr().out
    assert "-> https://github.com/a/b at fall" in out and "_config.yml" in out
    assert "Colab notebooks written again" in out and "student/ written again" in out
    want = '"mmoe-annotated @ git+https://github.com/a/b@fall"'
    for folder in ("colab/book", "student"):
        nb = nbformat.read(book_copy / folder / "05_gates.ipynb", as_version=4)
        assert [c for c in nb.cells if c.cell_type == "code"][0].source.endswith(want), folder
    assert "github/a/b/blob/fall/colab/book/01_paper.ipynb" in (book_copy / "colab" / "README.md").read_text()
    # a student/ folder that make_student did not write is left alone, with a warning
    shutil.rmtree(book_copy / "student")
    (book_copy / "student").mkdir()
    (book_copy / "student" / "05_gates.ipynb").write_text("{}")
    assert repoint.main(["--root", str(book_copy), "--branch", "v0.1.0"]) == 0
    out = capsys.readouterr().out
    assert "https://github.com/a/b -> https://github.com/a/b at v0.1.0" in out
    assert "WARNING: student/ was not written by `make student`" in out
    assert (book_copy / "student" / "05_gates.ipynb").read_text() == "{}"
    with pytest.raises(SystemExit, match="repoint: REPO must look like"):
        repoint.main(["ftp://x", "--root", str(book_copy)])
    with pytest.raises(SystemExit, match="repoint: BRANCH must be a git branch or tag"):
        repoint.main(["--root", str(book_copy), "--branch", "a b"])


# ----------------------------------------------------------------------------- browser_check

PNG_1x1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201f1b3f5a50000000049454e44ae426082")


def _page(body, mathjax=False, prefix=""):
    script = f'<script defer src="{prefix}_static/_mathjax/tex-mml-chtml.js"></script>' if mathjax else ""
    viewport = '<meta name="viewport" content="width=device-width, initial-scale=1">'
    return (f"<!DOCTYPE html><html><head><title>t</title>{viewport}{script}</head>"
            f"<body><main>{body}</main></body></html>")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium (`make chromium`)")
@pytest.mark.skipif(not (FETCHED_MATHJAX / "tex-mml-chtml.js").exists(),
                    reason="needs the fetched MathJax (`make mathjax`)")
def test_browser_check_catches_what_a_reader_would_see(tmp_path, capsys, monkeypatch):
    """A tiny site with one good page and one page per defect: each defect is reported."""
    root = tmp_path
    (root / "_config.yml").write_text(
        "repository:\n  url: https://github.com/o/r\n  path_to_book: colab\n  branch: main\n"
        "launch_buttons:\n  colab_url: https://colab.research.google.com\n")
    html = root / "_build" / "html"
    shutil.copytree(FETCHED_MATHJAX, html / "_static" / "_mathjax")
    (html / "book").mkdir()
    (html / "_images").mkdir()
    (html / "_images" / "dot.png").write_bytes(PNG_1x1)
    colab = "https://colab.research.google.com/github/o/r/blob/main/colab/book/good.ipynb"
    (root / "book").mkdir()
    (root / "colab" / "book").mkdir(parents=True)
    for name in ("good", "nocolab", "nocopy"):
        (root / "book" / f"{name}.ipynb").write_text("{}")
        if name != "nocopy":  # the Colab copy `make colab` writes; missing for nocopy
            (root / "colab" / "book" / f"{name}.ipynb").write_text("{}")
    pages = {
        "index.html": '<meta http-equiv="Refresh" content="0; url=book/good.html" />',
        "book/good.html": _page(
            '<h1 id="top">Good</h1><p>Inline <span class="math">\\(y=\\sum_i g(x)_i f_i(x)\\)</span>.</p>'
            '<div class="math">\\[\\boldsymbol{W}_{gk} x\\]</div>'
            '<pre>print("\\\\(x\\\\) $$ in code is fine")</pre>'
            f'<img src="../_images/dot.png" alt="A dot"><a href="other.html#sec">ok</a>'
            f'<a href="#top">top</a><a href="{colab}">Colab</a>'
            '<div class="pst-scrollable-table-container" style="overflow-x: auto">'
            '<table style="width: 2000px"><tr><td>a table that scrolls in its wrapper</td></tr></table>'
            '</div>', mathjax=True, prefix="../"),
        "book/other.html": _page('<h2 id="sec">Sec</h2>'),
        "book/rawtex.html": _page("<p>The mixture is $$\\sum_i g_i f_i$$ and \\(x\\).</p>"),
        "book/mjerror.html": _page('<span class="math">\\(\\undefinedmacro{x}\\)</span>',
                                   mathjax=True, prefix="../"),
        "book/badimg.html": _page('<img src="../_images/missing.png">'),
        "book/traceback.html": _page(
            '<div class="cell_output"><div class="output traceback"><pre>Traceback (most recent '
            'call last):\n  ValueError: boom</pre></div></div>'
            '<div class="cell tag_raises-exception"><div class="cell_output"><pre>Traceback '
            '(most recent call last): shown on purpose</pre></div></div>'),
        "book/badlink.html": _page('<a href="nowhere.html">x</a><a href="other.html#nope">y</a>'),
        "book/nocolab.html": _page("<p>A notebook page without its button.</p>"),
        "book/nocopy.html": _page(f'<a href="{colab.replace("good", "nocopy")}">Colab</a>'),
        # layout and figures, at both widths
        "book/noalt.html": _page('<img src="../_images/dot.png"><img src="../_images/dot.png" alt=" ">'
                                 '<img src="../_images/dot.png" alt="../_images/dot.png">'),
        "book/sideways.html": _page('<p>fits</p><div style="width: 1500px">too wide</div>'),
        "book/narrow.html": _page('<p>fits at 1280, not at 390:</p><div style="width: 600px">x</div>'),
        "book/widetable.html": _page('<div style="overflow: hidden"><table style="width: 2000px">'
                                     '<tr><td>cut off</td></tr></table></div>'),
        "book/widemath.html": _page(
            '<div class="math" style="overflow-x: auto">\\[' + " + ".join(f"x_{{{i}}}" for i in range(40))
            + '\\]</div>', mathjax=True, prefix="../"),
        "book/widefig.html": _page('<div style="width: 200px; overflow: hidden">'
                                   '<img src="../_images/dot.png" alt="A dot" style="width: 500px"></div>'),
    }
    for rel, text in pages.items():
        (html / rel).write_text(text)

    monkeypatch.setattr(browser_check, "SHOTS", {"book/good.html": ("equations", "div.math"),
                                                 "book/other.html": ("headings", "h2")})
    rc = browser_check.main([str(html), "--root", str(root), "--chromium", str(CHROMIUM),
                             "--screenshots", str(tmp_path / "shots"), "--jobs", "3"])
    out = capsys.readouterr().out
    report, current = {}, None
    for line in out.splitlines():
        m = re.match(r"^(ok  |FAIL) (\S+)", line)
        if m:
            current = m.group(2)
            report[current] = [] if m.group(1) == "ok  " else ["FAIL"]
        elif line.startswith("       - ") and current:
            report[current].append(line[9:])
    assert rc == 1, out
    assert report["book/good.html"] == [], out
    assert report["index.html"] == [], out  # the redirect lands on the good page
    assert report["file://book/good.html"] == [], out
    assert re.search(r"book/good.html\s+math=2 ", out), out
    assert any(p.startswith("raw TeX") for p in report["book/rawtex.html"]), out
    assert any(p.startswith("MathJax error") for p in report["book/mjerror.html"]), out
    assert any("broken image: ../_images/missing.png" in p for p in report["book/badimg.html"])
    assert any("HTTP 404" in p for p in report["book/badimg.html"]), out
    tb = [p for p in report["book/traceback.html"] if p.startswith("traceback")]
    assert len(tb) == 1 and "ValueError: boom" in tb[0], out
    bad = report["book/badlink.html"]
    assert any("nowhere.html (no such file" in p for p in bad), out
    assert any("no #nope on book/other.html" in p for p in bad), out
    assert any(p.startswith("no Colab button") for p in report["book/nocolab.html"]), out
    assert report["book/nocopy.html"] == [
        "FAIL", "the Colab button opens colab/book/nocopy.ipynb, which is not in the repository "
        "(run `make colab`)"], out
    assert report["book/other.html"] == [], out  # not a notebook: no button needed
    # figures without a real alt text: none, blank, or the file name Jupyter Book writes
    assert report["book/noalt.html"] == [
        "FAIL", "figure without alt text: dot.png (no alt text)",
        "figure without alt text: dot.png (no alt text)",
        "figure without alt text: dot.png (alt is a file name)"], out
    # the page scrolls sideways at both widths, naming the element
    side = report["book/sideways.html"]
    assert any(p.startswith("at 1280 px the page scrolls sideways") and '"too wide"' in p
               for p in side), out
    assert any(p.startswith("at 390 px the page scrolls sideways") for p in side), out
    narrow = report["book/narrow.html"]
    assert narrow[1:] and all(p.startswith("at 390 px") for p in narrow[1:]), out
    assert any("table 2000 px wide" in p for p in report["book/widetable.html"]), out
    wide_math = report["book/widemath.html"]
    assert any(p.startswith("at 1280 px: equation") for p in wide_math), out
    assert any(p.startswith("at 390 px: equation") for p in wide_math), out
    assert any("figure 500 px wide in a 200 px column" in p for p in report["book/widefig.html"]), out
    assert "4 passed, 13 failed" in out, out  # 16 pages over HTTP + 1 from file://
    shots = {p.name for p in (tmp_path / "shots").glob("*.png")}
    assert {"book__good.png", "book__good--math.png", "file--book__good.png",
            "book__good--w1280--equations-01.png", "book__good--w390--equations-01.png",
            "book__other--w390--headings-01.png"} <= shots, sorted(shots)


# ----------------------------------------------------------------------------- teaching page

def _chapters():
    """{notebook stem: (stated minutes or None, [exercise labels])} for book/*.ipynb."""
    out = {}
    for path in sorted((REPO / "book").glob("*.ipynb")):
        text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                         if c.cell_type == "markdown")
        m = re.search(r"Time:\s*about\s+(\d+)\s+minutes", text)
        labels = re.findall(r"\{exercise\}[^\n]*\n:label:\s*(\S+)", text)
        out[path.stem] = (int(m.group(1)) if m else None, labels)
    return out


def test_teaching_page_times_match_the_chapters():
    rows = dict(re.findall(r"^\| \{doc\}`(\w+)` \| (\d+) min \|", (REPO / "book" / "teaching.md")
                           .read_text(), re.M))
    assert rows, "no time table found in book/teaching.md"
    for stem, (minutes, _) in _chapters().items():
        if minutes is not None:
            assert stem in rows, f"book/teaching.md has no time row for {stem} ({minutes} min)"
            assert int(rows[stem]) == minutes, (
                f"book/teaching.md says {stem} takes {rows[stem]} min, the chapter says {minutes}")


def test_teaching_page_sorts_every_exercise():
    teaching = (REPO / "book" / "teaching.md").read_text()
    listed = set(re.findall(r"<(ex-[\w-]+)>`", teaching))
    for stem, (_, labels) in _chapters().items():
        for label in labels:
            assert label in listed, (f"book/teaching.md does not list exercise {label} of {stem}; "
                                     "add it to the 'Exercises for labs' table")


# ----------------------------------------------------------------------------- standalone_check

def test_colab_and_oldest_version_sets_follow_pyproject():
    """The Colab-versions check tests what pyproject.toml promises: its lower bounds, and Colab's
    versions inside the allowed ranges."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version
    standalone = load_tool("standalone_check")
    deps = {Requirement(d).name: Requirement(d).specifier for d in
            tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    for name, pins in (("colab", standalone.COLAB), ("oldest", standalone.OLDEST)):
        got = dict(p.split("==") for p in pins)
        assert set(got) == set(deps) - {"torch"}, (name, sorted(got), sorted(deps))
        for pkg, version in got.items():
            assert deps[pkg].contains(version), f"{name}: {pkg}=={version} is outside {deps[pkg]}"
            if name == "oldest":
                lower = [Version(s.version) for s in deps[pkg] if s.operator == ">="]
                assert lower and Version(version) == lower[0], (
                    f"{pkg}: pyproject.toml allows {deps[pkg]}, the oldest-versions check installs "
                    f"{version}; update OLDEST in tools/standalone_check.py")


# ----------------------------------------------------------------------------- strip_outputs

def test_strip_clears_what_a_run_adds_and_keeps_tags(tmp_path):
    strip_outputs = load_tool("strip_outputs")
    nb = _exercise_notebook()
    nb.cells[2].metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7", "file_extension": ".py"}
    clean = _exercise_notebook()
    clean.cells[2].outputs, clean.cells[2].execution_count = [], None
    clean.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = clean.cells[i]["id"] = f"c{i}"
    nbformat.write(nb, tmp_path / "run.ipynb")
    nbformat.write(clean, tmp_path / "clean.ipynb")
    before_clean = (tmp_path / "clean.ipynb").read_text()
    assert strip_outputs.main([str(tmp_path / "run.ipynb"), str(tmp_path / "clean.ipynb")]) == 0
    assert (tmp_path / "run.ipynb").read_text() == before_clean
    assert (tmp_path / "clean.ipynb").read_text() == before_clean
    assert nbformat.read(tmp_path / "run.ipynb", as_version=4).cells[1].metadata["tags"] == ["remove-cell"]


def test_a_refused_student_edition_leaves_the_previous_one(book_copy):
    shutil.copytree(REPO / "mmoe_annotated", book_copy / "mmoe_annotated")
    dest = book_copy / "student"
    assert make_student.main([str(dest), "--root", str(book_copy)]) == 0
    before = sorted(p.name for p in dest.iterdir())
    path = book_copy / "book" / "05_gates.ipynb"
    nb = nbformat.read(path, as_version=4)
    i = next(k for k, c in enumerate(nb.cells) if "{solution-start}" in c.source)
    nb.cells[i].metadata["tags"] = []
    nbformat.write(nb, path)
    with pytest.raises(SystemExit, match=rf"05_gates.ipynb: cell {i + 1} \(markdown"):
        make_student.main([str(dest), "--root", str(book_copy)])
    assert sorted(p.name for p in dest.iterdir()) == before


def _fake_pip(tmp_path, monkeypatch, standalone):
    """Replace every command of tools/standalone_check.py by a fake pip/venv: the wheelhouse is
    a set of requirement strings; an install with --no-index fails when it lacks one."""
    calls, fetched = [], []

    def run(cmd, check=True, **kw):
        cmd = [str(c) for c in cmd]
        calls.append(cmd)
        out = type("Proc", (), {"returncode": 0, "stdout": "", "stderr": ""})()
        if cmd[3:5] == ["wheel", "-q"] and "--no-deps" in cmd:  # the package's own wheel
            dist = Path(cmd[cmd.index("-w") + 1])
            dist.mkdir(parents=True, exist_ok=True)
            (dist / "mmoe_annotated-0.2.0-py3-none-any.whl").write_bytes(b"")
        elif "freeze" in cmd:
            out.stdout = "torch==2.13.0+cpu\nnumpy==2.4.6\n"
        elif "wheel" in cmd:  # filling the wheelhouse
            house = Path(cmd[cmd.index("-w") + 1])
            reqs = [c for c in cmd[cmd.index("-w") + 4:] if not c.startswith("-")]
            fetched.append([r for r in reqs if not (house / r).exists()])
            for r in reqs:
                (house / r).write_text("")
        elif "install" in cmd and "--no-index" in cmd and "--find-links" in cmd:
            house = Path(cmd[cmd.index("--find-links") + 1])
            reqs = [c for c in cmd[cmd.index("--find-links") + 2:] if not c.startswith("-")]
            if any(not (house / r).exists() for r in reqs):
                out.returncode = 1
        return out

    monkeypatch.setattr(standalone, "run", run)
    return calls, fetched


def test_colab_and_oldest_checks_share_one_wheelhouse(tmp_path, monkeypatch, capsys):
    """Both fresh venvs install from one wheelhouse under _build/ with --no-index; pip fetches
    into it only what it lacks, so torch and the kernel are fetched once, and a second run
    fetches nothing."""
    standalone = load_tool("standalone_check")
    calls, fetched = _fake_pip(tmp_path, monkeypatch, standalone)
    repo = tmp_path / "repo"
    (repo / "mmoe_annotated").mkdir(parents=True)
    (repo / "mmoe_annotated" / "__init__.py").write_text("")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    house = repo / "_build" / "wheelhouse"
    common = ["torch==2.13.0+cpu", *standalone.KERNEL, "nbclient", "nbformat"]

    for versions in ("colab", "oldest", "colab", "oldest", "pinned"):
        standalone.build_env(repo, tmp_path / f"work-{versions}", "python3", versions)
    out = capsys.readouterr().out
    colab, oldest = list(standalone.COLAB), list(standalone.OLDEST)
    assert fetched[:2] == [colab + common, oldest], fetched  # the common part once
    assert len(fetched) == 3 and "torch>=2.2" in fetched[2], "the two checks again: nothing fetched"
    assert out.count("fetched into the wheelhouse") == 3 and out.count("from the wheelhouse") == 2
    installs = [c for c in calls if "install" in c and c[0].startswith(str(tmp_path / "work-"))
                and "--find-links" in c]
    assert len(installs) == 8  # an offline try each run, and again after each fetch
    for cmd in installs + [c for c in calls if c[3:4] == ["wheel"] and "--no-deps" not in c]:
        at = cmd.index("--find-links")
        assert cmd[at + 1] == str(house), cmd
    assert all("--no-index" in c for c in installs)
    # the package itself, as Colab installs it: by URL, from nowhere else
    colab_cells = [c for c in calls if any(a.startswith("mmoe-annotated @ file:") for a in c)]
    assert len(colab_cells) == 4 and not any("--find-links" in c for c in colab_cells)


def test_standalone_check_wheelhouse_option(tmp_path, monkeypatch):
    standalone = load_tool("standalone_check")
    seen = {}
    monkeypatch.setattr(standalone, "build_env", lambda repo, work, python, versions, wheelhouse:
                        seen.update(repo=repo, wheelhouse=wheelhouse) or sys.exit(0))
    nb = tmp_path / "x.ipynb"
    nb.write_text("{}")
    for argv, want in (([], None), (["--wheelhouse", str(tmp_path / "wh")], tmp_path / "wh")):
        with pytest.raises(SystemExit):
            standalone.main([str(nb), "--work", str(tmp_path / "w"), *argv])
        assert seen["wheelhouse"] == want and seen["repo"] == Path(".").resolve()
