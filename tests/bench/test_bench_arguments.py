"""The benchmark's commands check their values and their ``--json`` path before they measure anything:
a bad value is argparse's usage error (exit 2, naming the argument), and a ``--json`` that names a
folder is refused at once, by the command and by the library functions, never after the work."""
from __future__ import annotations

import pytest

from mmoe_annotated import bench
from mmoe_annotated.bench import __main__ as bench_main
from mmoe_annotated.bench import ablation, prediction, run, scaling, serving, step_breakdown


def _no_work(*args, **kwargs):
    raise AssertionError("the work started")


@pytest.fixture
def nothing_runs(monkeypatch):
    for module in (run, prediction, ablation):
        monkeypatch.setattr(module, "prepare_data", _no_work)
    for name in ("run_benchmark", "run_prediction", "run_ablation"):
        monkeypatch.setattr(bench_main, name, _no_work)
    monkeypatch.setattr(serving, "run_serving", _no_work)
    monkeypatch.setattr(step_breakdown, "measure", _no_work)
    monkeypatch.setattr(scaling, "_machine", _no_work)


@pytest.mark.parametrize("main, argv, argument", [
    (bench_main.main, ["--rows", "50"], "--rows"),
    (bench_main.main, ["--rows", "many"], "--rows"),
    (bench_main.main, ["--json", "{tmp}"], "--json"),
    (bench_main.main, ["--prediction", "--json", "{tmp}"], "--json"),
    (bench_main.main, ["--ablation", "--json", "{tmp}"], "--json"),
    (bench_main.main, ["--json", "{file}/under.json"], "--json"),
    (bench_main.main, ["--batch-sizes", "256", "0"], "--batch-sizes"),
    (bench_main.main, ["--emb-dims", "-4"], "--emb-dims"),
    (bench_main.main, ["--repeats", "0"], "--repeats"),
    (bench_main.main, ["--threads", "0"], "--threads"),
    (bench_main.main, ["--block-rows", "0"], "--block-rows"),
    (serving.main, ["--rows", "10"], "--rows"),
    (serving.main, ["--threads", "1", "0"], "--threads"),
    (serving.main, ["--clients", "0"], "--clients"),
    (serving.main, ["--json", "{tmp}"], "--json"),
    (scaling.main, ["--batch-size", "0"], "--batch-size"),
    (scaling.main, ["--epochs", "0"], "--epochs"),
    (scaling.main, ["--json", "{tmp}"], "--json"),
    (step_breakdown.main, ["--repeats", "0"], "--repeats"),
    (step_breakdown.main, ["--json", "{tmp}"], "--json"),
])
def test_bad_values_are_usage_errors_before_any_work(main, argv, argument, tmp_path, capsys, nothing_runs):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    argv = [a.format(tmp=tmp_path, file=a_file) for a in argv]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "usage:" in err and f"argument {argument}" in err and "Traceback" not in err


def test_the_library_checks_the_json_path_before_the_work(tmp_path, nothing_runs):
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        bench.run_benchmark(bench.BenchSpec(rows=200, impls=("taught",)), json_path=tmp_path, log=lambda *a: None)
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        bench.run_prediction(rows=200, json_path=tmp_path, log=lambda *a: None)
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        bench.run_ablation(rows=200, json_path=tmp_path, log=lambda *a: None)
