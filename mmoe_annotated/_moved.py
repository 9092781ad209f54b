"""The module paths of release 0.1, kept for one release: each warns and hands over its new home.

Version 0.2 arranged the package in the book's stages (``CHANGELOG.md`` lists every move). Code
written for 0.1 keeps working: ``import mmoe_annotated.ple``, ``mm.losses.GradNorm`` and
``python -m mmoe_annotated.distributed`` still run, each with a ``DeprecationWarning`` that names
the new path, and the old name is the *same* module object as the new one (so patching one
patches the other). Release 0.3 removes them.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

__all__ = ["MOVED", "install", "moved_attribute", "stage_getattr"]

PACKAGE = "mmoe_annotated"

#: Old module (under ``mmoe_annotated.``) -> its new path. ``data``, ``features``, ``model``,
#: ``train`` and ``checkpoint`` are stage packages now and import as before without a warning;
#: the names they no longer list are looked up by :func:`stage_getattr`.
MOVED = {
    "schema": "data.schema", "reader": "data.reader", "parse": "data.parse",
    "example_data": "data.example", "census": "data.census", "synthetic": "data.synthetic",
    "encoders": "features.encoders", "inputs": "features.inputs",
    "experts": "model.experts", "gates": "model.gates", "towers": "model.towers",
    "ple": "model.ple", "health": "model.health",
    "dataset": "train.dataset", "losses": "train.losses", "inference": "train.inference",
    "inspect": "train.inspect", "safe_files": "checkpoint.files",
    "stream": "scale.stream", "distributed": "scale.distributed",
}


def _warn(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(f"{old} moved to {new} in mmoe_annotated 0.2; the old path goes in 0.3",
                  DeprecationWarning, stacklevel=stacklevel)


class _Alias(importlib.abc.Loader):
    """Loads an old module path as its new module, after the warning."""

    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        _warn(self.old, self.new, stacklevel=3)  # importlib frames do not count
        return importlib.import_module(self.new)

    def exec_module(self, module) -> None:
        pass  # the new module ran when it was imported

    def get_code(self, fullname):
        """What ``python -m OLD`` runs: the new module, as ``__main__``, after the warning."""
        source = (f"import runpy, warnings\n"
                  f"warnings.warn({self.old!r} + ' moved to ' + {self.new!r} + ' in mmoe_annotated 0.2; "
                  f"run python -m ' + {self.new!r} + ' (the old path goes in 0.3)', DeprecationWarning)\n"
                  f"runpy.run_module({self.new!r}, run_name='__main__', alter_sys=True)\n")
        return compile(source, f"<{self.old}: moved to {self.new}>", "exec")

    def is_package(self, fullname) -> bool:
        return False


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the old module paths of :data:`MOVED`, and only those."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != PACKAGE or name not in MOVED:
            return None
        new = f"{PACKAGE}.{MOVED[name]}"
        return importlib.machinery.ModuleSpec(fullname, _Alias(fullname, new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``mmoe_annotated/__init__.py`` calls it)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


def moved_attribute(name: str):
    """``mm.<old module>``: the new module, with the warning; ``None`` if ``name`` never was one."""
    if name not in MOVED:
        return None
    _warn(f"{PACKAGE}.{name}", f"{PACKAGE}.{MOVED[name]}", stacklevel=4)
    module = importlib.import_module(f"{PACKAGE}.{MOVED[name]}")
    setattr(sys.modules[PACKAGE], name, module)  # warned once: `from mm import x` looks twice
    return module


def stage_getattr(stage: str, homes: tuple[str, ...]):
    """A module ``__getattr__`` for a stage package that took over an old module's name: a name
    that module held and the stage no longer lists is looked up in ``homes`` (its new modules,
    in order), with the warning."""

    def __getattr__(name: str):
        if not name.startswith("__"):
            for home in homes:
                module = importlib.import_module(home)
                if hasattr(module, name):
                    _warn(f"{stage}.{name}", f"{home}.{name}")
                    return getattr(module, name)
        raise AttributeError(f"module {stage!r} has no attribute {name!r}")

    return __getattr__
