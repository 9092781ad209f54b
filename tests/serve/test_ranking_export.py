"""Chapter 11's calibrator and fusion weights in an export: written beside the graph under the
manifest's checksums, applied on loading with Calibrator.transform's and Fusion.score's numbers
(each format), served over real HTTP, carried from a checkpoint; a format-1 export reads as
before."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

import mmoe_annotated as mm
from mmoe_annotated.serve import ExportError, ServiceProcess, from_checkpoint, load_export
from mmoe_annotated.serve.manifest import CALIBRATOR, FUSION, MANIFEST, manifest_digest

from .common import data, json_rows, trained, unseen

pytestmark = pytest.mark.filterwarnings("ignore:column .* not in the training vocabulary:RuntimeWarning")

TASKS = ("finish", "like")
TOLERANCE = 1e-6
PARITY = 1e-5  # the exported graph's parity with mm.predict (test_export)
FUSION_WEIGHTS = mm.Fusion.of("product", finish=0.7, like=0.3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The model, its encoder, calibrators of both methods fitted on validation rows, and rows
    to score (IDs the encoder never saw included)."""
    df, train, enc = data(3000)
    fit, valid = mm.split_by_row(train, 0.75)
    model = trained("mmoe", fit, enc)
    p_valid = mm.predict(model, valid, encoder=enc)  # (M, T)
    y_valid = valid[list(TASKS)].to_numpy()
    calibrators = {m: mm.Calibrator(m).fit(p_valid, y_valid, TASKS) for m in ("platt", "isotonic")}
    rows = pd.concat([df.tail(300), unseen(df)], ignore_index=True)
    return model, enc, calibrators, rows, mm.predict(model, rows, encoder=enc)


@pytest.fixture(scope="module")
def folders(setup, tmp_path_factory):
    """{method: folder}: the model exported in both formats with that calibrator and fusion."""
    model, enc, calibrators, _, _ = setup
    root = tmp_path_factory.mktemp("ranked")
    return {m: mm.export(model, enc, root / m, format=("onnx", "torch"), calibrator=c, fusion=FUSION_WEIGHTS)
            for m, c in calibrators.items()}


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_loaded_exports_calibrate_and_fuse_as_in_process(setup, folders, method, runtime):
    _, _, calibrators, rows, eager = setup
    exported = load_export(folders[method], runtime)
    assert exported.calibrator.to_dict() == calibrators[method].to_dict()
    assert exported.fusion == FUSION_WEIGHTS
    expected = calibrators[method].transform(eager)  # (M, T)
    assert np.abs(expected - eager).max() > 1e-3  # the calibrator does move the numbers
    raw = exported.predict(rows, calibrated=False)  # the runtime's own probabilities
    got = exported.predict(rows)
    assert got.shape == expected.shape and np.abs(raw - eager).max() <= PARITY
    # the calibrator's very numbers on the runtime's output, fused by Fusion.score ...
    assert np.abs(got - calibrators[method].transform(raw)).max() <= 1e-12
    assert np.abs(exported.fused(got) - FUSION_WEIGHTS.score(got, TASKS)).max() <= 1e-12
    # ... and on mm.predict's: the torch program computes the eager float32 numbers, so within
    # 1e-6; onnxruntime's differ by a float32 rounding, which a steep stretch of the map (an
    # isotonic step) magnifies, so there only the parity above holds
    worst = float(np.abs(got - expected).max())
    fused = float(np.abs(exported.fused(got) - FUSION_WEIGHTS.score(expected, TASKS)).max())
    print(f"{method} {runtime}: max |exported - calibrated eager| = {worst:.2e}, fused {fused:.2e}")
    if runtime == "torch":
        assert max(worst, fused) <= TOLERANCE
    meta = exported.metadata()
    assert (meta["format_version"], meta["calibrated"], meta["calibration"], meta["fusion"]) == (
        2, True, method, FUSION_WEIGHTS.to_dict())


def test_the_manifest_lists_them_with_their_checksums(folders):
    written = json.loads((folders["platt"] / MANIFEST).read_text())["manifest"]
    assert written["format_version"] == 2
    for name in (CALIBRATOR, FUSION):
        data_ = (folders["platt"] / name).read_bytes()
        assert written["files"][name]["bytes"] == len(data_)
    assert json.loads((folders["platt"] / FUSION).read_bytes()) == FUSION_WEIGHTS.to_dict()


