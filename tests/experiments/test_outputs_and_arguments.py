"""The experiment commands under faults: bad values, output paths that cannot be written, runs
killed part-way, undefined metrics, and parts that are not one protocol.

* a bad command-line value is argparse's usage error (exit 2, naming the argument), before any work;
* an output path that cannot be written (a file named as the folder) is refused before training;
* a run's outputs never mix with an earlier run's: a new run clears them, a resumed one marks its
  record unfinished before it changes a file;
* an undefined AUC (one class in a split) is reported as undefined, never a crash;
* ``merge`` refuses parts that differ in a setting (unless asked to record it as a column) and parts
  whose tables are not the ones their completion record describes.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mmoe_annotated.experiments import census as study
from mmoe_annotated.experiments import byterec, census_cli, census_control, cli, seesaw
from mmoe_annotated.experiments.cli import main
from mmoe_annotated.experiments.merge import merge_census_runs

from tests.experiments.test_census import write_pair


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("census_data")
    write_pair(folder)
    return folder


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


def _no_work(*args, **kwargs):
    raise AssertionError("the work started")


def _usage_error(capsys, call, argument: str) -> str:
    with pytest.raises(SystemExit) as stop:
        call()
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert "usage:" in err and f"argument {argument}" in err and "Traceback" not in err
    return err


TINY_SYNTHETIC = ["synthetic", "--models", "mmoe", "--correlations", "0.5", "--seeds", "1", "--steps", "2",
                  "--eval-every", "1", "--eval-samples", "10", "--no-progress"]


@pytest.mark.parametrize("argv, argument", [
    (["synthetic", "--out", "{tmp}/o", "--seeds", "0"], "--seeds"),
    (["synthetic", "--out", "{tmp}/o", "--steps", "-3"], "--steps"),
    (["synthetic", "--out", "{tmp}/o", "--correlations", "1.5"], "--correlations"),
    (["synthetic", "--out", "{tmp}/o", "--threads", "0"], "--threads"),
    (["synthetic", "--out", "{tmp}/o", "--batch-size", "lots"], "--batch-size"),
    (["census", "--out", "{tmp}/o", "--seeds", "0"], "--seeds"),
    (["census", "--out", "{tmp}/o", "--epochs", "0"], "--epochs"),
    (["census", "--out", "{tmp}/o", "--patience", "0"], "--patience"),
    (["census", "--out", "{tmp}/o", "--max-train-rows", "-1"], "--max-train-rows"),
    (["census", "--out", "{tmp}/o", "--gradnorm-alpha", "nan"], "--gradnorm-alpha"),
    (["census", "--out", "{tmp}/o", "--balance-lr", "0"], "--balance-lr"),
    (["census", "--out", "{tmp}/o", "--threads", "0"], "--threads"),
    (["census", "--out", "{file}"], "--out"),
    (["merge", "{tmp}", "--out", "{file}", "--name", "x"], "--out"),
    (["merge", "{tmp}", "--out", "{file}/under", "--name", "x"], "--out"),
    (["edges", "{tmp}", "--search-seeds", "0"], "--search-seeds"),
])
def test_bad_values_are_usage_errors(argv, argument, tmp_path, a_file, data_dir, capsys, monkeypatch):
    monkeypatch.setattr(census_cli, "_setup", _no_work)
    monkeypatch.setattr(cli, "run_synthetic", _no_work)
    argv = [a.format(tmp=tmp_path, file=a_file) for a in argv]
    if argv[0] == "census":
        argv += ["--data", str(data_dir)]
    _usage_error(capsys, lambda: main(argv), argument)


def test_synthetic_checks_its_folder_before_training(tmp_path, a_file, capsys, monkeypatch):
    monkeypatch.setattr(cli, "run_synthetic", _no_work)
    err = _usage_error(capsys, lambda: main([*TINY_SYNTHETIC, "--out", str(a_file)]), "--out")
    assert "is a file" in err


@pytest.mark.parametrize("argv, argument", [
    (["--out", "{file}", "--seeds", "1"], "--out"),
    (["--out", "{tmp}/o", "--seeds", "0"], "--seeds"),
    (["--out", "{tmp}/o", "--correlation", "2"], "--correlation"),
    (["--out", "{tmp}/o", "--epochs", "0"], "--epochs"),
    (["--out", "{tmp}/o", "--balancing", "fixd"], "--balancing"),
])
def test_seesaw_checks_its_values_and_folder_before_training(argv, argument, tmp_path, a_file, capsys,
                                                             monkeypatch):
    monkeypatch.setattr(seesaw, "run_seesaw", _no_work)
    argv = [a.format(tmp=tmp_path, file=a_file) for a in argv]
    _usage_error(capsys, lambda: seesaw._main(argv), argument)


def test_synthetic_clears_an_earlier_runs_files_before_it_starts(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("results.csv", "summary.csv", "run.json", "figure2_label_correlation.png",
                 "figure4_loss_curves.png", "figure5_final_loss_hist.png"):
        (out / name).write_text("an earlier run")
    (out / "notes.txt").write_text("not the command's")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_synthetic", killed)
    with pytest.raises(KeyboardInterrupt):
        main([*TINY_SYNTHETIC, "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("command, argv, argument", [
    ("census_control", ["--out", "{file}"], "--out"),
    ("census_control", ["--out", "{tmp}/o", "--seeds", "0"], "--seeds"),
    ("census_control", ["--out", "{tmp}/o", "--patience", "0"], "--patience"),
    ("census_control", ["--out", "{tmp}/o", "--group", "3"], "--group"),
    ("funnel", ["--out", "{tmp}/o", "--first-seed", "-1"], "--first-seed"),
    ("byterec", ["--out", "{tmp}/o", "--first-seed", "-1"], "--first-seed"),
])
def test_the_other_experiment_commands_check_their_values(command, argv, argument, tmp_path, a_file, capsys,
                                                          monkeypatch):
    for module, name in ((census_control, "run_gate_control"), (census_control.census, "load_census"),
                         (byterec, "run_byterec")):
        monkeypatch.setattr(module, name, _no_work)
    main_of = {"census_control": census_control._main, "byterec": byterec._main}.get(command)
    if command == "funnel":
        from mmoe_annotated.experiments import funnel

        monkeypatch.setattr(funnel, "run_funnel", _no_work)
        monkeypatch.setattr(funnel, "load_hillstrom", _no_work)
        main_of = funnel._main
    argv = [a.format(tmp=tmp_path, file=a_file) for a in argv]
    _usage_error(capsys, lambda: main_of(argv), argument)


# ---------------------------------------------------------------------------
# census: reruns killed part-way, undefined AUCs
# ---------------------------------------------------------------------------

def _census(out, data_dir, *extra) -> int:
    return main(["census", "--out", str(out), "--data", str(data_dir), "--epochs", "1", "--models", "mmoe",
                 "--group", "1", "--no-progress", *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A finished census run of seeds 0 and 1, with its summary and figures."""
    out = tmp_path_factory.mktemp("census") / "run"
    assert _census(out, data_dir, "--seeds", "2") == 0
    assert {"summary.csv", "figure_auc.png", "figure_gates.png"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "run.json").read_text())["finished"] is True
    return out


