"""The funnel study: a tiny end-to-end run of ``python -m mmoe_annotated.experiments.funnel`` on a
sample CSV (no network), the label set-ups of each model, and the declared family."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmoe_annotated.data import hillstrom
from mmoe_annotated.experiments import funnel
from tests.data.test_hillstrom import sample_lines, write_csv


@pytest.fixture
def sample(tmp_path):
    write_csv(tmp_path / "data", sample_lines(1500, seed=3))
    return tmp_path / "data"


def test_each_model_trains_on_its_labels(sample):
    frames = funnel.split(hillstrom.load_hillstrom(path=sample), seed=0)
    assert [len(f) for f in frames.values()] == [900, 300, 300]
    naive = funnel._labelled(frames, "naive_cvr")
    assert (naive["fit"]["visit"] == 1).all() and len(naive["test"]) == 300  # scored on every row
    masked = funnel._labelled(frames, "mmoe_masked")["fit"]
    assert masked.loc[masked["visit"] == 0, "conversion"].isna().all()
    assert masked.loc[masked["visit"] == 1, "conversion"].notna().all()
    entire = funnel._labelled(frames, "ple_entire")["fit"]
    assert entire["conversion"].notna().all() and (entire["ctcvr"] == entire["conversion"]).all()
    with pytest.raises(ValueError, match="unknown model 'dnn'"):
        funnel.model_setup("dnn", None, 0)


def test_command_end_to_end(sample, tmp_path, capsys):
    out = tmp_path / "out"
    funnel._main(["--out", str(out), "--seeds", "1", "--models", "naive_cvr", "esmm", "mmoe_masked",
                  "--path", str(sample)])
    meta = json.loads((out / "funnel_runs.json").read_text())
    runs = pd.DataFrame(meta["runs"])
    assert list(runs["model"]) == ["naive_cvr", "esmm", "mmoe_masked"] and meta["seeds"] == [0]
    assert meta["command"].startswith("python -m mmoe_annotated.experiments.funnel --out DIR --seeds 1")
    assert {"package_version", "commit", "torch_version", "device"} <= set(meta)
    esmm = runs.set_index("model").loc["esmm"]
    assert 0 < esmm["ctcvr_mean"] < 1 and np.isfinite(esmm["ctcvr_auc_all"])
    assert np.isnan(runs.set_index("model").loc["naive_cvr", "visit_auc"])
    assert "esmm" in capsys.readouterr().out


def test_the_experiments_command_runs_funnel(sample, tmp_path):
    from mmoe_annotated.experiments.cli import main

    out = tmp_path / "cli"
    assert main(["funnel", "--out", str(out), "--seeds", "1", "--models", "esmm", "--path", str(sample)]) == 0
    assert json.loads((out / "funnel_runs.json").read_text())["complete"]


def test_the_family_pairs_by_seed_and_decides_with_holm():
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(10):
        for m in funnel.MODELS:
            base = 0.6 + 0.01 * rng.standard_normal()
            rows.append({"seed": seed, "model": m, "cvr_auc_all": base + (0.05 if m == "esmm" else 0),
                         "cvr_auc_visitors": base, "ctcvr_auc_all": base})
    table = funnel.primary_table(pd.DataFrame(rows))
    assert list(table.index) == list(funnel.PRIMARY)
    assert table.loc["ESMM - naive CVR: CVR AUC on every row", "decision"] == "a > b"
    assert (table["p_holm"] >= table["p"]).all()
