"""Exports: every model kind in both formats gives mm.predict's numbers on 10,000 rows (a batch of
one and unseen IDs included); the folder's manifest; damaged or tampered exports never load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.features import OOV
from mmoe_annotated.serve import ExportError, from_checkpoint, load_export
from mmoe_annotated.serve import manifest as manifest_mod
from mmoe_annotated.serve.manifest import MANIFEST, manifest_digest

from .common import ROWS, data, trained, unseen

# The rows with unseen IDs are meant to fall to OOV; the encoder's warning about it is expected.
pytestmark = pytest.mark.filterwarnings("ignore:column .* not in the training vocabulary:RuntimeWarning")

KINDS = sorted(mm.MODELS)
FORMATS = ("onnx", "torch")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def setup():
    df, train, enc = data()
    return df, train, enc


@pytest.fixture(scope="module")
def exports(setup, tmp_path_factory):
    """{kind: (model, folder)}: each kind trained one epoch and exported in both formats."""
    df, train, enc = setup
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for kind in KINDS:
        model = trained(kind, train, enc)
        out[kind] = (model, mm.export(model, enc, root / kind, format=FORMATS))
    return out


@pytest.mark.parametrize("runtime", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_exported_predictions_equal_the_eager_ones(setup, exports, kind, runtime):
    df, _, enc = setup
    model, folder = exports[kind]
    exported = load_export(folder, runtime)
    assert (exported.kind, exported.runtime, exported.tasks) == (kind, runtime, ("finish", "like"))
    odd = unseen(df)
    rows = pd.concat([df, odd], ignore_index=True)
    eager = mm.predict(model, rows, encoder=enc)  # (M, T)
    assert len(rows) == ROWS + len(odd) and eager.std(0).min() > 1e-3  # the model's outputs spread
    got = exported.predict(rows)
    worst = float(np.abs(got - eager).max())
    print(f"{kind} {runtime}: max |exported - eager| = {worst:.2e} over {len(rows)} rows")
    assert worst <= TOLERANCE
    # a batch of one, and the rows with unseen and missing IDs, alone
    for i in (0, ROWS - 1, ROWS):
        one = exported.predict(rows.iloc[[i]])
        assert one.shape == (1, 2) and np.abs(one - eager[[i]]).max() <= TOLERANCE
    ids = enc.transform(odd).ids
    assert (ids[:, enc.sparse.index("uid")] == OOV).all()  # they do reach the OOV row
    assert np.abs(exported.predict(odd) - mm.predict(model, odd, encoder=enc)).max() <= TOLERANCE
    # the gates come out too, as the model gives them
    x = enc.transform(rows.head(64))
    _, gates = exported.score(x)
    with torch.no_grad():
        assert np.abs(gates - model(x).gates.numpy()).max() <= TOLERANCE


def test_the_manifest_says_what_the_export_is(setup, exports):
    _, _, enc = setup
    model, folder = exports["ple"]
    written = json.loads((folder / MANIFEST).read_text())
    m = written["manifest"]
    assert written["sha256"] == manifest_digest(m) == load_export(folder).checksum
    assert (m["format"], m["format_version"], m["package_version"]) == ("mmoe-annotated-export", 2,
                                                                       mm.__version__)
    assert m["kind"] == "ple" and m["tasks"] == [{"name": "finish", "type": "binary"},
                                                 {"name": "like", "type": "binary"}]
    assert [(i["name"], i["dtype"], i["shape"]) for i in m["inputs"]] == [("ids", "int64", ["B", 8]),
                                                                         ("dense", "float32", ["B", 1])]
    assert m["outputs"]["gates"] == ["B", 2, model.num_experts]
    assert set(m["files"]) == {"encoder.json", "model.onnx", "model.pt2"}
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.json", "manifest.json", "model.onnx", "model.pt2"]
    assert mm.FeatureEncoder.from_dict(json.loads((folder / "encoder.json").read_text())).to_dict() == enc.to_dict()


def test_regression_tasks_return_raw_values(tmp_path):
    df = mm.load_example(600)
    df["watch"] = df["duration_time"] * 0.1
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, ["duration_time"]).fit(df)
    cfg = mm.ModelConfig(enc.features, task_names=("finish", "watch"), task_types=("binary", "regression"),
                         expert_hidden=(8,), gate_hidden=(), tower_hidden=(4,), init_std=None)
    model = mm.MMoE(cfg)
    for fmt in FORMATS:
        got = load_export(mm.export(model, enc, tmp_path / fmt, format=fmt)).predict(df)
        assert np.abs(got - mm.predict(model, df, encoder=enc)).max() <= TOLERANCE


def test_models_with_only_sparse_or_only_dense_inputs_export(tmp_path):
    df = mm.load_example(300)
    for name, enc in (("ids", mm.FeatureEncoder(["uid", "item_id"], [])),
                      ("dense", mm.FeatureEncoder([], ["duration_time"]))):
        enc.fit(df)
        model = mm.OMoE(mm.ModelConfig(enc.features, expert_hidden=(8,), tower_hidden=(4,), init_std=None))
        for fmt in FORMATS:
            exported = load_export(mm.export(model, enc, tmp_path / f"{name}-{fmt}", format=fmt))
            assert exported.inputs == (name,)
            assert np.abs(exported.predict(df) - mm.predict(model, df, encoder=enc)).max() <= TOLERANCE


def test_a_checkpoint_is_exported_in_memory(setup, exports, tmp_path):
    df, _, enc = setup
    model, _ = exports["mmoe"]
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc)
    exported = from_checkpoint(path)
    assert exported.runtime == "onnx" and len(exported.checksum) == 64
    assert np.abs(exported.predict(df.head(500)) - mm.predict(model, df.head(500), encoder=enc)).max() <= TOLERANCE


def test_export_refuses_bad_arguments(setup, exports, tmp_path):
    _, train, enc = setup
    model, _ = exports["mmoe"]
    with pytest.raises(ValueError, match="format must be one of"):
        mm.export(model, enc, tmp_path / "x", format="tflite")
    with pytest.raises(TypeError, match="fitted FeatureEncoder"):
        mm.export(model, None, tmp_path / "x")
    other = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim=8).fit(train)
    with pytest.raises(ValueError, match="does not match the model"):
        mm.export(model, other, tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not part of an export"):
        mm.export(model, enc, tmp_path / "busy")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        mm.export(model, enc, tmp_path / "file")
    with pytest.raises(FileNotFoundError):
        mm.export(model, enc, tmp_path / "no" / "such")


def test_a_new_export_replaces_the_old_one(setup, exports, tmp_path):
    _, _, enc = setup
    mmoe, _ = exports["mmoe"]
    ple, _ = exports["ple"]
    folder = mm.export(mmoe, enc, tmp_path / "m", format=FORMATS)
    mm.export(ple, enc, folder, format="torch")
    assert load_export(folder).kind == "ple"
    assert not (folder / "model.onnx").exists()  # the earlier format's file went with its manifest
    with pytest.raises(ExportError, match="holds no onnx model"):
        load_export(folder, "onnx")


def test_an_interrupted_export_leaves_no_half_file_and_never_loads_a_mixture(setup, exports, tmp_path,
                                                                           monkeypatch):
    _, _, enc = setup
    mmoe, _ = exports["mmoe"]
    ple, _ = exports["ple"]
    folder = mm.export(mmoe, enc, tmp_path / "m", format="onnx")
    before = load_export(folder).checksum
    real = os.replace
    calls = []

    def crash_on_manifest(src, dst):  # encoder.json, model.onnx, then manifest.json
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(manifest_mod.os, "replace", crash_on_manifest)
    with pytest.raises(OSError, match="cannot write the export file"):
        mm.export(ple, enc, folder, format="onnx")
    monkeypatch.setattr(manifest_mod.os, "replace", real)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    # one file is new and the manifest is old: refused, not loaded as a mixture of two models
    with pytest.raises(ExportError, match="damaged"):
        load_export(folder)
    mm.export(ple, enc, folder, format="onnx")
    assert load_export(folder).checksum != before


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def copy_of(exports, tmp_path):
    def make(kind="mmoe"):
        import shutil
        return Path(shutil.copytree(exports[kind][1], tmp_path / f"copy-{kind}"))
    return make


@pytest.mark.parametrize("runtime", FORMATS)
def test_a_flipped_byte_in_the_model_is_refused(copy_of, runtime):
    folder = copy_of()
    target = folder / ("model.onnx" if runtime == "onnx" else "model.pt2")
    _flip(target, target.stat().st_size // 2)
    with pytest.raises(ExportError, match=r"model\.(onnx|pt2): is damaged: its bytes do not match"):
        load_export(folder, runtime)


def test_an_edited_vocabulary_is_refused(copy_of):
    folder = copy_of()
    enc = json.loads((folder / "encoder.json").read_text())
    enc["scalers"]["duration_time"]["high"] *= 2  # still valid JSON, still a valid encoder
    (folder / "encoder.json").write_text(json.dumps(enc, sort_keys=True))
    with pytest.raises(ExportError, match=r"encoder\.json: is damaged"):
        load_export(folder)


def test_an_edited_manifest_is_refused(copy_of):
    folder = copy_of()
    written = json.loads((folder / MANIFEST).read_text())
    written["manifest"]["kind"] = "omoe"
    (folder / MANIFEST).write_text(json.dumps(written))
    with pytest.raises(ExportError, match="do not match the SHA-256"):
        load_export(folder)
    (folder / MANIFEST).write_text("{not json")
    with pytest.raises(ExportError, match="is not JSON"):
        load_export(folder)


def test_missing_truncated_and_misplaced_files_are_refused(copy_of, exports, tmp_path):
    folder = copy_of()
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="it is .* bytes, the manifest says"):
        load_export(folder)
    (folder / "model.onnx").unlink()
    with pytest.raises(ExportError, match="missing from the export folder"):
        load_export(folder, "onnx")
    assert load_export(folder, "torch").runtime == "torch"  # the other format still verifies
    (folder / "encoder.json").unlink()
    with pytest.raises(ExportError, match="encoder.json: is missing"):
        load_export(folder, "torch")
    with pytest.raises(ExportError, match="no such export folder"):
        load_export(tmp_path / "nowhere")
    ckpt = mm.save_checkpoint(tmp_path / "m.ckpt", exports["mmoe"][0])
    with pytest.raises(ExportError, match="is a file, not an export folder"):
        load_export(ckpt)
    other = copy_of("ple")
    (other / "model.onnx").write_bytes((exports["mmoe"][1] / "model.onnx").read_bytes())
    with pytest.raises(ExportError, match=r"model\.onnx: is damaged"):
        load_export(other)


def test_another_format_version_is_named(copy_of):
    folder = copy_of()
    written = json.loads((folder / MANIFEST).read_text())
    written["manifest"]["format_version"] = 99
    written["sha256"] = manifest_digest(written["manifest"])
    (folder / MANIFEST).write_text(json.dumps(written))
    with pytest.raises(ExportError, match=r"export format 99 .* reads formats \[1, 2\]"):
        load_export(folder)


def test_a_torch_program_holding_pickles_is_refused(copy_of):
    """torch.export.load unpickles tensors marked use_pickle with weights_only=False: such a program
    is refused even when its manifest was rewritten to match it."""
    folder = copy_of()
    path = folder / "model.pt2"
    source = zipfile.ZipFile(path)
    out = path.with_suffix(".new")
    with zipfile.ZipFile(out, "w") as z:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            z.writestr(info, data)
    source.close()
    os.replace(out, path)
    written = json.loads((folder / MANIFEST).read_text())
    written["manifest"]["files"]["model.pt2"] = manifest_mod.file_entry(path.read_bytes())
    written["sha256"] = manifest_digest(written["manifest"])
    (folder / MANIFEST).write_text(json.dumps(written))
    with pytest.raises(ExportError, match="stores tensors as pickles"):
        load_export(folder, "torch")


def test_errors_are_checkpoint_errors(copy_of):
    folder = copy_of()
    (folder / MANIFEST).write_text("[]")
    with pytest.raises(mm.CheckpointError):
        load_export(folder)
    with pytest.raises(ValueError):  # a DataError, like every file problem of the package
        load_export(folder)


def test_importing_the_package_needs_neither_onnx_nor_the_service():
    code = ("import sys, mmoe_annotated as mm; assert callable(mm.export); "
            "import mmoe_annotated.serve; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'onnx', 'onnxruntime', 'onnxscript', 'starlette', 'uvicorn'}), "
            "sorted(m for m in sys.modules if m.startswith('mmoe_annotated.fast')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"


def test_the_serving_stage_never_imports_the_fast_wing():
    import ast
    folder = Path(mm.__file__).parent / "serve"
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any("fast" in n.split(".") for n in names), (path.name, names)


def test_an_export_that_cannot_create_its_temporary_file_names_the_export_file(setup, exports, tmp_path,
                                                                              monkeypatch):
    """The export's own wording, not the checkpoint's, for an error creating the temporary file."""
    import errno

    from mmoe_annotated.checkpoint import files

    def denied(path, flags, mode=0o777):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    model, enc = next(iter(exports.values()))[0], setup[2]
    (tmp_path / "e").mkdir()
    monkeypatch.setattr(files.os, "open", denied)
    with pytest.raises(PermissionError, match="cannot write the export file") as info:
        mm.export(model, enc, tmp_path / "e")
    assert "checkpoint" not in str(info.value)
