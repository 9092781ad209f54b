"""Release 0.1's module paths, kept for one release (mmoe_annotated._moved): each still imports,
is the same module object as its new home, and warns with a DeprecationWarning that names it."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import mmoe_annotated as mm
from mmoe_annotated._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_imports_its_new_module_with_a_warning(old):
    sys.modules.pop(f"mmoe_annotated.{old}", None)
    new = importlib.import_module(f"mmoe_annotated.{MOVED[old]}")
    with pytest.warns(DeprecationWarning, match=rf"mmoe_annotated\.{old} moved to mmoe_annotated\.{MOVED[old]}"):
        module = importlib.import_module(f"mmoe_annotated.{old}")
    assert module is new


def test_an_old_module_attribute_of_the_package_warns_once():
    code = ("import warnings; warnings.simplefilter('always'); import mmoe_annotated as mm\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    from mmoe_annotated import losses\n"
            "    assert losses is mm.train.losses and mm.losses is losses\n"
            "print(len(w), w[0].category.__name__, w[0].filename == '<string>')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "DeprecationWarning", "True"]  # the warning points at the caller


@pytest.mark.parametrize("stage, name, home", [
    ("train", "batch_rows", "train.loop"), ("data", "parse_block", "data.parse"),
    ("model", "MultiTaskModel", "model.mmoe"), ("features", "Vocabulary", "features.encoders"),
    ("checkpoint", "digest", "checkpoint.verify")])
def test_names_an_old_module_held_resolve_in_the_stage_that_took_its_name(stage, name, home):
    package = importlib.import_module(f"mmoe_annotated.{stage}")
    module = importlib.import_module(f"mmoe_annotated.{home}")
    if name in getattr(package, "__all__", ()):  # listed by the stage: no warning at all
        assert getattr(package, name) is getattr(module, name)
        return
    with pytest.warns(DeprecationWarning, match=rf"mmoe_annotated\.{stage}\.{name} moved to"):
        assert getattr(package, name) is getattr(module, name)


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        mm.train.nonsense
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        mm.nonsense


def test_the_old_distributed_command_runs_with_a_warning():
    out = subprocess.run([sys.executable, "-m", "mmoe_annotated.distributed", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "mmoe_annotated.scale.distributed" in out.stdout
    assert "DeprecationWarning: mmoe_annotated.distributed moved to mmoe_annotated.scale.distributed" in out.stderr
