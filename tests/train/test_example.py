"""examples/tutorial_byterec.py: the tutorial's example end to end runs and reports per-task metrics."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import pytest

import mmoe_annotated as mm


@pytest.fixture(scope="module")
def example(repo_root):
    path = repo_root / "examples" / "tutorial_byterec.py"
    spec = importlib.util.spec_from_file_location("tutorial_byterec", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(metrics: dict, printed: str) -> None:
    assert set(metrics) == {"finish", "like"}
    for task in ("finish", "like"):
        assert 0.0 <= metrics[task]["auc"] <= 1.0
        assert math.isfinite(metrics[task]["logloss"]) and metrics[task]["logloss"] > 0
        # printed rounded, in the tutorial's words
        assert f"{task} test LogLoss {metrics[task]['logloss']:.4f}" in printed
        assert f"{task} test AUC {metrics[task]['auc']:.4f}" in printed


def test_example_on_the_real_sample(example, byterec_path, capsys):
    metrics = example.main(["--byterec", str(byterec_path)])  # the tutorial's settings: batch 32, 10 epochs
    out = capsys.readouterr().out
    assert "160 train rows, 40 test rows" in out
    _check(metrics, out)


def test_example_on_the_embedded_data(example, capsys):
    metrics = example.main(["--rows", "1500", "--epochs", "2"])
    out = capsys.readouterr().out
    assert "embedded synthetic dataset, 1500 rows" in out
    _check(metrics, out)
    assert metrics["finish"]["auc"] > 0.6  # the planted signal is learnable even in a short run


def test_example_bad_path(example, tmp_path):
    with pytest.raises(mm.DataError, match="no such file"):
        example.main(["--byterec", str(tmp_path / "missing.txt")])


def test_example_runs_as_a_script(repo_root):
    """The file runs as a script: ``--help`` answers from the command line before torch is imported
    (the whole pipeline behind ``main`` is run in-process by the tests above, which is faster than
    a second interpreter importing torch)."""
    usage = subprocess.run([sys.executable, "examples/tutorial_byterec.py", "--help"], cwd=repo_root,
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0, usage.stderr
    assert "--byterec" in usage.stdout and "--rows" in usage.stdout
    wrong = subprocess.run([sys.executable, "examples/tutorial_byterec.py", "--epochs", "ten"], cwd=repo_root,
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "invalid int value" in wrong.stderr
