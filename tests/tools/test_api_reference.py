"""The API reference page (book/api.md, tools/api_reference.py): every public name of the
package is on it, with an entry generated from its docstring and a link to the chapter that its
module's docstring names; the page runs no code."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import mmoe_annotated as mm

REPO = Path(__file__).resolve().parents[2]
BOOK = REPO / "book"
PAGE = (BOOK / "api.md").read_text(encoding="utf-8")


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


api = _load_tool("api_reference")


def _fresh_dir() -> list[str]:
    """``dir(mm)`` right after ``import mmoe_annotated as mm``, in a fresh interpreter: in this
    process, any test that imports a stage (``mmoe_annotated.serve``) adds it to the package."""
    out = subprocess.run([sys.executable, "-c", "import mmoe_annotated as mm; print(*dir(mm))"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return out.stdout.split()


FRESH_DIR = _fresh_dir()


def public_names() -> set[str]:
    """What `import mmoe_annotated as mm` offers: ``__all__`` if the package declares one, else
    every public attribute after a fresh import, the ones loaded on first use (``mm.fast``,
    ``mm.export``, ...), and the fast wing's own public functions (``fast.fit``)."""
    names = set(getattr(mm, "__all__", None) or (n for n in FRESH_DIR if not n.startswith("_")))
    names |= set(getattr(mm, "_LAZY", {}))
    fast = importlib.import_module("mmoe_annotated.fast")
    names |= {f"fast.{n}" for n in fast.__all__ if inspect.isfunction(getattr(fast, n))}
    return names


def table_rows() -> dict[str, tuple[str, str]]:
    """name -> (chapter, what) from the page's api-table directive."""
    m = re.search(r"```\{api-table\}\n(.*?)\n```", PAGE, re.S)
    assert m, "book/api.md has no api-table"
    rows = {}
    for line in m.group(1).splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, chapter, *what = line.split(None, 2)
            assert name not in rows, f"mm.{name} is listed twice"
            rows[name] = (chapter, what[0] if what else "")
    return rows


def documented() -> set[str]:
    """Full names the page's autodoc directives document (modules with their members)."""
    out = set()
    for kind, target, members in re.findall(
            r"^\.\. auto(\w+):: (\S+)\n((?:   :[^\n]*\n)*)", PAGE + "\n", re.M):
        out.add(target)
        m = re.search(r":members:(.*)", members)
        if kind == "module" and m:
            module = importlib.import_module(target)
            listed = [n.strip() for n in m.group(1).split(",") if n.strip()]
            out |= {f"{target}.{n}" for n in listed or getattr(module, "__all__", [])}
    return out


def test_every_public_name_is_in_the_table():
    rows = table_rows()
    missing = sorted(public_names() - set(rows))
    assert not missing, f"book/api.md's table lacks {['mm.' + n for n in missing]}"
    unknown = [n for n in rows if n.split(".")[0] not in public_names() and n not in public_names()]
    assert not unknown, f"book/api.md lists names the package does not export: {unknown}"


def test_every_name_has_an_entry_generated_from_its_docstring():
    docs = documented()
    lacking = []
    for name in table_rows():
        obj = api.public_object(name)
        target = api.documented_target(name, obj)
        if target not in docs and f"mmoe_annotated.{name}" not in docs:
            lacking.append(f"mm.{name} (expected `.. auto...:: {target}`)")
    assert not lacking, f"book/api.md has no entry for {lacking}"


# ----------------------------------------------------------------------------- chapters

def _titles() -> dict[str, str]:
    """docname -> the page's title, for the book's pages."""
    import nbformat

    out = {}
    for path in sorted(BOOK.glob("*.ipynb")) + sorted(BOOK.glob("*.md")):
        if path.suffix == ".ipynb":
            text = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                             if c.cell_type == "markdown")
        else:
            text = path.read_text(encoding="utf-8")
        m = re.search(r"^# (.+)$", text, re.M)
        out[path.stem] = m.group(1).strip() if m else ""
    return out


TITLES = _titles()


def chapters_named(text: str) -> set[str]:
    """The book's pages a docstring names: ``book/NN_x.ipynb``, "chapter 7", "ch. 4-6, 10",
    "chapters 5 and 10", the appendix "Performance", the preface, and the chapter column of a
    stage's module table (a row ending in ``7, 10``)."""
    numbers = {int(p.stem[:2]): p.stem for p in BOOK.glob("[0-9][0-9]_*.ipynb")}
    numbers[0] = "00_preface"
    found = set(re.findall(r"book/(\w+)\.(?:ipynb|md)", text))
    groups = re.findall(r"\b(?:chapters?|ch\.)\s+((?:\d+(?:\s*[-–]\s*\d+)?(?:\s*(?:,|and)\s*)?)+)",
                        text, re.I)
    groups += re.findall(r"^``\w+``\s.*?\s((?:\d+)(?:,\s*\d+)*)\s*$", text, re.M)  # tables
    for group in groups:
        for a, b in re.findall(r"(\d+)(?:\s*[-–]\s*(\d+))?", group):
            found |= {numbers[n] for n in range(int(a), int(b or a) + 1) if n in numbers}
    for title in re.findall(r'appendix\s+"([^"]+)"', text, re.I):
        found |= {doc for doc, t in TITLES.items() if doc.startswith("appendix")
                  and (title.lower() in t.lower() or doc.endswith(title.lower().replace(" ", "_")))}
    if re.search(r"\bthe preface\b", text, re.I):
        found.add("00_preface")
    return found


