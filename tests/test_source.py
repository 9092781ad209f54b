"""mm.show_source wraps long lines for the page without changing what the code means."""
import ast
import importlib
import inspect
import pkgutil
import re

import mmoe_annotated as mm
from mmoe_annotated.source import WIDTH, wrap_source


def _normalised(tree: ast.AST) -> str:
    # Docstrings are reflowed and long literals split into adjacent ones: compare strings by words.
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = re.sub(r"\s+", " ", node.value).strip()
    return ast.dump(tree)


def _modules():
    for info in pkgutil.walk_packages(mm.__path__, "mmoe_annotated."):
        yield importlib.import_module(info.name)


def test_wrapped_source_is_the_same_program():
    long_before = long_after = 0
    for module in _modules():
        source = inspect.getsource(module)
        wrapped = wrap_source(source)
        assert _normalised(ast.parse(wrapped)) == _normalised(ast.parse(source)), module.__name__
        long_before += sum(len(line) > WIDTH for line in source.splitlines())
        long_after += sum(len(line) > WIDTH for line in wrapped.splitlines())
    assert long_after < 0.1 * long_before, (long_before, long_after)


def test_show_source_wraps_and_can_show_lines_as_they_are():
    text = mm.show_source(mm.load_byterec, width=None).data
    assert max(map(len, text.splitlines())) > WIDTH
    wrapped = mm.show_source(mm.load_byterec).data.splitlines()
    # Outside brackets a line cannot break without changing the code: those few stay long.
    assert sum(len(line) > WIDTH for line in wrapped) <= 2
    assert wrap_source("x = 1") == "x = 1"
