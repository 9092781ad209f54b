"""tools/build_check.py: each check of the built book fails on a planted defect and stays quiet
on the same text where it is allowed (code, math, a page granted a phrase, a shipped number)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


build_check = load_tool("build_check")


def _html(body: str) -> str:
    return (f'<!DOCTYPE html><html><head><title>t</title></head><body><nav><h2>1. Nav</h2></nav>'
            f'<article class="bd-article">{body}</article></body></html>')


def _checks(found):
    return sorted(f.check for f in found if f.check != "allowed")


def _nb(*cells):
    """An executed notebook: ("md", text) or ("code", source, [outputs], [tags])."""
    nb = nbformat.v4.new_notebook()
    for cell in cells:
        if cell[0] == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(cell[1]))
        else:
            _, source, outputs, *tags = cell
            c = nbformat.v4.new_code_cell(source, metadata={"tags": tags[0]} if tags else {})
            c.outputs = [nbformat.v4.new_output(**o) for o in outputs]
            nb.cells.append(c)
    return json.loads(nbformat.writes(nb))


def _out(text, name="stdout"):
    return {"output_type": "stream", "name": name, "text": text}


# ----------------------------------------------------------------------------- placeholder

def test_placeholder_in_prose_not_in_code_or_math():
    found = build_check.check_html_page("book/x", _html(
        "<p>This chapter covers CHAPTER_TITLE in {n_rows} rows. TODO: a figure.</p>"
        "<p>Inline <code class='literal'>SPARSE_FEATURES</code> and <code>{name}</code> are code;"
        ' <span class="math">\\(\\{x\\}_{i}\\)</span> is math.</p>'
        '<div class="highlight"><pre>print(f"{n_rows} MAX_ROWS_")</pre></div>'
        '<div class="cell_output"><pre>{not prose}</pre></div>'))
    hits = [f.text for f in found if f.check == "placeholder"]
    assert len(hits) == 3, hits
    assert any("CHAPTER_TITLE" in h for h in hits) and any("{n_rows}" in h for h in hits)
    assert any("TODO" in h for h in hits)


def test_placeholder_in_a_printed_output():
    nb = _nb(("code", "print('{n} rows')", [_out("{n} rows\n")]),
             ("code", "print(d)", [_out("{'a': 1} {0, 1}\n")]))
    found = build_check.check_notebook("book/x", nb)
    assert [(f.check, f.where) for f in found] == [("placeholder", "cell 1 output")]


# ----------------------------------------------------------------------------- warning

def test_stderr_and_warnings_fail_unless_allowed(monkeypatch):
    nb = _nb(("code", "x", [_out("some progress\n", "stderr")]),
             ("code", "y", [_out("/usr/x/mod.py:12: UserWarning: boom\n  warnings.warn(...)\n")]),
             ("code", "z", [_out("RuntimeWarning : shown on purpose\nok\n")]),
             ("code", "w", [_out("a Warning about nothing, no category\n")]),
             ("code", "v", [_out("hidden\n", "stderr")], ["remove-output"]))
    found = build_check.check_notebook("book/x", nb)
    warned = [f.where for f in found if f.check == "warning"]
    assert warned == ["cell 1", "cell 2", "cell 3"], found
    monkeypatch.setattr(build_check, "ALLOWED_WARNINGS",
                        [("book/x", r"RuntimeWarning : shown on purpose", "the page shows it")])
    found = build_check.check_notebook("book/x", nb)
    assert [f.where for f in found if f.check == "warning"] == ["cell 1", "cell 2"]
    assert [f.text for f in found if f.check == "allowed"] == ["warning (the page shows it)"]


# ----------------------------------------------------------------------------- headings

def test_headings_numbered_by_hand():
    found = build_check.check_html_page("book/x", _html(
        '<h1><span class="section-number">9. </span>Census<a class="headerlink">#</a></h1>'
        '<h2><span class="section-number">9.1. </span>1. The data<a class="headerlink">#</a></h2>'
        '<h2><span class="section-number">9.2. </span>9.2 Tasks</h2>'
        "<h3>3. Large batches</h3><h3>2) Small ones</h3><h3>4.1 Nested</h3>"
        "<h3>3 seeds or 30?</h3><h3>2018, the paper</h3><h3>Why 2 tasks</h3>"))
    hits = [f.text for f in found if f.check == "numbered-heading"]
    assert hits == ["9.1. 1. The data", "9.2. 9.2 Tasks", "3. Large batches", "2) Small ones",
                    "4.1 Nested"], hits
    assert not build_check.hand_numbered("2018, the paper")
    assert build_check.hand_numbered("9 Census", "9.")


# ----------------------------------------------------------------------------- machine paths

def test_machine_paths_in_outputs_and_pages():
    nb = _nb(("code", "a", [_out("wrote /tmp/run/results.json\n")]),
             ("code", "b", [{"output_type": "display_data",
                             "data": {"text/plain": "at .venv/lib/python3.11/site-packages/x.py"}}]),
             ("code", "c", [_out("cache in /srv/book/_build/cache\n")]),
             ("code", "d", [_out("relative: results/run.json, a ratio 3/tmp\n")]))
    found = build_check.check_notebook("book/x", nb, roots=["/srv/book"])
    assert [f.where for f in found if f.check == "machine-path"] == [
        "cell 1 output", "cell 2 output", "cell 3 output"], found
    page = build_check.check_html_page("book/api", _html(
        "<p>Files go to /home/me/data.</p>"
        '<dl class="py"><dt class="sig">f(cache=PosixPath("/root/.cache"))</dt></dl>'
        '<div class="cell_input"><div class="highlight"><pre>open("/tmp/x")</pre></div></div>'))
    assert sorted(f.where for f in page if f.check == "machine-path") == ["prose", "signature"]


# ----------------------------------------------------------------------------- build talk

def test_build_talk_in_prose_and_outputs(monkeypatch):
    html = _html("<p>The target is NOT MET on the 2-core machine; CI runs "
                 "<code class='literal'><span class='pre'>make</span> <span class='pre'>test</span></code>.</p>"
                 "<p>The committed run, see tests/train/.</p>"
                 '<div class="highlight"><pre>make test  # in a code block: fine</pre></div>')
    found = build_check.check_html_page("book/x", html)
    phrases = sorted(f.text.split(":")[0] for f in found if f.check == "build-talk")
    assert phrases == ["'2-core'", "'CI'", "'NOT MET'", "'committed'", "'make test'", "'tests/'"]
    allowed = build_check.check_html_page("book/teaching", html)
    assert "'make test'" not in {f.text.split(":")[0] for f in allowed if f.check == "build-talk"}
    assert any(f.check == "allowed" and "make test" in f.text for f in allowed)
    nb = _nb(("code", "x", [_out("95 % CI [0.1, 0.2]\ntarget 2.0x NOT MET\n")]))
    assert [f.text.split(":")[0] for f in build_check.check_notebook("book/x", nb)] == ["'NOT MET'"]


def test_build_talk_is_one_list_for_sources_and_the_build():
    # tests/book/test_book.py checks the sources with the same function and allowances
    assert build_check.build_talk("run make test first", "README") == []
    assert build_check.build_talk("run make test first", "book/05_gates") == ["make test"]
    assert build_check.build_talk("the load average was 5", "book/appendix_performance") == []
    assert build_check.build_talk("tests/fast checks it", "book/x", allowed=False) == ["tests/"]


# ----------------------------------------------------------------------------- live timing

TIMER = ("import time\ndef median_ms(fn):\n    start = time.perf_counter()\n    fn()\n"
         "    return 1e3 * (time.perf_counter() - start)")


def test_live_timing_claims_fail_shipped_numbers_pass():
    nb = _nb(("md", "Time: about 30 minutes."),
             ("code", TIMER, []),
             ("md", "The batched form is 3x faster here, about 0.2 ms a step."),
             ("code", "print(f'loop {median_ms(f):.2f} ms')", [_out("loop 0.61 ms\n")]),
             ("md", "On the shipped run it was 1.6x faster, and the fit took 4 s."),
             ("code", "run = load()\nprint(f\"{run['ratio']:.1f}x in {run['s']} s\")",
              [_out("1.6x in 4 s\n")]),
             ("md", "A fit takes 12 s on a laptop."),
             ("code", "t = median_ms(f)\nprint(f'RowAdagrad: {t:.1f}x faster per step')",
              [_out("RowAdagrad: 1.3x faster per step\n")]))
    found = [f for f in build_check.check_notebook("book/x", nb) if f.check == "live-timing"]
    where = [f.where for f in found]
    # cell 3's claims beside the live timings of cells 2 and 4; cell 5 quotes the shipped numbers
    # (printed by cell 6, which reads no clock); cell 7's sits beside the live cell 8
    assert where == ["cell 3", "cell 7", "cell 8 output"], found
    assert "3x, 0.2 ms" in found[0].text


def test_pages_without_a_clock_never_fire():
    nb = _nb(("md", "The fast wing is 1.1x faster (2.1 s against 2.3 s)."),
             ("code", "print(load()['speedup'])", [_out("speed-up 1.1x faster\n")]))
    assert build_check.check_notebook("book/x", nb) == []


# ----------------------------------------------------------------------------- the tool

def test_the_tool_reports_and_fails_on_a_build(tmp_path, capsys):
    build = tmp_path / "_build"
    (build / "html" / "book").mkdir(parents=True)
    (build / "jupyter_execute" / "book").mkdir(parents=True)
    (build / "html" / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/a.html">')
    (build / "html" / "book" / "a.html").write_text(_html("<h2>1. Intro</h2><p>Fine.</p>"))
    nb = _nb(("code", "x", [_out("oops\n", "stderr")]))
    (build / "jupyter_execute" / "book" / "a.ipynb").write_text(json.dumps(nb))
    assert build_check.main(["--build", str(build), "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL numbered-heading  1" in out and "FAIL warning           1" in out, out
    assert "ok   placeholder       0" in out, out
    (build / "html" / "book" / "a.html").write_text(_html("<h2>Intro</h2>"))
    (build / "jupyter_execute" / "book" / "a.ipynb").write_text(json.dumps(_nb(("code", "x", []))))
    assert build_check.main(["--build", str(build), "--root", str(tmp_path)]) == 0
    shutil.rmtree(build / "jupyter_execute")
    with pytest.raises(SystemExit, match="make book"):
        build_check.main(["--build", str(build)])
