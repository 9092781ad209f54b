"""Chapter 11's runs: the shipped tables and their provenance, and one small seed end to end
(calibrators fitted on validation rows, the frontier's chosen weighting per form and split)."""
from __future__ import annotations

import numpy as np
import pytest

from mmoe_annotated.data import TASKS
from mmoe_annotated.experiments import ranking
from mmoe_annotated.experiments.byterec import prepare


def test_shipped_runs_load_with_provenance():
    tables, meta = ranking.load_ranking_runs()
    for key in ("package_version", "commit", "torch_version", "device", "command"):
        assert meta[key]
    assert meta["command"].startswith("python -m mmoe_annotated.experiments.ranking --out DIR")
    runs = tables["runs"]
    assert set(runs["model"]) == set(ranking.MODELS) and runs["seed"].nunique() == len(meta["seeds"]) >= 10
    assert len(runs) == runs["seed"].nunique() * len(ranking.MODELS) * len(TASKS)
    assert runs[["auc", "gauc", "ndcg@10"]].notna().all().all()
    front = tables["frontier"]
    chosen = front[front["chosen"]].groupby(["seed", "model", "form", "split"]).size()
    assert (chosen == 1).all() and len(chosen) == runs["seed"].nunique() * 2 * 2 * 2
    calib = tables["calibration"]
    assert set(calib["calibration"]) == {"none", "platt", "isotonic"}


def test_a_format_it_does_not_read_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ranking, "FORMAT_VERSION", ranking.FORMAT_VERSION + 1)
    with pytest.raises(ValueError, match="format version"):
        ranking.load_ranking_runs()


def test_one_small_seed_end_to_end(monkeypatch):
    data = prepare(rows=2000)
    monkeypatch.setattr(ranking, "STEPS", 5)
    out = ranking.run_seed(0, data, models=("mmoe",))
    runs = out["runs"]
    assert list(runs["task"]) == list(TASKS) and (runs["gauc_users"] > 0).all()
    front = out["frontier"]
    assert len(front) == 2 * 2 * 5 and front["chosen"].sum() == 4
    # the calibrators are fitted on validation rows only
    preds = ranking.train_and_predict("mmoe", 0, data)
    y_valid = data["valid"][list(TASKS)].to_numpy(np.float64)
    from mmoe_annotated.train.calibration import Calibrator

    cal = Calibrator("isotonic").fit(preds["valid"], y_valid, TASKS)
    assert cal.rows == len(data["valid"]) != len(data["test"])
    rows, bins = ranking._calibration_rows(y_valid, preds["valid"], data["test"][list(TASKS)].to_numpy(),
                                           preds["test"])
    assert {r["calibration"] for r in rows} == {"none", "platt", "isotonic"} and bins


def test_shipped_census_calibration_loads_with_provenance():
    table, meta = ranking.load_census_calibration()
    assert meta["command"] == "python -m mmoe_annotated.experiments.ranking --out DIR --census --seeds 10"
    assert meta["commit"] and meta["torch_version"] and meta["device"] == "cpu"
    assert set(table["calibration"]) == {"none", "platt", "isotonic"}
    assert set(table["task"]) == {"income", "never_married"} and table["seed"].nunique() == 10
    assert table["ece"].between(0, 1).all()