def test_an_edited_calibrator_is_refused(folders, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(folders["platt"], folder)
    d = json.loads((folder / CALIBRATOR).read_text())
    d["params"]["like"]["a"] += 1.0
    (folder / CALIBRATOR).write_text(json.dumps(d, sort_keys=True))
    with pytest.raises(ExportError, match=r"calibrator\.json: is damaged"):
        load_export(folder)


def test_without_them_nothing_changes_and_a_stale_file_goes(setup, folders, tmp_path):
    model, enc, calibrators, rows, eager = setup
    folder = mm.export(model, enc, tmp_path / "plain", calibrator=calibrators["platt"], fusion=FUSION_WEIGHTS)
    mm.export(model, enc, folder)  # replaced by an export without them
    assert not (folder / CALIBRATOR).exists() and not (folder / FUSION).exists()
    exported = load_export(folder)
    assert exported.calibrator is None and exported.fusion is None and exported.fused(eager) is None
    assert np.abs(exported.predict(rows) - eager).max() <= 1e-5
    assert (exported.metadata()["calibrated"], exported.metadata()["fusion"]) == (False, None)


def test_a_format_1_export_still_loads_as_before(setup, tmp_path):
    model, enc, _, rows, eager = setup
    folder = mm.export(model, enc, tmp_path / "v1", format="torch")
    written = json.loads((folder / MANIFEST).read_text())
    written["manifest"]["format_version"] = 1  # what the earlier version wrote: no calibrator, no fusion
    written["sha256"] = manifest_digest(written["manifest"])
    (folder / MANIFEST).write_text(json.dumps(written))
    exported = load_export(folder)
    assert exported.metadata()["format_version"] == 1 and exported.calibrator is None
    assert np.abs(exported.predict(rows) - eager).max() <= 1e-5


def test_bad_calibrators_and_fusions_are_refused(setup, tmp_path):
    model, enc, calibrators, _, _ = setup
    with pytest.raises(TypeError, match="fitted Calibrator"):
        mm.export(model, enc, tmp_path / "a", calibrator=mm.Calibrator("platt"))
    other = mm.Calibrator.from_dict(dict(calibrators["platt"].to_dict(), task_names=["ctr", "cvr"]))
    with pytest.raises(ValueError, match="tasks"):
        mm.export(model, enc, tmp_path / "b", calibrator=other)
    with pytest.raises(ValueError, match="'click'"):
        mm.export(model, enc, tmp_path / "c", fusion=mm.Fusion.of(click=1.0))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_checkpoint_carries_them_into_the_export(setup, tmp_path):
    model, enc, calibrators, rows, eager = setup
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc, calibrator=calibrators["isotonic"],
                              fusion=FUSION_WEIGHTS)
    exported = from_checkpoint(path, "torch")
    expected = calibrators["isotonic"].transform(eager)
    assert np.abs(exported.predict(rows) - expected).max() <= TOLERANCE
    assert exported.fusion == FUSION_WEIGHTS and exported.metadata()["calibration"] == "isotonic"


def test_the_service_returns_calibrated_probabilities_and_the_fused_score(setup, folders):
    _, _, calibrators, rows, eager = setup
    expected = calibrators["platt"].transform(eager)  # (M, T)
    fused = FUSION_WEIGHTS.score(expected, TASKS)  # (M,)
    with ServiceProcess(folders["platt"], "--threads", "1") as service:
        with httpx.Client(base_url=service.url, timeout=30) as client:
            meta = client.get("/metadata").json()
            reply = client.post("/score", json={"rows": json_rows(rows)})
    assert service.process.returncode == 0 and "Traceback" not in service.stderr, service.stderr
    assert (meta["calibrated"], meta["calibration"], meta["fusion"]) == (True, "platt", FUSION_WEIGHTS.to_dict())
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["tasks"], body["calibrated"], body["fused"]) == (list(TASKS), True, True)
    got = np.array([[row[t] for t in TASKS] for row in body["scores"]])
    assert np.abs(got - expected).max() <= PARITY
    assert np.abs(np.array([row["score"] for row in body["scores"]]) - fused).max() <= PARITY
    in_process = load_export(folders["platt"], "onnx").predict(rows)  # what the service loaded
    assert np.abs(got - in_process).max() <= TOLERANCE
    assert np.abs(np.array([row["score"] for row in body["scores"]])
                  - FUSION_WEIGHTS.score(in_process, TASKS)).max() <= TOLERANCE