def test_a_rerun_killed_after_its_first_seed_leaves_no_earlier_summary(finished, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    real = study.run_census

    def killed_after_first_seed(exp, data, on_seed, **kwargs):
        def first_then_kill(*tables):
            on_seed(*tables)
            raise KeyboardInterrupt
        return real(exp, data, on_seed=first_then_kill, **kwargs)

    monkeypatch.setattr(study, "run_census", killed_after_first_seed)
    with pytest.raises(KeyboardInterrupt):
        _census(out, data_dir, "--seeds", "4", "--resume")
    names = {p.name for p in out.iterdir()}
    assert not names & {"summary.csv", "figure_auc.png", "figure_gates.png"}, names
    record = json.loads((out / "run.json").read_text())
    assert record["finished"] is False and record["seeds_done"] == 3


def test_a_resumed_run_is_unfinished_from_its_start(finished, data_dir, tmp_path, monkeypatch):
    """Killed before its first seed is written, a resumed run's record no longer says finished."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(study, "run_census", killed)
    with pytest.raises(KeyboardInterrupt):
        _census(out, data_dir, "--seeds", "3", "--resume")
    assert json.loads((out / "run.json").read_text())["finished"] is False
    with pytest.raises(ValueError, match="did not finish"):
        merge_census_runs([out], tmp_path / "merged", "x")


def test_a_new_run_clears_files_an_earlier_run_left(data_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = pd.DataFrame({"seed": [7]})
    stale.to_csv(out / "results.csv", index=False)  # no run.json: not a run to resume, not this run's
    (out / "figure_gates.png").write_text("an earlier run")
    assert _census(out, data_dir, "--seeds", "1", "--models", "shared_bottom") == 0
    assert set(pd.read_csv(out / "results.csv")["seed"]) == {0}
    assert not (out / "figure_gates.png").exists()  # no MMoE in this run: no gate figure


def _results(valid_auc: float) -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for split in ("valid", "test"):
            for task, role in (("income", "main"), ("marital", "aux")):
                rows.append({"model": "mmoe", "group": 1, "seed": seed, "task": task, "role": role, "split": split,
                             "auc": valid_auc if split == "valid" and role == "main" else 0.7 + seed / 10})
    return pd.DataFrame(rows)


def test_an_undefined_validation_auc_is_undefined_in_the_summary(capsys):
    summary = study.summarize(_results(float("nan")))
    assert summary["best_on_valid"].isna().all() and np.allclose(summary["mean"], 0.75)
    census_cli._print_undefined(_results(float("nan")))
    out = capsys.readouterr().out
    assert "undefined: valid AUC of income (mmoe, group 1, seeds [0, 1]): the valid split holds one class" in out
    defined = study.summarize(_results(0.6))
    assert (defined["best_on_valid"] == 0.7).all()  # seed 0 first among equal validation AUCs


# ---------------------------------------------------------------------------
# merge: one protocol, finished parts
# ---------------------------------------------------------------------------

def _shifted_copy(src, dst, seeds: int = 2, **settings):
    """``src`` as another part: its seeds moved past ``src``'s, ``settings`` changed in its record."""
    shutil.copytree(src, dst)
    for name in ("results", "gates", "curves"):
        table = pd.read_csv(dst / f"{name}.csv")
        table["seed"] += seeds
        table.to_csv(dst / f"{name}.csv", index=False)
    record = json.loads((dst / "run.json").read_text())
    record["settings"].update(first_seed=seeds, **settings)
    (dst / "run.json").write_text(json.dumps(record))
    return dst


def test_merge_refuses_parts_that_differ_in_any_setting(finished, tmp_path):
    other = _shifted_copy(finished, tmp_path / "other", search_seeds=5)
    with pytest.raises(ValueError, match="differ in the training setting 'search_seeds'.*--column search_seeds"):
        merge_census_runs([finished, other], tmp_path / "merged", "x")
    merge_census_runs([finished, other], tmp_path / "merged", "x", columns=["search_seeds"])
    results = pd.read_csv(tmp_path / "merged" / "x.csv.gz")
    assert results.groupby("search_seeds")["seed"].unique().map(sorted).to_dict() == {2: [0, 1], 5: [2, 3]}
    same = _shifted_copy(finished, tmp_path / "same")
    merge_census_runs([finished, same], tmp_path / "merged", "y")  # what a part covers may differ


def test_merge_refuses_a_part_whose_tables_its_record_does_not_describe(finished, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(finished, part)
    results = pd.read_csv(part / "results.csv")
    results[results["seed"] == 0].to_csv(part / "results.csv", index=False)  # seed 1 lost, record says 2 seeds
    with pytest.raises(ValueError, match=r"did not finish as its run.json says: it names seeds \[0, 1\], "
                                         r"results.csv holds \[0\]"):
        merge_census_runs([part], tmp_path / "merged", "x")


def test_merge_leaves_no_earlier_merge_file_under_its_name(finished, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "x_search.csv.gz").write_text("an earlier merge")
    merge_census_runs([finished], out, "x")
    assert not (out / "x_search.csv.gz").exists()  # this merge has no search table
    assert (out / "x.json").is_file()
