"""Checkpoints: round trip to identical predictions, atomic writes, no unpickling of objects,
and clear errors for truncated files, other configs and other versions."""
from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated import checkpoint as ckpt_mod
from mmoe_annotated.checkpoint import save as ckpt_save, verify as ckpt_verify


@pytest.fixture(scope="module")
def trained():
    df = mm.load_example(n_rows=600, seed=3)
    train, test = mm.split_by_row(df)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES).fit(train)
    cfg = mm.ModelConfig(enc.features, expert_hidden=(16, 8), gate_hidden=(8,), tower_hidden=(8,), seed=5)
    model = mm.MMoE(cfg)
    mm.fit(model, train, mm.TrainConfig(epochs=2, batch_size=64, progress=False), encoder=enc)
    return model, enc, test


@pytest.mark.parametrize("kind", sorted(mm.MODELS))
def test_round_trip_gives_identical_predictions(tmp_path, trained, kind):
    model, enc, test = trained
    if kind != "mmoe":  # the other kinds, freshly built: their weights still round-trip exactly
        model = mm.build_model(kind, model.config)
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc, extra={"note": "unit test", "auc": 0.5})
    loaded = mm.load_checkpoint(path)
    assert loaded.kind == kind and type(loaded.model) is type(model)
    assert loaded.config == model.config
    assert loaded.encoder.to_dict() == enc.to_dict()
    assert loaded.package_version == mm.__version__
    assert loaded.extra == {"note": "unit test", "auc": 0.5}
    assert not loaded.model.training
    before = mm.predict(model, test, encoder=enc)
    after = mm.predict(loaded.model, test, encoder=loaded.encoder)
    assert np.array_equal(before, after)  # bit-identical, not just close
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_load_into_a_model_of_the_same_config(tmp_path, trained):
    model, enc, test = trained
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc)
    fresh = mm.MMoE(model.config)
    assert not np.array_equal(mm.predict(fresh, test, encoder=enc), mm.predict(model, test, encoder=enc))
    out = mm.load_checkpoint(path, model=fresh)
    assert out.model is fresh
    assert np.array_equal(mm.predict(fresh, test, encoder=enc), mm.predict(model, test, encoder=enc))


def test_without_encoder(tmp_path, trained):
    model, _, _ = trained
    loaded = mm.load_checkpoint(mm.save_checkpoint(tmp_path / "m.ckpt", model))
    assert loaded.encoder is None


def test_file_is_plain_data(tmp_path, trained):
    """The config and the encoder are JSON inside the file, readable without this package."""
    model, enc, _ = trained
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc)
    payload = torch.load(path, weights_only=True)
    manifest = json.loads(payload["manifest"])
    assert manifest["kind"] == "mmoe" and manifest["format_version"] == ckpt_mod.FORMAT_VERSION
    assert manifest["encoder"]["sparse"] == list(mm.SPARSE_FEATURES)


# ---------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------

def test_crash_mid_write_keeps_the_old_checkpoint(tmp_path, trained, monkeypatch):
    model, enc, test = trained
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc)
    good = path.read_bytes()
    real_save = torch.save

    def crash(obj, fh, *a, **k):  # write a few bytes, then die like a killed process would
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(ckpt_save.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        mm.save_checkpoint(path, mm.OMoE(model.config), enc)
    monkeypatch.setattr(ckpt_save.torch, "save", real_save)
    assert path.read_bytes() == good  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]  # no temporary file left behind
    assert mm.load_checkpoint(path).kind == "mmoe"


def test_save_replaces_in_place(tmp_path, trained):
    model, enc, _ = trained
    path = tmp_path / "m.ckpt"
    mm.save_checkpoint(path, model, enc)
    mm.save_checkpoint(path, mm.SharedBottom(model.config), enc)
    assert mm.load_checkpoint(path).kind == "shared_bottom"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]


# ---------------------------------------------------------------------------
# Loading never runs code
# ---------------------------------------------------------------------------

class _Boom:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (open, (self.flag, "w"))


def test_refuses_to_unpickle_objects(tmp_path):
    flag = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"manifest": "{}", "state_dict": {}, "payload": _Boom(str(flag))}, evil)
    with pytest.raises(mm.CheckpointError, match=r"holds a Python object \(\w+\.open\).*refusing") as info:
        mm.load_checkpoint(evil)
    assert str(evil) in str(info.value)
    assert "weights_only=False" not in str(info.value)  # never advise the unsafe way out
    assert not flag.exists()


def test_raw_pickle_is_refused(tmp_path):
    flag = tmp_path / "code_ran"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Boom(str(flag)), protocol=2))
    with pytest.raises(mm.CheckpointError, match="refusing to unpickle"):
        mm.load_checkpoint(evil)
    assert not flag.exists()


# ---------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------

