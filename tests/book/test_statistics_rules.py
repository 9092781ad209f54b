"""The book's reading rules for comparisons (chapter 7, "Reading a comparison"), checked on every
page: no "two standard errors" rule and no +-2 sem bars read as significance, and no interval or
test computed by hand in a notebook: comparisons go through ``mm.stats``, which uses t quantiles
at small n and corrects declared families with Holm."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))

#: Prose that uses a fixed multiple of the standard error as a test.
TWO_SEM_PROSE = re.compile(
    r"two standard errors|2 standard errors|\b2 ?(?:x ?)?sems?\b|(?:\+-|±|\+/-) ?2 ?(?:x ?)?(?:sem|se)\b"
    r"|mean ?/ ?sem ?> ?2|within (?:about )?two", re.I)
#: Code that builds an interval or a test by hand instead of through mm.stats.
BY_HAND_CODE = re.compile(
    r"\.sem\(|\bsem\s*=|xerr\s*=\s*2\s*\*|1\.96|\bt\.ppf\(|stats\.t\b|ttest_\w+\(|binomtest\(|"
    r"wilcoxon\(|std\([^)]*\)\s*/\s*(?:np\.|math\.)?sqrt|/\s*(?:np\.|math\.)?sqrt\(len\(")


def _cells(path: Path):
    if path.suffix == ".md":
        return [("markdown", path.read_text(encoding="utf-8"))]
    return [(c.cell_type, c.source) for c in nbformat.read(path, as_version=4).cells]


def two_sem_prose(text: str) -> list[str]:
    return sorted({m.group(0) for m in TWO_SEM_PROSE.finditer(text)})


def by_hand(code: str) -> list[str]:
    code = "\n".join(line.split("#", 1)[0] for line in code.splitlines())  # comments may name them
    return sorted({m.group(0) for m in BY_HAND_CODE.finditer(code)})


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_no_page_reads_two_standard_errors_as_a_test(path):
    found = []
    for kind, source in _cells(path):
        text = source if kind == "markdown" else "\n".join(re.findall(r"#[^\n]*", source))
        found += two_sem_prose(text)
    assert not found, f"{path.name}: use t intervals from mm.stats, not a 2-sem rule: {found}"


@pytest.mark.parametrize("path", [p for p in PAGES if p.suffix == ".ipynb"], ids=lambda p: p.name)
def test_no_notebook_computes_an_interval_or_a_test_by_hand(path):
    found = [hit for kind, source in _cells(path) if kind == "code" for hit in by_hand(source)]
    assert not found, f"{path.name}: compute comparisons with mm.stats (paired, Family), not by hand: {found}"


def test_the_checks_catch_what_they_are_for():
    assert two_sem_prose("a mean within about two standard errors of zero") == ["within about two"]
    assert two_sem_prose("more than two standard errors") == ["two standard errors"]
    assert two_sem_prose("square: mean +- 2 sem") == ["+- 2 sem"]
    assert two_sem_prose("the 95 % t interval (t quantile 2.78 at n = 5)") == []
    assert by_hand("ax.errorbar(m, i, xerr=2 * row['sem'])\nhalf = stats.t.ppf(0.975, 4) * sd") == [
        "stats.t", "xerr=2 *"]
    assert by_hand("d.sem()\nse = d.std() / np.sqrt(len(d))") == [".sem(", "std() / np.sqrt"]
    assert by_hand("r = mm.stats.paired(a, b)  # not d.sem()") == []
