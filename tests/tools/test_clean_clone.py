"""A fresh clone with no sibling folders runs every test CI runs.

Two guards keep it so: nothing in tests/, book/, tools/, .ci/ or the Makefile names a path
outside the repository (the data the tests need ships in the package, e.g.
``mm.load_byterec_sample()``), and the package-test run fails when a test skips for a reason
that ``ALLOWED_SKIPS`` in tests/conftest.py does not list (a missing file would otherwise pass
as a quiet skip).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests import conftest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "book", "tools", ".ci", "Makefile")
THIS = Path(__file__).resolve()
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", "_build", ".pytest_cache", ".hypothesis"}

# Paths that leave the repository: a parent folder ("../", or ".." as a path component), a
# machine's own folders (/work/, /home/, /root/, /Users/, "~/"), a sibling checkout's shared
# data. A comparison with ".." (a traversal check) is no path. This file, which spells them
# out, is not scanned.
OUTSIDE = re.compile(r"(?<!\.)\.\.[/]|[\"']\.\.[\"']\s*[,)]|/\s*[\"']\.\.[\"']"
                     r"|(?<![\w.~-])/(?:work|home|root|Users)[/]|[\"']~[/]|(?<![\w-])shared[/]")
# In prose (Markdown files and cells) "shared/task-specific" is a word: there a shared folder
# is one written as a path (after a slash, a quote, a backtick or a parenthesis).
OUTSIDE_PROSE = re.compile(OUTSIDE.pattern.replace(r"(?<![\w-])shared", r"(?<=[/\"'`(])shared"))
# Path(__file__)[.resolve()][.parent...][.parents[N]]: how many folders up from the file.
FILE_UP = re.compile(r"Path\(__file__\)(?:\.resolve\(\)|\.absolute\(\))?((?:\.parent\b)*)"
                     r"(?:\.parents\[(\d+)\])?")

# Matches that are not paths of this machine, each with why. (file, text on the line)
ALLOWED = {
    ("tests/book/test_book.py", "OUTSIDE_PATHS = re.compile("):
        "the notebooks' own outside-path check",
    ("tests/tools/test_tools.py", "extensions/../../../../evil.js"):
        "a tarball member that tries to escape; the test checks it is dropped",
    ("tests/tools/test_tools.py", '"../_images/'):
        "a relative link between pages of the temporary site the browser check opens",
    ("tests/tools/test_tools.py", "'../_images/"):
        "a relative link between pages of the temporary site the browser check opens",
    ("tests/tools/test_tools.py", 'prefix="../"'):
        "a relative link between pages of the temporary site the browser check opens",
    ("tests/tools/test_tools.py", "broken image: ../_images/missing.png"):
        "the browser check's report of that link",
    ("tools/build_check.py", "an absolute path of the machine that built the book"):
        "the build check's description of the paths it fails on",
    ("tools/build_check.py", "/root/, site-packages, the repository's own folder"):
        "the build check's description of the paths it fails on",
    ("tests/tools/test_build_check.py", "Files go to /home/me/data."):
        "a planted defect: a page that names a home folder",
    ("tests/tools/test_build_check.py", 'PosixPath("/root/.cache")'):
        "a planted defect: a signature that shows the build machine's cache folder",
}


def _files():
    for top in SCANNED:
        path = REPO / top
        if path.is_file():
            yield path
            continue
        for folder, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
            for name in sorted(names):
                if not name.endswith((".pyc", ".png", ".jpg", ".gz", ".whl")) and \
                        (Path(folder) / name).resolve() != THIS:
                    yield Path(folder) / name


def _lines(path):
    """(where, line, prose) for each line of a text file; a notebook's cell sources only (its
    outputs are a run's, and base64 images hold any letters)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return
    if path.suffix == ".ipynb":
        for i, cell in enumerate(json.loads(text)["cells"], start=1):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for j, line in enumerate(source.splitlines(), start=1):
                yield f"cell {i} line {j}", line, cell["cell_type"] == "markdown"
    else:
        for j, line in enumerate(text.splitlines(), start=1):
            yield f"line {j}", line, path.suffix == ".md"


