"""The package's layering, read from its real import statements: the folders are the book's
stages, each imports only the stages before it, nothing imports in a circle, and no taught module
imports the fast wing. Every ``import`` counts, those inside functions included, since a lazy
import is still a dependency."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import mmoe_annotated as mm

PACKAGE = Path(mm.__file__).parent
ROOT = PACKAGE.parent

#: The stages in the book's order. A module may import its own stage and the stages before it.
#: ``fast`` sits beside the taught stages: it imports them and none of them imports it.
RANK = {"_moved": 0, "runtime": 0, "source": 0, "data": 1, "features": 2, "model": 3, "train": 4,
        "checkpoint": 5, "scale": 6, "fast": 7, "experiments": 8, "serve": 8, "bench": 9}
TAUGHT = {name for name, rank in RANK.items() if rank < RANK["fast"]}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (``from . import x`` counts x when x is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mmoe_annotated")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("mmoe_annotated"):
                target = node.module
            else:
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found |= subs or {target}
    return found & known


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def stage(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's own __init__


def test_every_module_belongs_to_a_known_stage():
    assert {stage(m) for m in modules()} - {None} == set(RANK)


def test_no_module_imports_a_later_stage_or_the_package_root():
    upward = []
    for importer, targets in graph().items():
        here = stage(importer)
        for target in targets:
            there = stage(target)
            if importer == "mmoe_annotated":
                if there == "fast":  # the root loads the wing lazily, by name, never statically
                    upward.append((importer, target))
            elif there is None or RANK[there] > RANK[here]:
                upward.append((importer, target))
    assert upward == []


def test_no_taught_module_imports_the_fast_wing():
    offenders = [(m, t) for m, ts in graph().items() for t in ts
                 if (stage(m) in TAUGHT or m == "mmoe_annotated") and stage(t) == "fast"]
    assert offenders == []
    # the check sees the wing where it is imported: the benchmark uses it
    assert any(stage(t) == "fast" for t in graph()["mmoe_annotated.bench.core"])


def test_no_circles():
    g = graph()
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """A planted upward import and a planted circle are found (the checks can fail)."""
    fake = tmp_path / "mmoe_annotated"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("from ..train import fit\n")
    (fake / "data" / "a.py").write_text("from . import b\n")
    (fake / "data" / "b.py").write_text("from .a import x\n")
    (fake / "train").mkdir()
    (fake / "train" / "__init__.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    g = graph()
    assert "mmoe_annotated.train" in g["mmoe_annotated.data"]
    with pytest.raises(AssertionError):
        test_no_module_imports_a_later_stage_or_the_package_root()
    with pytest.raises(AssertionError):
        test_no_circles()


def test_the_version_comes_from_the_installed_metadata():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert mm.__version__ == importlib.metadata.version("mmoe-annotated") == declared
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(declared)}\b", changelog, re.M), "CHANGELOG.md lacks this version"


def test_importing_the_package_imports_no_later_stage_than_it_lists():
    code = ("import sys, mmoe_annotated; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('mmoe_annotated.')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sorted(["_moved", "runtime", "source", "data", "features", "model",
                                             "train", "checkpoint"]))
