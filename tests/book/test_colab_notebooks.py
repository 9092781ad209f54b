"""The notebooks Colab opens: current with book/ and _config.yml, and readable in plain Markdown.

The HTML book renders MyST; Jupyter and Colab render CommonMark with `$` math. The Colab
buttons open `<repository.path_to_book>/<chapter>.ipynb`, written by `make colab`
(tools/colab_notebooks.py) from the chapters.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


colab = load_tool("colab_notebooks")
repoint = load_tool("repoint")
browser_check = load_tool("browser_check")
SETTINGS = colab.load_settings(REPO)
NOTEBOOK_PAGES = [d for d, _ in colab.toc_documents(REPO) if (REPO / f"{d}.ipynb").is_file()]
COMMONMARK = MarkdownIt("commonmark")

MYST_LEFTOVERS = [
    (re.compile(r"^\s*:[\w-]+:", re.M), "a directive option line (:label: ...)"),
    (re.compile(r"^\s*\([\w.:-]+\)=\s*$", re.M), "a MyST target ((label)=)"),
    (re.compile(r"^\s*:::", re.M), "a colon fence"),
    (re.compile(r"\{(exercise|solution|solution-start|solution-end|note|warning|tip|admonition)\}"),
     "a directive name"),
]


def rendered_problems(markdown):
    """What a reader of `markdown` in Jupyter would see as markup, not as text."""
    html = COMMONMARK.render(markdown)
    problems = []
    if re.search(r'<code class="language-\{', html):
        problems.append("a directive shown as a code block")
    if re.search(r"\{[\w:-]+\}(<code>|`)", re.sub(r"<pre>.*?</pre>", " ", html, flags=re.S)):
        problems.append("a MyST role ({name}`...`)")
    # Prose only: drop code blocks and spans and the tags; math stays for the TeX check.
    prose_html = re.sub(r"<pre>.*?</pre>|<code>.*?</code>", " ", html, flags=re.S)
    prose = re.sub(r"<[^>]+>", "", prose_html)
    for pattern, what in MYST_LEFTOVERS:
        if pattern.search(prose):
            problems.append(what)
    # Jupyter's MathJax typesets $$...$$ and $...$, the latter across line breaks within a
    # paragraph, never across paragraphs, list items, headings or table cells.
    no_math = re.sub(r"\$\$.+?\$\$", " ", prose_html, flags=re.S)
    no_math = re.sub(r"\$(?:(?!</(?:p|li|h\d|blockquote|td|th)>)[^$])+?\$", " ", no_math)
    tex = re.search(r"\\[A-Za-z]+", re.sub(r"<[^>]+>", "", no_math))
    if tex:
        problems.append(f"raw TeX outside $...$: {tex.group(0)}")
    return problems


# ----------------------------------------------------------------------------- the real book

def test_colab_notebooks_are_current():
    stale = colab.stale(REPO)
    assert not stale, (f"{SETTINGS.out}/ is out of date with book/ or _config.yml ({', '.join(stale[:5])}): "
                       f"run `make colab` and commit {SETTINGS.out}/")


def test_colab_buttons_open_the_generated_notebooks():
    """The URL sphinx-book-theme builds for each notebook page points at a generated file."""
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    settings = browser_check.book_settings(REPO)
    assert config["repository"]["path_to_book"] == SETTINGS.out
    assert NOTEBOOK_PAGES
    for doc in NOTEBOOK_PAGES:
        url = browser_check.colab_link(settings, f"{doc}.ipynb")
        assert url == SETTINGS.colab_link(doc)
        prefix = f"/blob/{SETTINGS.ref}/"
        target = REPO / url.split(prefix, 1)[1]
        assert target.is_file(), f"the Colab button of {doc} opens {target}, which `make colab` did not write"


def test_direct_colab_links_open_generated_notebooks():
    """Colab links written out in the docs open a notebook of the configured branch that exists."""
    pattern = re.compile(r"colab\.research\.google\.com/github/" + re.escape(SETTINGS.owner_repo)
                         + r"/blob/([^/\s]+)/([^\s`)\]>\"']+)")
    found = 0
    for path in [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "book").glob("*.md"))]:
        for ref, target in pattern.findall(path.read_text()):
            found += 1
            assert ref == SETTINGS.ref, f"{path.name}: a Colab link opens {ref}, _config.yml says {SETTINGS.ref}"
            assert target.startswith(f"{SETTINGS.out}/") and (REPO / target).is_file(), \
                f"{path.name}: a Colab link opens {target}, not a notebook `make colab` wrote"
    assert found, "README.md shows a direct Colab link"


@pytest.mark.parametrize("doc", NOTEBOOK_PAGES)
def test_colab_notebook_renders_in_plain_commonmark(doc):
    nb = nbformat.read(REPO / SETTINGS.out / f"{doc}.ipynb", as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            problems = rendered_problems(cell.source)
            assert not problems, f"{SETTINGS.out}/{doc}.ipynb cell {i}: {problems}\n{cell.source[:300]}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source == colab.install_cell_source(SETTINGS)
    assert f"git+{SETTINGS.url}@{SETTINGS.ref}" in code[0].source
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.parametrize("doc", NOTEBOOK_PAGES)
def test_colab_exercises_numbered_and_solutions_follow(doc):
    source = nbformat.read(REPO / f"{doc}.ipynb", as_version=4)
    labels = re.findall(r"\{exercise\}[^\n]*\n(?:[^\n]*\n)*?:label:\s*(\S+)",
                        "\n".join(c.source for c in source.cells if c.cell_type == "markdown"))
    nb = nbformat.read(REPO / SETTINGS.out / f"{doc}.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    numbers = re.findall(r"^#### Exercise (\S+) — .+$", text, re.M)
    assert len(numbers) == len(labels), f"{doc}: {len(labels)} exercises, {len(numbers)} numbered headings"
    assert all(re.fullmatch(r"\d+(\.\d+)?", n) for n in numbers), numbers
    solutions = re.findall(r"^#### Solution to Exercise (\S+)$", text, re.M)
    assert set(solutions) <= set(numbers)


def test_every_install_cell_uses_the_configured_repository_and_ref():
    """One place, _config.yml, sets the repository and the branch or tag of every install."""
    want = f"{SETTINGS.url}@{SETTINGS.ref}"
    for path in sorted((REPO / "book").glob("*.ipynb")) + sorted((REPO / SETTINGS.out).rglob("*.ipynb")):
        got = repoint.install_urls(nbformat.read(path, as_version=4))
        assert got == [want], (f"{path.relative_to(REPO)} installs {got}, _config.yml says {want}: "
                               f"run `make pin REF={SETTINGS.ref}` (rewrites every install cell and colab/)")


def test_a_release_tag_is_the_package_version():
    """Pinned to a release (`make pin REF=v...`), the tag must be the one of this version."""
    version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)[1]
    if re.fullmatch(r"v?\d+(\.\d+)+\S*", SETTINGS.ref):
        assert SETTINGS.ref == f"v{version}", (
            f"_config.yml pins {SETTINGS.ref}, but pyproject.toml's version is {version}")


def test_plain_commonmark_check_catches_myst():
    """Each construct the HTML book renders but Jupyter does not is caught."""
    for bad in ["```{exercise} T\n:label: ex-a\nDo it.\n```",
                "See {cite}`ma2018mmoe`.", "(sec-x)=\n# X", ":::{note}\nx\n:::",
                "The sum \\sum_i g_i is raw.", "{ref}`ex-a`",
                "A $x$ and a \\alpha.\n\nNo $y\n\nacross \\beta$ paragraphs."]:
        assert rendered_problems(bad), bad
    ok = ("#### Exercise 5.1 — Gates\n\nThe $f^k(x) = \\sum_i g^k(x)_i f_i(x)$ mix,\n\n"
          "$$\n\\operatorname{softmax}(W x)\n$$\n\n`{cite}` in code is fine, and so is\n\n"
          "inline math $a \\times\nb_1 + c_2$ over a line break, and\n\n"
          "```python\nx = r\"\\alpha\"\n```")
    assert rendered_problems(ok) == []


# ----------------------------------------------------------------------------- the converter

def _mini_book(tmp_path, cells_by_doc, parts):
    (tmp_path / "book").mkdir()
    (tmp_path / "_config.yml").write_text(
        "repository:\n  url: https://github.com/o/r\n  path_to_book: colab\n  branch: v1.2.3\n"
        "launch_buttons:\n  colab_url: https://colab.research.google.com\n")
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(
        {"format": "jb-book", "root": "book/00_index", "parts": parts}))
    (tmp_path / "book" / "00_index.md").write_text("# Index\n")
    (tmp_path / "book" / "references.bib").write_text(
        "@article{a2020,\n  author = {Ann Alpha and Bob Beta},\n  title = {One},\n"
        "  journal = {J},\n  year = {2020}\n}\n"
        "@misc{c2021,\n  author = {Carl Gamma and Dora Delta and Eve Epsilon},\n"
        "  title = {Two},\n  year = {2021}\n}\n")
    for doc, cells in cells_by_doc.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.cells = [nbformat.v4.new_markdown_cell(f"# {doc.title()}"),
                    nbformat.v4.new_code_cell(
                        'import sys\nif "google.colab" in sys.modules:\n'
                        '    %pip install -q "mmoe-annotated @ git+https://github.com/old/url"')]
        nb.cells += [nbformat.v4.new_markdown_cell(c) for c in cells]
        for j, c in enumerate(nb.cells):
            c["id"] = f"c{j}"
        nbformat.write(nb, tmp_path / "book" / f"{doc}.ipynb")


def test_converter_numbers_exercises_like_sphinx_numfig(tmp_path):
    ex = "```{{exercise}} {t}\n:label: {l}\n\nBody of {t}.\n```"
    _mini_book(tmp_path, {
        "one": [ex.format(t="A", l="ex-a"), ex.format(t="B", l="ex-b")],
        "two": [ex.format(t="C", l="ex-c") + "\n\nSee {ref}`ex-a` and {numref}`ex-d`."],
        "extra": [ex.format(t="D", l="ex-d"),
                  "```{solution-start} ex-d\n:class: dropdown\n```", "```{solution-end}\n```"],
        "more": [ex.format(t="E", l="ex-e")]},
        [{"caption": "Core", "numbered": True,
          "chapters": [{"file": "book/one"}, {"file": "book/two"}]},
         {"caption": "Beyond", "chapters": [{"file": "book/extra"}, {"file": "book/more"}]}])
    written = colab.write(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "colab/book/one.ipynb", "colab/book/two.ipynb", "colab/book/extra.ipynb", "colab/book/more.ipynb"]
    md = {p.stem: [c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "markdown"]
          for p in written}
    assert md["one"][1] == "#### Exercise 1.1 — A\n\nBody of A."
    assert md["one"][2].startswith("#### Exercise 1.2 — B")
    assert md["two"][1] == "#### Exercise 2.1 — C\n\nBody of C.\n\nSee Exercise 1.1 and Exercise 1."
    # unnumbered parts share one running count, as in the HTML book
    assert md["extra"][1].startswith("#### Exercise 1 — D") and md["more"][1].startswith("#### Exercise 2 — E")
    assert md["extra"][2] == "#### Solution to Exercise 1"
    assert len(md["extra"]) == 3, "the solution-end marker leaves no empty cell"
    code = [c for c in nbformat.read(written[0], as_version=4).cells if c.cell_type == "code"]
    assert code[0].source.endswith('"mmoe-annotated @ git+https://github.com/o/r@v1.2.3"')
    assert colab.stale(tmp_path) == []
    (tmp_path / "colab" / "book" / "one.ipynb").write_text("{}")
    assert colab.stale(tmp_path) == ["colab/book/one.ipynb"]


def test_converter_citations_admonitions_links_and_math(tmp_path):
    _mini_book(tmp_path, {"one": [
        "(sec-x)=\n## Section\n\nAs {cite}`a2020` and {cite:t}`c2021` show, {cite}`a2020,c2021`.",
        "```{note}\nA note with $x^2$.\n```",
        "```{admonition} Careful\n:class: warning\nTwo **lines**\nhere.\n```",
        "```{math}\n:label: eq-one\n\\sum_i x_i\n```\n\n$$ (eq-two)\ny\n$$",
        "See {doc}`two`, {ref}`the section <sec-x>` and `{cite}` in code.\n\n```python\n{cite}`kept`\n```"],
        "two": []},
        [{"caption": "Core", "numbered": True, "chapters": [{"file": "book/one"}, {"file": "book/two"}]}])
    colab.write(tmp_path)
    nb = nbformat.read(tmp_path / "colab" / "book" / "one.ipynb", as_version=4)
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert md[1] == ("## Section\n\nAs [Alpha and Beta, 2020] and Gamma et al. [2021] show, "
                     "[Alpha and Beta, 2020; Gamma et al., 2021].")
    assert md[2] == "> **Note**\n>\n> A note with $x^2$."
    assert md[3] == "> **Careful**\n>\n> Two **lines**\n> here."
    assert md[4] == "$$\n\\sum_i x_i\n$$\n\n$$\ny\n$$"
    assert md[5] == ("See [Two](https://colab.research.google.com/github/o/r/blob/v1.2.3/colab/book/two.ipynb), "
                     "the section and `{cite}` in code.\n\n```python\n{cite}`kept`\n```")
    assert md[-1].startswith("## References\n\n- **[Alpha and Beta, 2020]** Ann Alpha and Bob Beta. One.")
    assert "- **[Gamma et al., 2021]** Carl Gamma, Dora Delta, and Eve Epsilon. Two." in md[-1]
    for text in md:
        assert rendered_problems(text) == [], text


def test_converter_refuses_what_it_cannot_translate(tmp_path):
    _mini_book(tmp_path, {"one": ["```{tab-set}\nx\n```"]},
               [{"caption": "Core", "chapters": [{"file": "book/one"}]}])
    with pytest.raises(colab.ConversionError, match=r"book/one.ipynb, cell 2: directive \{tab-set\}"):
        colab.write(tmp_path)
    _mini_book_cells = tmp_path / "book" / "one.ipynb"
    nb = nbformat.read(_mini_book_cells, as_version=4)
    nb.cells[2].source = "Cited {cite}`nokey`."
    nbformat.write(nb, _mini_book_cells)
    with pytest.raises(colab.ConversionError, match="'nokey' is not in book/references.bib"):
        colab.write(tmp_path)
    nb.cells[2].source = "Glossary {term}`x` and {unknownrole}`y`."
    nbformat.write(nb, _mini_book_cells)
    with pytest.raises(colab.ConversionError, match=r"role \{unknownrole\}"):
        colab.write(tmp_path)


def test_check_cli_names_the_command(tmp_path, capsys):
    _mini_book(tmp_path, {"one": ["Text."]}, [{"caption": "Core", "chapters": [{"file": "book/one"}]}])
    assert colab.main(["--root", str(tmp_path), "--check"]) == 1
    assert "run `make colab`" in capsys.readouterr().err
    assert colab.main(["--root", str(tmp_path)]) == 0
    assert colab.main(["--root", str(tmp_path), "--check"]) == 0


def test_check_html_compares_the_built_book_with_the_notebooks(tmp_path):
    ex = "```{{exercise}} {t}\n:label: {l}\n\nBody.\n```"
    _mini_book(tmp_path, {"one": [ex.format(t="It's `A`", l="ex-a"), ex.format(t="B", l="ex-b")]},
               [{"caption": "Core", "numbered": True, "chapters": [{"file": "book/one"}]}])
    colab.write(tmp_path)
    page = tmp_path / "html" / "book" / "one.html"
    page.parent.mkdir(parents=True)
    title = ('<p class="admonition-title"><span class="caption-number">Exercise {n} </span> '
             '({t})</p>')
    page.write_text(title.format(n="1.1", t="It\u2019s <code>A</code>") + title.format(n="1.2", t="B"))
    assert colab.check_html(tmp_path, tmp_path / "html") == []
    page.write_text(title.format(n="1", t="It\u2019s A") + title.format(n="2", t="B"))
    problems = colab.check_html(tmp_path, tmp_path / "html")
    assert len(problems) == 1 and "the HTML book shows [('1', \"It's A\"), ('2', 'B')]" in problems[0]
