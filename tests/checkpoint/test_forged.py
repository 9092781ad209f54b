"""Forged checkpoints are refused before the declared model is built, and pickled objects are named
as what they are, whichever of torch's two wordings refused them."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from torch.nn.modules.module import register_module_parameter_registration_hook

import mmoe_annotated as mm
from mmoe_annotated.checkpoint.verify import digest


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    df = mm.load_example(n_rows=300, seed=0)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim=4).fit(df)
    cfg = dict(expert_hidden=(8,), gate_hidden=(), tower_hidden=(4,))
    out = {}
    for kind in ("mmoe", "ple"):
        model = mm.build_model(kind, mm.ModelConfig(enc.features, **cfg))
        out[kind] = mm.save_checkpoint(tmp_path_factory.mktemp(kind) / "m.ckpt", model, enc)
    return out


def forge(src, dst, edit):
    """A checkpoint whose manifest ``edit`` changed, with the checksum recomputed by its public
    recipe: the file passes the checksum, so only the shape check can stop it (the encoder is
    left out: a checkpoint may hold none, and it would no longer feed the declared config)."""
    payload = torch.load(src, weights_only=True)
    manifest = json.loads(payload["manifest"])
    edit(manifest)
    manifest["encoder"] = None
    text = json.dumps(manifest)
    torch.save({"manifest": text, "state_dict": payload["state_dict"],
                "sha256": digest(text, payload["state_dict"])}, dst)
    return dst


@pytest.fixture
def built():
    """Every parameter created while the test runs, as ``(device type, values)``."""
    seen = []
    handle = register_module_parameter_registration_hook(
        lambda module, name, p: seen.append((p.device.type, p.numel())) if p is not None else None)
    yield seen
    handle.remove()


def _big_table(manifest):
    manifest["config"]["features"][0]["vocab_size"] = 20_000_000  # 80M values, 320 MB as float32


def test_a_declared_huge_table_is_refused_without_allocating_it(saved, tmp_path, built):
    path = forge(saved["mmoe"], tmp_path / "forged.ckpt", _big_table)
    assert os.path.getsize(path) < 100_000
    with pytest.raises(mm.CheckpointError, match=r"larger than the weights it holds.*nothing was built") as info:
        mm.load_checkpoint(path)
    assert info.value.path == str(path)
    assert not [n for device, n in built if device != "meta" and n >= 1_000_000], built  # no real table


def test_a_declared_deep_model_stops_building_at_the_files_tensors(saved, tmp_path, built):
    """A declared depth far beyond the stored tensors: the build stops after as many parameters as
    the file holds (one more), instead of building every level first."""
    held = len(torch.load(saved["ple"], weights_only=True)["state_dict"])
    path = forge(saved["ple"], tmp_path / "deep.ckpt", lambda m: m["config"].update(num_levels=200))
    with pytest.raises(mm.CheckpointError, match="larger than the weights it holds"):
        mm.load_checkpoint(path)
    assert len(built) <= held + 1, (len(built), held)
    assert all(device == "meta" for device, _ in built)


def test_a_million_declared_levels_are_refused_at_once(saved, tmp_path):
    path = forge(saved["ple"], tmp_path / "deeper.ckpt", lambda m: m["config"].update(num_levels=10**6))
    with pytest.raises(mm.CheckpointError, match="larger than the weights it holds"):
        mm.load_checkpoint(path)


def test_a_declared_shape_that_differs_is_named_before_building(saved, tmp_path, built):
    """A smaller declared shape (fewer values than stored): the tensor is named, and nothing real
    is built."""
    def narrower(manifest):
        manifest["config"]["tower_hidden"] = [2]  # towers (2,) instead of (4,)
    path = forge(saved["mmoe"], tmp_path / "narrower.ckpt", narrower)
    with pytest.raises(mm.CheckpointError, match=r"do not fit its config \(.*towers.*stored .*config .*nothing "
                                                 r"was built"):
        mm.load_checkpoint(path)
    assert all(device == "meta" for device, _ in built)


def test_an_honest_checkpoint_still_loads(saved, built):
    for kind, path in saved.items():
        ckpt = mm.load_checkpoint(path)
        assert ckpt.kind == kind and all(p.device.type == "cpu" for p in ckpt.model.parameters())


# ---------------------------------------------------------------------------
# Pickled objects, in both of torch's wordings
# ---------------------------------------------------------------------------

class _System:
    """Unpickling this would run a shell command: ``os.system`` lives in a module torch blocks."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


class _Open:
    """``open`` is a global torch does not allow (its other wording)."""

    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):
        return (open, (self.flag, "w"))


@pytest.mark.parametrize("payload", [_System, _Open])
@pytest.mark.parametrize("wrap", ["checkpoint", "raw pickle"])
def test_a_pickled_object_is_named_as_one(tmp_path, payload, wrap):
    flag = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    if wrap == "checkpoint":
        torch.save({"manifest": "{}", "state_dict": {}, "sha256": "0", "x": payload(str(flag))}, path)
    else:
        path.write_bytes(pickle.dumps(payload(str(flag)), protocol=2))
    with pytest.raises(mm.CheckpointError, match=r"holds a Python object \(\w+\.\w+\); loading it could run "
                                                 r"code") as info:
        mm.load_checkpoint(path)
    assert "damaged" not in str(info.value) and "weights_only=False" not in str(info.value)
    assert not flag.exists()
