"""Chapter 7's fair comparison (mmoe_annotated.experiments.byterec): the protocol on a few rows,
the matched widths, the control's copied task, the command, and the shipped run."""
from __future__ import annotations

import json

import pytest

import mmoe_annotated as mm
from mmoe_annotated.experiments import byterec as B


@pytest.fixture(scope="module")
def small():
    return B.prepare(rows=1500)


def test_the_wide_bottom_matches_mmoes_parameters(small):
    features = small["encoder"].features
    mmoe = mm.build_model(*B.model_config("mmoe", features, 0)).num_parameters(include_embedding=False)
    wide = mm.build_model(*B.model_config("shared_bottom_wide", features, 0)).num_parameters(include_embedding=False)
    narrow = mm.build_model(*B.model_config("shared_bottom", features, 0)).num_parameters(include_embedding=False)
    assert abs(wide - mmoe) / mmoe < 0.005 and narrow < 0.5 * mmoe


def test_one_seed_scores_every_model_and_task_from_its_best_epoch(small):
    df = B.run_seed(0, small, models=("mmoe", "single_task", "mmoe_control"))
    assert list(zip(df["model"], df["task"])) == [
        ("mmoe", "finish"), ("mmoe", "like"), ("single_task", "finish"), ("single_task", "like"),
        ("mmoe_control", "finish"), ("mmoe_control", B.COPY)]
    assert (df["best_epoch"] <= df["epochs_run"]).all() and (df["epochs_run"] <= B.MAX_EPOCHS).all()
    mmoe = df[df["model"] == "mmoe"]
    assert mmoe["gate_distance"].between(0, 1).all() and df[df["model"] == "single_task"]["gate_distance"].isna().all()
    control = df[df["model"] == "mmoe_control"]
    assert control["best_epoch"].nunique() == 1  # identical labels peak together


def test_the_command_writes_results_and_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "ROWS", 1500)
    B._main(["--out", str(tmp_path), "--seeds", "1", "--models", "omoe"])
    meta = json.loads((tmp_path / "byterec_runs.json").read_text())
    assert meta["command"] == "python -m mmoe_annotated.experiments.byterec --out DIR --seeds 1 --models omoe"
    assert {"package_version", "commit", "torch_version", "device", "machine"} <= set(meta)
    assert meta["format_version"] == B.FORMAT_VERSION


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(SystemExit):
        B._main(["--out", str(tmp_path), "--seeds", "0"])
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        B._main(["--out", str(tmp_path / "file")])


def test_the_shipped_run_covers_every_model_and_seed():
    df, meta = B.load_byterec_runs()
    assert set(df["model"]) == set(B.MODELS)
    assert df.groupby("model")["seed"].nunique().min() >= 10
    assert meta["package_version"] and meta["commit"] != "unknown"
    stopped = (df["epochs_run"] < B.MAX_EPOCHS).mean()
    assert stopped >= 0.9  # the cap binds rarely
