"""Check the built book for defects a reader would see: `make test-build` (after `make book`).

Reads the HTML of `_build/html` and the executed notebooks of `_build/jupyter_execute` (what the
build ran, with every output) and fails on

placeholder    text that looks unfilled, in rendered prose (not in code or math): a word of
               capitals with an underscore (`CHAPTER_TITLE`, `N_SEEDS_`), `{name}` or
               `{name:.3f}` (a format string printed without its values, or MyST markup that
               did not render), TODO, FIXME, TBD, XXX; and `{name}` in a printed output.
warning        a stream on stderr, or a warning in an output: Python's warning line
               (`file.py:12: UserWarning: ...`), a printed warning category (`RuntimeWarning:`),
               a logging `WARNING:` line. ALLOWED_WARNINGS lists the ones a reader must see, each
               with its reason.
numbered-heading
               a heading that starts with a number of its own ("1. The data", "9.1 The data",
               "9.1. 1. The data"): Sphinx numbers the sections of numbered parts, and the book
               names sections, never numbers them by hand (CONTRIBUTING.md).
machine-path   an absolute path of the machine that built the book (/tmp/, /work/, /home/,
               /root/, site-packages, the repository's own folder) in an output a reader sees or
               anywhere on a page outside code the author wrote.
build-talk     the language of building and testing the book in what the reader reads: NOT MET,
               committed, load average, 2-core, CI, make test, tests/ (BUILD_TALK; the
               source-level check in tests/book/test_book.py uses the same list). Prose includes
               inline code, not code blocks; outputs are checked for all but "CI", which an
               output may use for a confidence interval. BUILD_TALK_ALLOWED names the pages that
               may use a phrase, with the reason.
live-timing    a number measured while the book was built, worded as a fixed claim. A code cell
               is a *live timing* when it reads a clock (time.perf_counter, time.time,
               time.monotonic, process_time, timeit, %time, torch.utils.benchmark, a CUDA
               event's elapsed_time) or calls a function that a live timing defines. Its numbers
               change with every build and machine, so the check fails on
                 - a sentence of the markdown around it (from the code cell before to the code
                   cell after) that states a duration or a speed ratio with a number ("0.5 ms",
                   "3 s", "2x faster", "1.6-2.1x"), unless every such number is printed by a cell
                   of the same page that reads no clock (a shipped result);
                 - an output of a live timing that words its verdict around the live number
                   ("1.3x faster", "slower", "speed-up"): the words are fixed, the number is not.
               Pages that print shipped measurements read no clock and never fire.

Cells tagged remove-output or remove-cell are skipped (the reader never sees them); cells are
numbered from 1, markdown and code alike, as Jupyter and the other checks number them.

    python tools/build_check.py [--build _build] [--root .]    # exit 1 on any finding
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# ----------------------------------------------------------------------------- allow-lists

#: (page, regex on the output text, reason): warnings a reader must see.
ALLOWED_WARNINGS = [
    ("book/appendix_troubleshooting", r"RuntimeWarning : task 'like': the evaluation split holds only one class",
     "the appendix shows, on purpose, the warning mm.evaluate gives for a split with one class "
     "(AUC undefined, NaN instead of a crash)"),
]

#: page -> {phrase: reason}: pages that may use a build-talk phrase.
BUILD_TALK_ALLOWED = {
    "README": {
        "make test": "the README tells a contributor how to build and test",
        "tests/": "the README maps the repository's folders",
        "CI": "the README says what CI runs",
        "committed": "the README tells a contributor what the repository holds",
    },
    "book/teaching": {
        "make test": "instructors run `make test` before class",
        "tests/": "instructors may adapt the tests",
        "CI": "instructors may run the checks in CI",
    },
    "book/api": {
        "tests/": "the API reference shows the package's docstrings, which name the test that "
                  "checks a claim",
    },
    "book/appendix_performance": {
        "load average": "benchmark hygiene is the appendix's subject: every shipped run records "
                        "the load average, and the appendix teaches how load moves timings",
    },
}

# ----------------------------------------------------------------------------- patterns

#: The language of building and testing the book; keys are the phrases BUILD_TALK_ALLOWED uses.
BUILD_TALK = {
    "NOT MET": re.compile(r"\bNOT MET\b"),
    "committed": re.compile(r"\bcommitted\b", re.I),
    "load average": re.compile(r"\bload averages?\b", re.I),
    "2-core": re.compile(r"\b(?:2|two)-core\b", re.I),
    "CI": re.compile(r"\bCI\b"),
    "make test": re.compile(r"\bmake test\b"),
    "tests/": re.compile(r"(?<![\w.-])tests/"),
}
PROSE_ONLY_PHRASES = {"CI"}

PLACEHOLDER_PROSE = re.compile(
    r"(?<![\w`])_*[A-Z][A-Z0-9]*_[A-Z0-9_]*(?![\w`])"      # CHAPTER_TITLE, N_SEEDS_
    r"|\{[A-Za-z_][\w.]*(?:![rsa])?(?::[^{}\s]*)?\}"        # {name}, {x:.3f}, {cite}
    r"|\b(?:TODO|FIXME|TBD|XXX)\b")
PLACEHOLDER_OUTPUT = re.compile(r"\{[A-Za-z_][\w.]*(?:![rsa])?(?::[^{}\s]*)?\}")

WARNING_TEXT = re.compile(
    r"^[^\n]*:\d+: [A-Z]\w*Warning: "                  # warnings.showwarning's line
    r"|\b[A-Z]\w*Warning\s?: "                         # a printed category: "UserWarning: ..."
    r"|^WARNING:|^\[W[\d ]"                            # logging; torch's C++ warnings
    , re.M)

HAND_NUMBER = re.compile(r"^\s*(?:\d+(?:\.\d+)+\.?|\d+[.)])(?=\s|$)")

MACHINE_PATH = re.compile(
    r"(?<![\w.~-])/(?:tmp|work|home|root|Users|private/var|var/folders)/"
    r"|\b(?:site|dist)-packages\b|file:///", re.I)

CLOCK = re.compile(
    r"\btime\.(?:perf_counter(?:_ns)?|time|monotonic(?:_ns)?|process_time(?:_ns)?)\("
    r"|\btimeit\b|^\s*%%?time(?:it)?\b|\btorch\.utils\.benchmark\b|\.elapsed_time\(", re.M)
NUMBER = r"\d+(?:[.,]\d+)*"
TIMING_CLAIM = re.compile(
    rf"\b{NUMBER}(?:\s*[-–]\s*{NUMBER})?\s*(?:ms|µs|us|ns|s|sec|seconds?|minutes?|min)\b"
    rf"|\b{NUMBER}(?:\s*[-–]\s*{NUMBER})?\s*(?:x|×)(?![\w])"
    rf"|\b{NUMBER}\s*times\s+(?:faster|slower|quicker|as fast)")
READING_TIME = re.compile(r"Time: about \d+ minutes")
VERDICT = re.compile(r"\b(?:faster|slower|quicker|speed-?ups?)\b", re.I)
TAGS_HIDDEN = {"remove-output", "remove-cell"}


@dataclass(frozen=True)
class Finding:
    check: str
    page: str
    where: str
    text: str

    def __str__(self):
        return f"{self.page} {self.where}: {self.text}"


def excerpt(text: str, start: int, end: int, pad: int = 40) -> str:
    s = text[max(0, start - pad):end + pad]
    return ("..." if start > pad else "") + re.sub(r"\s+", " ", s).strip() + (
        "..." if end + pad < len(text) else "")


# ----------------------------------------------------------------------------- text checks

def placeholders(text: str, pattern=PLACEHOLDER_PROSE) -> list[str]:
    return [excerpt(text, m.start(), m.end()) for m in pattern.finditer(text)]


def build_talk(text: str, page: str, *, prose: bool = True, allowed: bool = False) -> list[str]:
    """Build-talk phrases in ``text`` that ``page`` may not use (keys of BUILD_TALK); with
    ``allowed=True``, the phrases it uses that BUILD_TALK_ALLOWED grants it."""
    grant = BUILD_TALK_ALLOWED.get(page, {})
    return [phrase for phrase, pattern in BUILD_TALK.items()
            if (phrase in grant) == allowed and (prose or phrase not in PROSE_ONLY_PHRASES)
            and pattern.search(text)]


def _talk(page, where, text, prose):
    """Findings for the build talk of one block of text, and the allowances it used."""
    return ([Finding("build-talk", page, where, f"{p!r}: " + _around(text, BUILD_TALK[p]))
             for p in build_talk(text, page, prose=prose)]
            + [Finding("allowed", page, where, f"{p!r} ({BUILD_TALK_ALLOWED[page][p]})")
               for p in build_talk(text, page, prose=prose, allowed=True)])


def machine_paths(text: str, roots=()) -> list[str]:
    found = [excerpt(text, m.start(), m.end()) for m in MACHINE_PATH.finditer(text)]
    for root in roots:
        i = text.find(root)
        if i >= 0:
            found.append(excerpt(text, i, i + len(root)))
    return found


def hand_numbered(heading: str, section_number: str = "") -> bool:
    """Whether a heading's own text starts with a number (besides Sphinx's section number)."""
    if HAND_NUMBER.match(heading):
        return True
    own = section_number.strip().rstrip(".")
    return bool(own) and re.match(rf"\s*{re.escape(own)}\b", heading) is not None


def allowed_warning(page: str, text: str) -> str | None:
    for p, pattern, reason in ALLOWED_WARNINGS:
        if p == page and re.search(pattern, text):
            return reason
    return None


# ----------------------------------------------------------------------------- HTML pages

CODE_BLOCK = {"pre", "script", "style", "textarea", "noscript"}
SKIP_CLASSES = {"highlight", "math", "cell_input", "cell_output", "sig", "headerlink",
                "section-number", "MathJax"}
BLOCKS = {"p", "li", "dt", "dd", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "figcaption",
          "caption", "summary", "blockquote", "div"}


def _classes(el) -> set[str]:
    return set(el.get("class") or [])


def html_blocks(article):
    """[(kind, text)] for the prose of a page's article, in document order: 'prose' (with its inline
    code) and 'prose-plain' (the same block without its inline code). Code blocks,
    math, cell inputs and outputs (the notebooks' part), autodoc signatures and the section
    numbers Sphinx adds are left out."""
    from bs4 import Comment, NavigableString

    blocks, order = {}, []  # id(block) -> [parts with code, parts without]
    for node in article.descendants:
        if not isinstance(node, NavigableString) or isinstance(node, Comment):
            continue
        block, code, skip = None, False, False
        for anc in node.parents:
            if anc is article or anc.name is None:
                break
            if anc.name in CODE_BLOCK or _classes(anc) & SKIP_CLASSES:
                skip = True
                break
            if anc.name in ("code", "kbd", "samp", "tt"):
                code = True
            if block is None and anc.name in BLOCKS:
                block = anc
        if skip:
            continue
        key = id(block if block is not None else article)
        if key not in blocks:
            blocks[key] = ([], [])
            order.append(key)
        text = str(node)
        blocks[key][0].append(text)
        if not code:
            blocks[key][1].append(text)
    out = []
    for key in order:
        with_code, plain = (re.sub(r"\s+", " ", "".join(p)).strip() for p in blocks[key])
        if with_code:
            out += [("prose", with_code), ("prose-plain", plain)]
    return out


def check_html_page(page: str, html: str, roots=()) -> list[Finding]:
    """The HTML checks of one page: placeholders and build talk in prose, hand-numbered
    headings, machine paths outside code the author wrote. Outputs are the notebooks' part."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    article = soup.select_one("article.bd-article") or soup.select_one("main") or soup.body
    if article is None:
        return []
    found = []
    for kind, text in html_blocks(article):
        if kind == "prose-plain":
            found += [Finding("placeholder", page, "prose", e) for e in placeholders(text)]
        elif kind == "prose":
            found += _talk(page, "prose", text, prose=True)
            found += [Finding("machine-path", page, "prose", e) for e in machine_paths(text, roots)]
    # code blocks the page writes itself (not cell inputs), and autodoc signatures
    for el in article.select("div.highlight, dt.sig"):
        if el.find_parent(class_=["cell_input", "cell_output"]):
            continue
        text = el.get_text()
        found += [Finding("machine-path", page, "code block" if el.name == "div" else "signature", e)
                  for e in machine_paths(text, roots)]
    for h in article.find_all(["h1", "h2", "h3", "h4", "h5", "h6"]):
        number = h.find(class_="section-number")
        number_text = number.get_text() if number else ""
        parts = [t for t in h.find_all(string=True)
                 if not t.find_parent(class_=["section-number", "headerlink"])]
        text = re.sub(r"\s+", " ", "".join(parts)).strip()
        if hand_numbered(text, number_text):
            found.append(Finding("numbered-heading", page, h.name,
                                 f"{number_text.strip()} {text}".strip()))
    return found


def _around(text, pattern):
    m = pattern.search(text)
    return excerpt(text, m.start(), m.end()) if m else text[:80]


# ----------------------------------------------------------------------------- notebooks

def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def output_texts(cell):
    """[(kind, text)] per output: 'stderr', 'stdout', 'result' (text/plain or text/html),
    'error'. IPython's Code display (show_source) is source, not output: left out."""
    out = []
    for o in cell.get("outputs", []):
        t = o.get("output_type")
        if t == "stream":
            out.append(("stderr" if o.get("name") == "stderr" else "stdout", _text(o.get("text"))))
        elif t in ("execute_result", "display_data"):
            data = o.get("data", {})
            html = _text(data.get("text/html"))
            if "text/latex" in data and "highlight" in html:  # IPython.display.Code
                continue
            out.append(("result", _text(data.get("text/plain")) + "\n" + html))
        elif t == "error":
            out.append(("error", "\n".join(o.get("traceback", []))))
    return out


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def sentences(markdown: str) -> list[str]:
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)       # fenced blocks
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]+\$", " ", text, flags=re.S)  # math
    text = re.sub(r"\s+", " ", text)
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z(`*])", text) if s.strip()]


def live_timing_cells(cells) -> set[int]:
    """Indices of code cells that read a clock, or call a function such a cell defines."""
    live, timers = set(), set()
    for _ in range(2):  # a timer defined from a timer
        for i, c in enumerate(cells):
            if c.get("cell_type") != "code":
                continue
            src = _text(c.get("source"))
            if CLOCK.search(src) or any(re.search(rf"\b{re.escape(t)}\(", src) for t in timers):
                live.add(i)
                timers.update(re.findall(r"^\s*def (\w+)\(", src, re.M))
    return live


def timing_findings(page: str, cells) -> list[Finding]:
    live = live_timing_cells(cells)
    if not live:
        return []
    shipped = "\n".join(t for i, c in enumerate(cells) if c.get("cell_type") == "code"
                        and i not in live for _, t in output_texts(c))
    found = []
    code_at = [i for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    seen = set()
    for i in sorted(live):
        before = max([j for j in code_at if j < i], default=-1)
        after = min([j for j in code_at if j > i], default=len(cells))
        for j in range(before + 1, after):
            if cells[j].get("cell_type") != "markdown" or j in seen:
                continue
            seen.add(j)
            for s in sentences(_text(cells[j].get("source"))):
                if READING_TIME.search(s):
                    continue  # the page's own reading time
                claims = [m.group(0) for m in TIMING_CLAIM.finditer(s)]
                numbers = [n for c in claims for n in re.findall(NUMBER, c)]
                if claims and not all(re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", shipped)
                                      for n in numbers):
                    found.append(Finding("live-timing", page, f"cell {j + 1}",
                                         f"{', '.join(claims)} beside the live timing of cell "
                                         f"{i + 1}: {s[:160]}"))
        if _tags(cells[i]) & TAGS_HIDDEN:
            continue
        for kind, text in output_texts(cells[i]):
            for line in text.splitlines():
                if VERDICT.search(line) and re.search(r"\d", line):
                    found.append(Finding("live-timing", page, f"cell {i + 1} output",
                                         f"a verdict worded around a live number: {line.strip()[:160]}"))
    return found


def check_notebook(page: str, nb: dict, roots=()) -> list[Finding]:
    """The checks of one executed notebook's outputs: stderr and warnings, placeholders, machine
    paths and build talk in outputs, and live timings."""
    cells = nb.get("cells", [])
    found = []
    for i, c in enumerate(cells):
        if c.get("cell_type") != "code" or _tags(c) & TAGS_HIDDEN:
            continue
        where = f"cell {i + 1}"
        for kind, text in output_texts(c):
            if kind == "stderr" and text.strip():
                reason = allowed_warning(page, text)
                found.append(Finding("allowed", page, where, f"stderr ({reason})") if reason else
                             Finding("warning", page, where, "stderr: " + excerpt(text, 0, 0, 120)))
                continue
            if kind != "error":
                for m in WARNING_TEXT.finditer(text):
                    line = text[text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0]
                    reason = allowed_warning(page, line)
                    found.append(Finding("allowed", page, where, f"warning ({reason})") if reason
                                 else Finding("warning", page, where, line.strip()[:200]))
                found += [Finding("placeholder", page, f"{where} output", e)
                          for e in placeholders(text, PLACEHOLDER_OUTPUT)]
                found += _talk(page, f"{where} output", text, prose=False)
            found += [Finding("machine-path", page, f"{where} output", e)
                      for e in machine_paths(text, roots)]
    found += timing_findings(page, cells)
    return found


# ----------------------------------------------------------------------------- the book

CHECKS = ("placeholder", "warning", "numbered-heading", "machine-path", "build-talk", "live-timing")


def check_build(build: Path, root: Path) -> list[Finding]:
    html_dir, executed = build / "html", build / "jupyter_execute"
    roots = sorted({str(root.resolve()), str(build.resolve())}, key=len, reverse=True)
    found = []
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir)
        if any(part.startswith("_") for part in rel.parts) or rel.name in ("genindex.html", "search.html", "py-modindex.html"):
            continue
        found += check_html_page(rel.with_suffix("").as_posix(), path.read_text(errors="replace"), roots)
    for path in sorted(executed.rglob("*.ipynb")):
        rel = path.relative_to(executed)
        nb = json.loads(path.read_text(errors="replace"))
        found += check_notebook(rel.with_suffix("").as_posix(), nb, roots)
    unique = list(dict.fromkeys(found))  # executed notebooks may repeat a merged stream
    return unique


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="_build", help="the build folder (html/, jupyter_execute/)")
    ap.add_argument("--root", default=".", help="the repository (its path must not leak)")
    ap.add_argument("--only", nargs="*", choices=CHECKS, help="run only these checks")
    args = ap.parse_args(argv)
    build = Path(args.build)
    if not (build / "html" / "index.html").is_file() or not (build / "jupyter_execute").is_dir():
        sys.exit(f"build_check: no built book in {build}/ (html/index.html, jupyter_execute/); "
                 "run `make book` first")
    t0 = time.monotonic()
    everything = check_build(build, Path(args.root))
    allowed = [f for f in everything if f.check == "allowed"]
    found = [f for f in everything if f.check != "allowed" and (not args.only or f.check in args.only)]
    for check in CHECKS:
        if args.only and check not in args.only:
            continue
        hits = [f for f in found if f.check == check]
        print(f"{'FAIL' if hits else 'ok  '} {check:17s} {len(hits)}")
        for f in hits:
            print(f"       - {f}")
    if allowed:
        print(f"allowed ({len(allowed)}, see ALLOWED_WARNINGS and BUILD_TALK_ALLOWED):")
        for f in allowed:
            print(f"       - {f}")
    pages = len(list((build / "html").rglob("*.html")))
    print(f"build_check: {pages} HTML files and the executed notebooks in "
          f"{time.monotonic() - t0:.1f} s; {len(found)} finding(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