def outside_paths(files=None, root=REPO):
    """'file, where: line' for each line that reaches outside the repository."""
    hits = []
    for path in files if files is not None else _files():
        rel = path.relative_to(root).as_posix()
        depth = len(path.relative_to(root).parts)  # the root is the file's depth-th ancestor
        for where, line, prose in _lines(path):
            bad = [m.group(0) for m in (OUTSIDE_PROSE if prose else OUTSIDE).finditer(line)]
            for m in FILE_UP.finditer(line):
                up = m.group(1).count(".parent") + (int(m.group(2)) + 1 if m.group(2) else 0)
                if up > depth:
                    bad.append(f"{m.group(0)} (folder {up} up, the root is {depth} up)")
            if bad and not any(rel == f and text in line for f, text in ALLOWED):
                hits.append(f"{rel}, {where}: {', '.join(bad)}: {line.strip()[:160]}")
    return hits


def test_nothing_reads_outside_the_repository():
    hits = outside_paths()
    assert not hits, ("paths outside the repository (a clean clone has no sibling folders; ship "
                      "what a test needs in the package or the repository):\n" + "\n".join(hits))


def test_the_outside_path_check_catches_each_kind(tmp_path):
    (tmp_path / "tests" / "data").mkdir(parents=True)
    sample = tmp_path / "tests" / "data" / "test_x.py"
    dots, sep = "..", "/"
    bad = [f'open("{dots}{sep}shared{sep}data{sep}x.txt")', f'Path("{sep}work{sep}main{sep}x")',
           f'"{sep}home{sep}me{sep}data.csv"', f'Path("~{sep}x").expanduser()',
           f'os.path.join(ROOT, "{dots}", "x") or ROOT / "{dots}"',
           "ROOT = Path(__file__).resolve().parents[3]",
           "ROOT = Path(__file__).parent.parent.parent.parent"]
    good = ["ROOT = Path(__file__).resolve().parents[2]", "HERE = Path(__file__).parent",
            "# Colab links like .../blob/main/book", 'Path("results") / "a.csv"',
            "mm.load_byterec_sample()", "shared_experts = 2", 'x = "shared experts"',
            f'if part == "{dots}" or "{dots}" in name.split("{sep}"):']
    sample.write_text("\n".join(bad + good) + "\n")
    nb = tmp_path / "book" / "01.ipynb"
    nb.parent.mkdir()
    nb.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["Under `~/.cache` by default; shared/task experts.\n"]},
        {"cell_type": "code", "source": [f'df = pd.read_csv("{dots}{sep}data.csv")\n'],
         "outputs": [{"output_type": "stream", "text": f"{sep}work{sep}main\n"}]}]}))
    md = tmp_path / "book" / "notes.md"
    md.write_text(f"The shared/task-specific split.\n```{{literalinclude}} /data{sep}shared{sep}x.py\n```\n")
    hits = outside_paths([sample, nb, md], root=tmp_path)
    assert [h.split(": ")[0] for h in hits] == [f"tests/data/test_x.py, line {i}" for i in range(1, 8)] + [
        "book/01.ipynb, cell 2 line 1", "book/notes.md, line 2"], hits


def test_an_unexpected_skip_fails_the_test_run(tmp_path):
    """Under pytest-xdist, as `make test-package` runs: allowed skips pass, others fail the run
    with their reasons listed."""
    (tmp_path / "test_a.py").write_text(textwrap.dedent("""\
        import pytest
        pytest.importorskip("no_such_module_here", reason="needs a package nobody installed")
        """))
    (tmp_path / "test_b.py").write_text(textwrap.dedent("""\
        import pytest

        @pytest.mark.skipif(True, reason="needs a CUDA device")
        def test_gpu():
            pass

        def test_sample():
            pytest.skip("the sample file is not there")

        @pytest.mark.xfail(reason="known")
        def test_known():
            assert False

        def test_fine():
            pass
        """))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(REPO)
    # tests/conftest.py as a plugin, one xdist worker: the controller must see the workers' skips
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                          "-n", "1", "-q", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         env=env, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "1 passed, 3 skipped, 1 xfailed" in out, out
    listed = out.split("unexpected skips")[1]
    assert "test_a.py: needs a package nobody installed" in listed, out
    assert "test_b.py::test_sample: the sample file is not there" in listed, out
    assert "test_gpu" not in listed and "test_known" not in listed, out


def test_allowed_skip_reasons_are_the_ones_the_suite_uses():
    assert not conftest.unexpected_skips({
        "a": "needs a CUDA device", "b": "CUDA is present here", "c": "CUDA is available here",
        "d": "needs Debian's Chromium (`make chromium`)", "e": "needs the fetched MathJax (`make mathjax`)"})
    assert list(conftest.unexpected_skips({
        "x": "running as root without setpriv to drop privileges",
        "y": "parity tests need deepctr-torch==0.3.0 (requirements-test.txt)"})) == ["x", "y"]
