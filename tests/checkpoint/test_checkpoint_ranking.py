"""Format 3: a calibrator and fusion weights travel in the checkpoint under its checksum; a
format-2 file (without them) still loads."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.checkpoint import verify as ckpt_verify


@pytest.fixture(scope="module")
def model_and_data():
    df = mm.load_example(n_rows=500, seed=4)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES).fit(df)
    model = mm.MMoE(mm.ModelConfig(enc.features, expert_hidden=(8,), tower_hidden=(4,), seed=1))
    preds = mm.predict(model, df, encoder=enc)
    labels = df[list(mm.TASKS)].to_numpy(np.float64)
    return model, enc, df, preds, labels


def test_format_version_is_3_and_reads_2():
    assert mm.checkpoint.FORMAT_VERSION == 3 and mm.checkpoint.READABLE_VERSIONS == (2, 3)


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_calibrator_and_fusion_round_trip(tmp_path, model_and_data, method):
    model, enc, df, preds, labels = model_and_data
    cal = mm.Calibrator(method).fit(preds, labels, model.config.task_names)
    fusion = mm.Fusion.of("product", finish=0.4, like=0.6)
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc, calibrator=cal, fusion=fusion)
    loaded = mm.load_checkpoint(path)
    assert loaded.fusion == fusion
    assert loaded.calibrator.to_dict() == cal.to_dict()
    again = mm.predict(loaded.model, df, encoder=loaded.encoder)
    assert np.array_equal(loaded.calibrator.transform(again), cal.transform(preds))
    ranked = mm.rank(loaded.fusion, again, loaded.config.task_names, df["uid"], items=df["item_id"])
    assert ranked.equals(mm.rank(fusion, preds, model.config.task_names, df["uid"], items=df["item_id"]))


def test_without_them_both_are_none(tmp_path, model_and_data):
    model, enc, *_ = model_and_data
    loaded = mm.load_checkpoint(mm.save_checkpoint(tmp_path / "m.ckpt", model, enc))
    assert loaded.calibrator is None and loaded.fusion is None


def test_a_format_2_file_still_loads(tmp_path, model_and_data):
    """What release 0.2 wrote: format 2, no calibrator or fusion keys, its checksum over that manifest."""
    model, enc, df, preds, _ = model_and_data
    path = mm.save_checkpoint(tmp_path / "old.ckpt", model, enc)
    payload = torch.load(path, weights_only=True)
    manifest = json.loads(payload["manifest"])
    del manifest["calibrator"], manifest["fusion"]
    manifest["format_version"] = 2
    payload["manifest"] = json.dumps(manifest)
    payload["sha256"] = ckpt_verify.digest(payload["manifest"], payload["state_dict"])
    torch.save(payload, path)
    loaded = mm.load_checkpoint(path)
    assert loaded.calibrator is None and loaded.fusion is None
    assert np.array_equal(mm.predict(loaded.model, df, encoder=loaded.encoder), preds)


def test_wrong_tasks_are_refused(tmp_path, model_and_data):
    model, enc, df, preds, labels = model_and_data
    cal = mm.Calibrator().fit(preds[:, :1], labels[:, :1], ["finish"])
    with pytest.raises(ValueError, match="fitted for tasks"):
        mm.save_checkpoint(tmp_path / "m.ckpt", model, enc, calibrator=cal)
    with pytest.raises(ValueError, match="watch"):
        mm.save_checkpoint(tmp_path / "m.ckpt", model, enc, fusion=mm.Fusion.of("sum", watch=1.0))
    with pytest.raises(TypeError, match="fitted Calibrator"):
        mm.save_checkpoint(tmp_path / "m.ckpt", model, enc, calibrator=mm.Calibrator())


def test_a_changed_fusion_weight_is_refused(tmp_path, model_and_data):
    model, enc, *_ = model_and_data
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc, fusion=mm.Fusion.of("sum", finish=0.5, like=0.5))
    payload = torch.load(path, weights_only=True)
    payload["manifest"] = payload["manifest"].replace('"like": 0.5', '"like": 0.9')
    torch.save(payload, path)
    with pytest.raises(mm.CheckpointError, match="checksum"):
        mm.load_checkpoint(path)