@pytest.fixture()
def saved(tmp_path, trained):
    model, enc, _ = trained
    return mm.save_checkpoint(tmp_path / "m.ckpt", model, enc), model, enc


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(saved, keep):
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(mm.CheckpointError, match="empty|truncated or corrupt|damaged") as info:
        mm.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_flipped_bytes_in_weights_are_caught(tmp_path, trained):
    model, enc, _ = trained
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc)
    # Rewrite one weight inside the (uncompressed) zip so that the file still unpickles.
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["state_dict"]))
    payload["state_dict"][name] = payload["state_dict"][name] + 1.0
    torch.save(payload, path)
    with pytest.raises(mm.CheckpointError, match="damaged.*checksum"):
        mm.load_checkpoint(path)


def _rewrite_manifest(path, **changes):
    """What another version or a buggy writer would save: a changed manifest with a checksum that fits it."""
    payload = torch.load(path, weights_only=True)
    manifest = json.loads(payload["manifest"])
    manifest.update(changes)
    payload["manifest"] = json.dumps(manifest)
    payload["sha256"] = ckpt_verify.digest(payload["manifest"], payload["state_dict"])
    torch.save(payload, path)


def test_newer_format_says_upgrade(saved):
    path, _, _ = saved
    _rewrite_manifest(path, format_version=ckpt_mod.FORMAT_VERSION + 1, package_version="9.0.0")
    with pytest.raises(mm.CheckpointError, match=rf"format {ckpt_mod.FORMAT_VERSION + 1} by mmoe_annotated 9\.0\.0.*upgrade"):
        mm.load_checkpoint(path)


def test_older_format_says_resave(saved):
    path, _, _ = saved
    _rewrite_manifest(path, format_version=0, package_version="0.0.1")
    with pytest.raises(mm.CheckpointError, match=r"load it with mmoe_annotated 0\.0\.1 and save it again"):
        mm.load_checkpoint(path)


def test_other_config_names_the_differences(saved):
    path, model, _ = saved
    other = mm.MMoE(mm.ModelConfig(model.config.features, expert_hidden=(16, 4), num_experts=4,
                                   gate_hidden=(8,), tower_hidden=(8,)))
    with pytest.raises(mm.CheckpointError, match="another config") as info:
        mm.load_checkpoint(path, model=other)
    assert "num_experts: checkpoint 3 vs model 4" in str(info.value)
    assert "expert_hidden" in str(info.value)


def test_other_kind(saved):
    path, model, _ = saved
    with pytest.raises(mm.CheckpointError, match="holds a 'mmoe' model, but the model given is a 'omoe'"):
        mm.load_checkpoint(path, model=mm.OMoE(model.config))


def test_weights_that_do_not_fit_the_config(saved):
    path, model, _ = saved
    small = mm.ModelConfig(model.config.features, expert_hidden=(4,), gate_hidden=(), tower_hidden=())
    _rewrite_manifest(path, config=small.to_dict())
    with pytest.raises(mm.CheckpointError, match="do not fit its config"):
        mm.load_checkpoint(path)


def test_damaged_encoder(saved):
    path, _, enc = saved
    state = enc.to_dict()
    del state["scalers"]
    _rewrite_manifest(path, encoder=state)
    with pytest.raises(mm.CheckpointError, match="feature encoder"):
        mm.load_checkpoint(path)


def test_bare_state_dict_is_explained(tmp_path, trained):
    model, _, _ = trained
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(mm.CheckpointError, match="load_state_dict"):
        mm.load_checkpoint(path)


@pytest.mark.parametrize("make, match", [
    (lambda p: p, "no such checkpoint file"),
    (lambda p: (p.mkdir(), p)[1], "is a directory"),
    (lambda p: (p.write_bytes(b""), p)[1], "empty"),
    (lambda p: (p.write_text("37448\t115\n"), p)[1], "not a checkpoint written by save_checkpoint"),
    (lambda p: (zipfile.ZipFile(p, "w").close(), p)[1], "truncated or corrupt"),
])
def test_not_a_checkpoint(tmp_path, make, match):
    path = make(tmp_path / "x.ckpt")
    with pytest.raises(mm.CheckpointError, match=match) as info:
        mm.load_checkpoint(path)
    assert info.value.path == str(path)


def test_save_argument_errors(tmp_path, trained):
    model, enc, _ = trained
    with pytest.raises(TypeError, match="can only save"):
        mm.save_checkpoint(tmp_path / "m.ckpt", torch.nn.Linear(2, 2))
    other = mm.FeatureEncoder(["uid"]).fit(mm.load_example(100))
    with pytest.raises(ValueError, match="encoder does not match the model"):
        mm.save_checkpoint(tmp_path / "m.ckpt", model, other)
    with pytest.raises(FileNotFoundError, match="create the directory first"):
        mm.save_checkpoint(tmp_path / "nope" / "m.ckpt", model, enc)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        mm.save_checkpoint(tmp_path, model, enc)
    with pytest.raises(ValueError, match="JSON"):
        mm.save_checkpoint(tmp_path / "m.ckpt", model, enc, extra={"x": object()})
    assert not (tmp_path / "m.ckpt").exists()


def test_cuda_device_absent_is_plain(saved):
    path, _, _ = saved
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        mm.load_checkpoint(path, device="cuda")
