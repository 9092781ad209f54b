"""Shared pytest fixtures for the package tests.

The real 200-row ByteRec sample ships inside the package (``mm.load_byterec_sample()``,
``mmoe_annotated/data/sample/``); tests that compare with the tutorial read it from there, so a
fresh clone runs every one of them. Nothing here reads outside the repository.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

import mmoe_annotated as mm

# The models under test are tiny, and `make test` runs two pytest workers on two cores:
# with torch's default intra-op threads the workers oversubscribe the CPU, and a short
# fit measured 5.4 s with one thread against 58.9 s with two on this loaded machine.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
BYTEREC_SAMPLE = Path(mm.data.__file__).parent / "sample" / "byterec_sample.txt"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def byterec_path() -> Path:
    """Path of the real 200-row ByteRec sample the package ships."""
    assert BYTEREC_SAMPLE.is_file(), f"the package's ByteRec sample is missing: {BYTEREC_SAMPLE}"
    return BYTEREC_SAMPLE


@pytest.fixture(scope="session")
def _byterec_sample_once(byterec_path):
    import mmoe_annotated as mm

    return mm.load_byterec(byterec_path)


@pytest.fixture
def byterec_sample(_byterec_sample_once):
    """The real sample loaded with the package's strict loader (a fresh copy per test)."""
    return _byterec_sample_once.copy()


@pytest.fixture(scope="session")
def _example_small_once():
    import mmoe_annotated as mm

    return mm.load_example(n_rows=3000, seed=0)


@pytest.fixture
def example_small(_example_small_once):
    """3,000 rows of the embedded (synthetic) dataset (a fresh copy per test)."""
    return _example_small_once.copy()


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    """Large random weights so that every entry matters (the 1e-4 init would hide mistakes).
    Shared by the model, train and fast tests (``from tests.conftest import randomize_``)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# A small MMoE and a split of the embedded data, shared by tests/train and tests/fast.
SMALL = dict(expert_hidden=(16, 8), gate_hidden=(8,), tower_hidden=(8,))
QUIET = dict(progress=False)


@pytest.fixture(scope="module")
def split():
    df = mm.load_example(n_rows=4000, seed=0)
    train, test = mm.split_by_row(df, 0.8)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim=4).fit(train)
    return train, test, enc


def small_model(enc, **kw) -> mm.MMoE:
    return mm.MMoE(mm.ModelConfig(enc.features, **{**SMALL, **kw}))


# ----------------------------------------------------------------------------- skip guard
# A fresh clone with no sibling folders runs every test CI runs: a test that skips because a
# file, a package or a tool is missing hides a lost check, so the run fails on any skip whose
# reason is not one of these (each listed with its reason at the end of the run).
ALLOWED_SKIPS = {
    # CUDA-only checks without a GPU, and CPU-only error checks on a machine that has one.
    "CUDA device": re.compile(r"\bCUDA\b|\bGPU\b"),
    # The browser check's tools, fetched by `make chromium` and `make mathjax`, which `make test`
    # runs before the package tests; a bare `pytest tests` in a fresh clone has neither.
    "browser tools not fetched": re.compile(r"^needs Debian's Chromium|^needs the fetched MathJax"),
}
if not sys.platform.startswith("linux"):  # CI is Linux; elsewhere some OS features are absent
    ALLOWED_SKIPS["not Linux"] = re.compile(r"POSIX|Linux|/dev/|/proc/|FIFO|\bfork\b")

_skips: dict[str, str] = {}  # node id -> reason


def skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, (tuple, list)) and len(longrepr) == 3:  # (path, line, "Skipped: ...")
        longrepr = longrepr[2]
    return re.sub(r"^Skipped: ", "", str(longrepr))


def unexpected_skips(skips: dict[str, str]) -> dict[str, str]:
    return {node: reason for node, reason in skips.items()
            if not any(p.search(reason) for p in ALLOWED_SKIPS.values())}


def _record(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips[report.nodeid] = skip_reason(report)


def pytest_runtest_logreport(report):
    _record(report)


def pytest_collectreport(report):  # a module skipped at import (pytest.importorskip)
    _record(report)


def pytest_sessionfinish(session, exitstatus):
    # Under pytest-xdist the controller sees every worker's reports; a worker only its own.
    if not hasattr(session.config, "workerinput") and unexpected_skips(_skips) \
            and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    bad = unexpected_skips(_skips)
    if bad and not hasattr(config, "workerinput"):
        terminalreporter.section("unexpected skips", red=True, bold=True)
        terminalreporter.line(f"{len(bad)} test(s) skipped for a reason not in ALLOWED_SKIPS "
                              "(tests/conftest.py); a clean clone must run them:", red=True)
        for node, reason in sorted(bad.items()):
            terminalreporter.line(f"  {node}: {reason}")