def test_chapters_named_reads_every_form():
    assert chapters_named("Explained in chapter 2, \"The data\" (``book/02_data.ipynb``).") == {"02_data"}
    assert chapters_named("files read strictly (ch. 2, 8, 9); the model (ch. 1, 4-6, 10)") == {
        "01_paper", "02_data", "04_experts", "05_gates", "06_towers", "08_reproducing_paper",
        "09_census", "10_beyond_mmoe"}
    assert chapters_named('explained in the appendix "Performance".') == {"appendix_performance"}
    assert chapters_named("``losses``        per-task losses             7, 10") == {
        "07_training", "10_beyond_mmoe"}
    assert chapters_named("Used by every chapter (the preface explains it).") == {"00_preface"}


def defining_module(name: str, obj) -> types.ModuleType:
    """The module whose source defines ``mm.<name>`` (a constant: the module that assigns it)."""
    if isinstance(obj, types.ModuleType):
        return obj
    if getattr(obj, "__module__", None) and (inspect.isclass(obj) or inspect.isroutine(obj)):
        return sys.modules[obj.__module__]
    attr = name.rsplit(".", 1)[-1]
    for mod_name, module in sorted(sys.modules.items()):
        if not mod_name.startswith("mmoe_annotated") or vars(module).get(attr, object()) is not obj:
            continue
        try:
            tree = ast.parse(inspect.getsource(module))
        except (OSError, TypeError):
            continue
        for node in tree.body:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
            names = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if attr in names:
                return module
    raise AssertionError(f"no module of the package assigns {name}")


def test_each_name_links_the_chapter_its_docstring_names():
    wrong = []
    for name, (chapter, _) in table_rows().items():
        obj = api.public_object(name)
        module = defining_module(name, obj)
        text = (module.__doc__ or "") + "\n" + (inspect.getdoc(obj) or "" if callable(obj) else "")
        named = chapters_named(text)
        if chapter == "-":  # allowed only while the page the docstring names is not in the book
            present = {d for d in named if (BOOK / f"{d}.ipynb").exists() or (BOOK / f"{d}.md").exists()}
            if present or not re.search(r"book/\w+\.ipynb|appendix\s+\"", text):
                wrong.append(f"mm.{name}: '-' but its docstring names {sorted(present) or 'no page'}")
            continue
        if not ((BOOK / f"{chapter}.ipynb").exists() or (BOOK / f"{chapter}.md").exists()):
            wrong.append(f"mm.{name}: {chapter} is not a page of the book")
        elif chapter not in named:
            wrong.append(f"mm.{name}: links {chapter}; {module.__name__}'s docstring names {sorted(named)}")
    assert not wrong, "book/api.md:\n" + "\n".join(wrong)


# ----------------------------------------------------------------------------- the page itself

def test_the_page_runs_no_code_and_is_in_its_own_part():
    assert "{code-cell}" not in PAGE and "kernelspec" not in PAGE and "jupytext" not in PAGE
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    last = toc["parts"][-1]
    assert last["caption"] == "API reference" and [c["file"] for c in last["chapters"]] == ["book/api"]
    assert not last.get("numbered")


def test_table_cells_come_from_the_package():
    assert api.signature("fit", mm.fit).startswith("mm.fit(model, train, config=None, *, encoder=None")
    assert api.signature("PAD", mm.PAD) == "mm.PAD = 0"
    assert api.signature("MODELS", mm.MODELS).startswith("mm.MODELS = {'mmoe': MMoE, ")
    assert api.signature("stats", mm.stats) == "mm.stats"
    assert api.summary(mm.COLUMNS, "COLUMNS") == "The twelve ByteRec columns, in file order."
    assert api.summary(mm.make_byterec) == "Generate a synthetic dataset in the ByteRec format."
    assert api.documented_target("stats", mm.stats) == "mmoe_annotated.train.stats"
    assert api.documented_target("fast.fit", mm.fast.fit) == "mmoe_annotated.fast.fit"


def test_references_resolve_to_the_object_they_name():
    assert api.resolve("mmoe_annotated.train.loop.TrainConfig") is mm.TrainConfig
    assert api.resolve("pd.DataFrame", "mmoe_annotated.data.byterec").__name__ == "DataFrame"
    assert api.resolve("rowwise_mix", "mmoe_annotated.model.gates").__name__ == "rowwise_mix"
    assert api.resolve("no_such_name", "mmoe_annotated.model.gates") is None
    assert api.resolve("mmoe_annotated.train.nothing") is None
    assert api._same(mm.fit, api.resolve("mmoe_annotated.train.loop.fit"))
    assert not api._same(mm.PAD, 0)  # values are never linked by identity
