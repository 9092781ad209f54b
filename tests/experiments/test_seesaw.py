"""The seesaw runs (mmoe_annotated.experiments.seesaw) and the results the package ships."""
from __future__ import annotations

import json

import numpy as np
import pytest

import mmoe_annotated as mm
from mmoe_annotated.experiments import report
from mmoe_annotated.experiments.seesaw import SEESAW_MODELS, run_seesaw, seesaw_model_config


def test_model_shapes_are_comparable():
    counts = {k: mm.build_model(k, seesaw_model_config(k)).num_parameters() for k in SEESAW_MODELS}
    assert counts["cgc"] == pytest.approx(counts["mmoe"], rel=0.1)  # the same 8 experts, one more gate
    assert mm.build_model("cgc", seesaw_model_config("cgc")).num_experts == 8
    with pytest.raises(ValueError, match="unknown model kind"):
        seesaw_model_config("omoe2")


def test_a_tiny_run_is_paired_and_deterministic():
    tiny = dict(models=("mmoe", "ple"), seeds=(0,), train_rows=600, test_rows=100,
                train=mm.TrainConfig(epochs=2, batch_size=32, optimizer="adam", embedding_l2=0.0, progress=False,
                                     balance_lr=0.2),
                balancing=("fixed", "uncertainty"))
    a, b = run_seesaw(**tiny), run_seesaw(**tiny)
    assert list(a.columns) == ["model", "balancing", "seed", "task1_mse", "task2_mse"] and len(a) == 4
    np.testing.assert_array_equal(a[["task1_mse", "task2_mse"]].to_numpy(), b[["task1_mse", "task2_mse"]].to_numpy())
    assert np.isfinite(a[["task1_mse", "task2_mse"]].to_numpy()).all()
    # the balancing changes the run (same data, same initial weights)
    fixed, unc = a[a.balancing == "fixed"], a[a.balancing == "uncertainty"]
    assert np.abs(fixed["task1_mse"].to_numpy() - unc["task1_mse"].to_numpy()).max() > 1e-3


def test_shipped_seesaw_runs():
    df, meta = report.load_sweep("seesaw_runs")
    assert set(df["model"]) == set(SEESAW_MODELS)
    assert set(df["balancing"]) == {"fixed", "uncertainty", "gradnorm"}
    assert df.groupby(["model", "balancing"]).size().min() == df["seed"].nunique() >= 5
    assert meta["command"].startswith("python -m mmoe_annotated.experiments.seesaw")
    assert (df[["task1_mse", "task2_mse"]] > 0.01 * 0.5).all().all()  # above the noise floor


def test_the_shipped_record_names_the_output_folder_dir(tmp_path):
    from mmoe_annotated.experiments.seesaw import _main, load_seesaw_runs

    df, meta = load_seesaw_runs()
    assert meta["command"] == "python -m mmoe_annotated.experiments.seesaw --out DIR --seeds 10"
    assert len(df) == len(report.load_sweep("seesaw_runs")[0])
    _main(["--out", str(tmp_path / "out"), "--seeds", "1", "--train-rows", "300", "--epochs", "1",
           "--balancing", "fixed"])
    written = json.loads((tmp_path / "out" / "seesaw_runs.json").read_text())
    assert written["command"].startswith("python -m mmoe_annotated.experiments.seesaw --out DIR --seeds 1")
    assert str(tmp_path) not in written["command"]
