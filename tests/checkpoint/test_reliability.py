"""Reliability: what a hostile or unlucky user does to checkpoints and feature columns.

Damaged checkpoints never load (every changed byte is caught or changes nothing), saves fail
clearly and clean up after themselves, dense values that overflow once scaled are refused with
the column named, and one ID value gets one id whatever the column's dtype."""
from __future__ import annotations

import builtins
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated import checkpoint as ckpt_mod
from mmoe_annotated.checkpoint import files as ckpt_files, save as ckpt_save, verify as ckpt_verify

def _tiny_frame():
    return pd.DataFrame({"uid": [1, 2, 3, 1, 2, 7], "item": ["a", "b", "c", "a", "d", "e"],
                         "dur": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})


@pytest.fixture(scope="module")
def tiny():
    """A checkpoint of about 4 KB, so that flipping hundreds of its bytes stays fast."""
    enc = mm.FeatureEncoder(["uid", "item"], ["dur"], emb_dim=2).fit(_tiny_frame())
    cfg = mm.ModelConfig(enc.features, num_experts=2, expert_hidden=(2,), gate_hidden=(), tower_hidden=(), seed=1)
    return mm.MMoE(cfg), enc


@pytest.fixture()
def saved_tiny(tmp_path, tiny):
    model, enc = tiny
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc, extra={"auc": 0.5, "note": "tiny"})
    return path, mm.load_checkpoint(path)


def _same(a, b) -> bool:
    """Two loaded checkpoints hold the same kind, config, encoder, versions, extra and weights."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return (a.kind == b.kind and a.config == b.config and a.encoder.to_dict() == b.encoder.to_dict()
            and a.package_version == b.package_version and a.extra == b.extra and list(sa) == list(sb)
            and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa))


def _loads_the_same_or_refuses(path, original):
    try:
        loaded = mm.load_checkpoint(path)
    except mm.CheckpointError as exc:
        assert "damaged" in str(exc), str(exc)
        return "refused"
    assert _same(loaded, original), "a damaged checkpoint loaded as something different"
    return "same"


# ---------------------------------------------------------------------------
# HIGH: damaged checkpoints never load
# ---------------------------------------------------------------------------

def test_flipped_bits_anywhere_never_load_a_different_checkpoint(tmp_path, saved_tiny):
    path, original = saved_tiny
    data = path.read_bytes()
    text = json.loads(torch.load(path, weights_only=True)["manifest"])
    start = data.find(b'{"format"')
    end = data.find(json.dumps(text["extra"]).encode(), start)
    assert 0 < start < end  # the manifest's JSON lies in the file as plain bytes
    rng = np.random.default_rng(0)
    positions = set(range(start, end, 3)) | set(rng.choice(len(data), 300, replace=False).tolist())
    damaged = tmp_path / "flipped.ckpt"
    outcomes = {"refused": 0, "same": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about pickle protocols that damage can create
        for i in sorted(positions):
            flipped = bytearray(data)
            flipped[i] ^= 1 << (i % 8)
            damaged.write_bytes(bytes(flipped))
            outcomes[_loads_the_same_or_refuses(damaged, original)] += 1
    assert outcomes["refused"] > len(positions) // 2


def _edit_in_place(data: bytes, old: bytes, new: bytes) -> bytes:
    """Same-length edit inside the stored JSON: the zip and the pickle still parse."""
    assert len(old) == len(new) and data.count(old) == 1, old
    return data.replace(old, new)


@pytest.mark.parametrize("old, new", [
    (b'"kind": "mmoe"', b'"kind": "omoe"'),                       # another model kind
    (b'"num_experts": 2', b'"num_experts": 3'),                   # a config number
    (b'"values": ["a",', b'"values": ["b",'),                    # an encoder vocabulary value
    (b'"low": 1.0', b'"low": 2.0'),                               # a scaler bound
    (b'"auc": 0.5', b'"auc": 0.9'),                               # extra
    (b'"emb_dim": {"uid": 2', b'"emb_dim": {"uid": 3'),           # the encoder's embedding width
])
def test_edited_json_values_are_refused(tmp_path, saved_tiny, old, new):
    path, _ = saved_tiny
    path.write_bytes(_edit_in_place(path.read_bytes(), old, new))
    with pytest.raises(mm.CheckpointError, match="damaged.*checksum"):
        mm.load_checkpoint(path)


def test_rewritten_manifest_without_a_new_checksum_is_refused(saved_tiny):
    path, _ = saved_tiny
    payload = torch.load(path, weights_only=True)
    manifest = json.loads(payload["manifest"])
    manifest["config"]["features"][0]["emb_dim"] = 5  # breaks the model's construction, not the JSON
    manifest["package_version"] = "0.0.9"
    payload["manifest"] = json.dumps(manifest)
    torch.save(payload, path)
    with pytest.raises(mm.CheckpointError, match="damaged"):
        mm.load_checkpoint(path)


def test_a_config_that_cannot_be_built_is_a_checkpoint_error(saved_tiny):
    """Even with a fitting checksum (a buggy writer), config damage never escapes as a bare ValueError."""
    path, _ = saved_tiny
    payload = torch.load(path, weights_only=True)
    manifest = json.loads(payload["manifest"])
    manifest["config"]["features"][0]["emb_dim"] = 5  # sparse features must share one width
    payload["manifest"] = json.dumps(manifest)
    payload["sha256"] = ckpt_verify.digest(payload["manifest"], payload["state_dict"])
    torch.save(payload, path)
    with pytest.raises(mm.CheckpointError, match="config"):
        mm.load_checkpoint(path)


def test_a_format_1_file_is_named_as_such(saved_tiny):
    """The earlier layout (checksum of the weights only, inside the manifest) says which format it is."""
    path, _ = saved_tiny
    payload = torch.load(path, weights_only=True)
    manifest = json.loads(payload["manifest"])
    manifest.update(format_version=1, sha256="0" * 64)
    torch.save({"manifest": json.dumps(manifest), "state_dict": payload["state_dict"]}, path)
    with pytest.raises(mm.CheckpointError, match=r"earlier checkpoint format 1 .*save the model again"):
        mm.load_checkpoint(path)


# ---------------------------------------------------------------------------
# LOW: saves that fail, get killed or replace other files
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_the_next_save_removes_what_a_killed_save_left(tmp_path, tiny, monkeypatch):
    model, enc = tiny
    target = tmp_path / "m.ckpt"

    def killed(obj, fh, *args, **kwargs):  # half the bytes, then the process dies as under kill -9
        fh.write(b"PK\x03\x04 half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)

    child = os.fork()
    if child == 0:  # the child saves and is killed mid-write; it never returns to pytest
        try:
            monkeypatch.setattr(ckpt_save.torch, "save", killed)
            mm.save_checkpoint(target, model, enc)
        finally:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and not target.exists()  # the killed save left its temporary file
    old = time.time() - 2 * ckpt_mod.STALE_AFTER_S
    os.utime(left[0], (old, old))
    mm.save_checkpoint(target, model, enc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]
    assert mm.load_checkpoint(target).kind == "mmoe"


@pytest.mark.skipif(os.name != "posix", reason="process ids are checked with signal 0")
def test_only_stale_temporary_files_of_the_same_target_are_removed(tmp_path, tiny):
    model, enc = tiny
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, alive = child.pid, os.getpid()
    old = time.time() - 2 * ckpt_mod.STALE_AFTER_S
    names = {
        f".m.ckpt.{dead}.0a1b2c.tmp": (old, False),        # a killed save of this target: removed
        f".m.ckpt.{dead}.0a1b2d.tmp": (time.time(), True),  # just written: perhaps another host's save
        f".m.ckpt.{alive}.0a1b2e.tmp": (old, True),         # this process's own save in progress
        f".other.ckpt.{dead}.0a1b2f.tmp": (old, True),      # another target's
        ".m.ckpt.notes.tmp": (old, True),                    # not a name save_checkpoint makes
    }
    for name, (mtime, _) in names.items():
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (mtime, mtime))
    mm.save_checkpoint(tmp_path / "m.ckpt", model, enc)
    for name, (_, kept) in names.items():
        assert (tmp_path / name).exists() == kept, name


def _fake_temp_on(device: str, tmp_path, monkeypatch):
    """Make the save's temporary file a descriptor on ``device`` (``/dev/full`` fails every write)."""
    tmp = tmp_path / ".m.ckpt.full.tmp"
    tmp.write_bytes(b"")

    def temp_file(path, *args, **kwargs):
        return os.open(device, os.O_WRONLY), tmp

    monkeypatch.setattr(ckpt_files, "temp_file", temp_file)  # the name write_atomically calls
    return tmp


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_says_no_space_left(tmp_path, tiny, monkeypatch):
    model, enc = tiny
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc)
    before = path.read_bytes()
    tmp = _fake_temp_on("/dev/full", tmp_path, monkeypatch)
    with pytest.raises(OSError, match="no space left on device") as info:
        mm.save_checkpoint(path, mm.OMoE(model.config), enc)
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    assert "unexpected pos" not in str(info.value)
    assert path.read_bytes() == before and not tmp.exists()


def test_no_space_at_fsync_names_the_checkpoint(tmp_path, tiny, monkeypatch):
    """File systems with delayed allocation report a full disk only when the bytes are flushed."""
    model, enc = tiny
    path = tmp_path / "m.ckpt"

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_save.os, "fsync", full)
    with pytest.raises(OSError, match="no space left on device") as info:
        mm.save_checkpoint(path, model, enc)
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def umask():
    def set_to(mask):
        os.umask(mask)
    previous = os.umask(0o022)
    os.umask(previous)
    yield set_to
    os.umask(previous)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600])
def test_a_replaced_checkpoint_keeps_its_mode(tmp_path, tiny, mode, umask):
    model, enc = tiny
    umask(0o077)  # the old file's mode wins over the umask
    path = tmp_path / "m.ckpt"
    path.write_bytes(b"old")
    os.chmod(path, mode)
    mm.save_checkpoint(path, model, enc)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_checkpoint_honours_the_umask(tmp_path, tiny, umask, mask, mode):
    model, enc = tiny
    umask(mask)
    path = mm.save_checkpoint(tmp_path / "m.ckpt", model, enc)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


# ---------------------------------------------------------------------------
# LOW: paths that are not checkpoints, unreadable ones, and devices
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(mm.CheckpointError, match=r"named pipe \(FIFO\), not a regular file") as info:
        mm.load_checkpoint(fifo)
    assert "save never finished" not in str(info.value) and info.value.path == str(fifo)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    with pytest.raises(mm.CheckpointError, match="character device, not a regular file"):
        mm.load_checkpoint(device)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_saving_over_a_fifo_is_refused(tmp_path, tiny):
    model, enc = tiny
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="named pipe"):
        mm.save_checkpoint(fifo, model, enc)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still the pipe, not replaced by a file


def test_a_symlink_loop_is_named(tmp_path):
    loop = tmp_path / "a.ckpt"
    os.symlink(tmp_path / "b.ckpt", loop)
    os.symlink(loop, tmp_path / "b.ckpt")
    with pytest.raises(mm.CheckpointError, match="loop of symbolic links"):
        mm.load_checkpoint(loop)


def _deny(target, monkeypatch):
    """No permission to open ``target`` or create files in it, as the OS says it (chmod binds no root)."""
    target = str(target)
    real_os_open, real_open = os.open, builtins.open

    def refused(path, *args, **kwargs):
        if str(path) == target or os.path.dirname(str(path)) == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return None

    monkeypatch.setattr(os, "open", lambda p, *a, **k: refused(p) or real_os_open(p, *a, **k))
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: refused(p) or real_open(p, *a, **k))


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_unreadable_checkpoint_says_permission_denied(saved_tiny, monkeypatch):
    path, _ = saved_tiny
    _deny(path, monkeypatch)
    with pytest.raises(mm.CheckpointError, match="cannot be read: permission denied") as info:
        mm.load_checkpoint(path)
    assert "corrupt" not in str(info.value)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_an_unwritable_directory_says_so(tmp_path, tiny, monkeypatch):
    model, enc = tiny
    folder = tmp_path / "ro"
    folder.mkdir()
    _deny(folder, monkeypatch)
    with pytest.raises(PermissionError, match=r"cannot save the checkpoint .*m\.ckpt: no permission to write") as info:
        mm.save_checkpoint(folder / "m.ckpt", model, enc)
    assert str(folder) in str(info.value)


@pytest.mark.parametrize("device", ["meta", "xla", "hpu"])
def test_devices_that_cannot_predict_are_refused(saved_tiny, device):
    path, _ = saved_tiny
    with pytest.raises(ValueError, match=f"device '{device}'"):
        mm.load_checkpoint(path, device=device)


def test_a_bad_device_fails_before_the_file_is_read(tmp_path):
    with pytest.raises(ValueError, match="device 'meta'"):
        mm.load_checkpoint(tmp_path / "missing.ckpt", device="meta")


# ---------------------------------------------------------------------------
# MEDIUM: dense values that overflow once scaled
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dense_encoder():
    train = pd.DataFrame({"uid": [1, 2, 3, 4], "dur": [0.0, 0.25, 0.5, 1.0]})
    return mm.FeatureEncoder(["uid"], ["dur"], emb_dim=2).fit(train)


@pytest.mark.parametrize("value, row", [(1e39, 1), (-5e38, 0), (1e300, 2), (np.finfo(np.float64).max, 1)])
def test_dense_values_that_overflow_float32_once_scaled_are_refused(dense_encoder, value, row):
    frame = pd.DataFrame({"uid": [1, 2, 3], "dur": [0.5, 0.5, 0.5]})
    frame.loc[row, "dur"] = value
    with pytest.raises(mm.DataError, match=rf"too large for the model, first at row {row}.*float32") as info:
        dense_encoder.transform(frame)
    assert info.value.column == "dur"


def test_overflow_is_refused_even_with_dense_fill():
    """dense_fill replaces NaN and inf in the raw data; a finite value that overflows is not a gap to fill."""
    train = pd.DataFrame({"uid": [1, 2], "dur": [0.0, 1e-300]})  # a tiny training span
    enc = mm.FeatureEncoder(["uid"], ["dur"], dense_fill=0.0).fit(train)
    with pytest.raises(mm.DataError, match="too large for the model") as info:
        enc.transform(pd.DataFrame({"uid": [1, 2], "dur": [1.0, 2.0]}))
    assert info.value.column == "dur"


def test_a_training_range_whose_span_overflows_is_refused():
    with pytest.raises(mm.DataError, match="too wide to scale") as info:
        mm.FeatureEncoder(["uid"], ["dur"]).fit(pd.DataFrame({"uid": [1, 2], "dur": [-1e308, 1e308]}))
    assert info.value.column == "dur"


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_dense_inputs_are_refused_where_the_model_reads_them(dense_encoder, bad):
    frame = pd.DataFrame({"uid": [1, 2, 3, 4], "dur": [0.0, 0.5, 1.0, 0.5], "finish": [0, 1, 0, 1],
                          "like": [0, 0, 1, 1]})
    model = mm.MMoE(mm.ModelConfig(dense_encoder.features, num_experts=2, expert_hidden=(2,), gate_hidden=(),
                                   tower_hidden=()))
    x = dense_encoder.transform(frame)
    x.dense[2, 0] = bad
    with pytest.raises(ValueError, match=r"dense input 'dur': 1 value\(s\) are NaN or infinite, first at row 2"):
        mm.predict(model, x)
    with pytest.raises(ValueError, match="dense input 'dur'"):
        model.inputs.check(x.ids, x.dense)


# ---------------------------------------------------------------------------
# MEDIUM: one value, one id, whatever the column's dtype; mostly-OOV columns warn
# ---------------------------------------------------------------------------

_IDS = [1234, 42, 7, 42, 1234, 99]
_SAME_VALUES = {
    "int64": lambda: pd.Series(_IDS),
    "float64 with NaN": lambda: pd.Series([1234.0, 42.0, 7.0, 42.0, 1234.0, None]),
    "object of floats": lambda: pd.Series([1234.0, 42.0, 7.0, 42.0, 1234.0, None], dtype=object),
    "object of numpy numbers": lambda: pd.Series([np.float32(1234), np.float64(42), np.int64(7), np.int32(42),
                                                  np.uint16(1234), np.nan], dtype=object),
    "object, mixed": lambda: pd.Series([1234, 42.0, "7", np.int8(42), 1234.0, None], dtype=object),
    "category with NaN": lambda: pd.Series([1234, 42, 7, 42, 1234, None]).astype("category"),
    "category of ints": lambda: pd.Series(_IDS).astype("category"),
    "category of strings": lambda: pd.Series(["1234", "42", "7", "42", "1234", None]).astype("category"),
    "nullable Int64": lambda: pd.Series([1234, 42, 7, 42, 1234, None], dtype="Int64"),
    "nullable Float64": lambda: pd.Series([1234.0, 42.0, 7.0, 42.0, 1234.0, None], dtype="Float64"),
    "string": lambda: pd.Series(["1234", "42", "7", "42", "1234", None], dtype="string"),
}


@pytest.mark.parametrize("hashed", [False, True], ids=["vocab", "hash"])
@pytest.mark.parametrize("dtype", sorted(_SAME_VALUES))
def test_the_same_value_gets_the_same_id_whatever_the_dtype(dtype, hashed):
    enc = mm.FeatureEncoder(["item"], hash_buckets=1000 if hashed else None).fit(pd.DataFrame({"item": _IDS}))
    expected = enc.transform(pd.DataFrame({"item": _IDS})).ids[:, 0].numpy()
    column = _SAME_VALUES[dtype]()
    got = enc.transform(pd.DataFrame({"item": column})).ids[:, 0].numpy()
    present = column.notna().to_numpy()
    assert got[present].tolist() == expected[present].tolist()
    assert (got[~present] == mm.MISSING).all()
    assert not (got == mm.OOV).any()


@pytest.mark.parametrize("dtype", ["object of floats", "category with NaN", "nullable Int64", "string"])
def test_fitting_on_any_dtype_gives_the_same_vocabulary(dtype):
    column = _SAME_VALUES[dtype]()
    vocab = mm.Vocabulary.fit(column)
    assert set(vocab.values) == {"1234", "42", "7"} | ({"99"} if column.notna().all() else set())
    assert vocab.transform(pd.Series(_IDS))[:5].tolist() == vocab.transform(column)[:5].tolist()


@pytest.fixture(scope="module")
def id_encoder():
    train = pd.DataFrame({"item": np.tile(np.arange(100, 150), 4)})  # every id seen 4 times: ~0% OOV expected
    return mm.FeatureEncoder(["item"]).fit(train)


@pytest.mark.parametrize("column", [
    pd.Series([f"i{v}" for v in range(100, 150)]),          # a prefix added upstream
    pd.Series(np.arange(100, 150) + 10_000),                 # another id space
    pd.Series([f"{v:06d}" for v in range(100, 150)]),        # zero-padded strings
], ids=["prefix", "shifted", "zero-padded"])
def test_a_column_that_mostly_falls_to_oov_warns(id_encoder, column):
    with pytest.warns(RuntimeWarning, match=r"column 'item': 100% of 50 values are not in the training "
                                            r"vocabulary.*about 0%"):
        ids = id_encoder.transform(pd.DataFrame({"item": column})).ids
    assert (ids == mm.OOV).all()


def test_new_ids_at_the_rate_training_predicts_do_not_warn():
    """Good-Turing: a column of mostly one-off ids (like ByteRec's item_id) expects many unseen ids."""
    df = mm.load_example(n_rows=400, seed=0)
    train, test = mm.split_by_row(df)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES).fit(train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = enc.transform(test).ids
    item = mm.SPARSE_FEATURES.index("item_id")
    assert (ids[:, item] == mm.OOV).double().mean() > 0.5  # mostly new items, as the training split predicts
    assert enc.encoders["item_id"].expected_oov > 0.5


def test_few_rows_never_warn(id_encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        id_encoder.transform(pd.DataFrame({"item": ["new"] * (mm.FeatureEncoder.OOV_WARN_MIN_ROWS - 1)}))


def _signed(path, edit):
    """Rewrite the manifest with a checksum that fits it: what a buggy or foreign writer would make."""
    payload = torch.load(path, weights_only=True)
    manifest = json.loads(payload["manifest"])
    edit(manifest)
    payload["manifest"] = json.dumps(manifest)
    payload["sha256"] = ckpt_verify.digest(payload["manifest"], payload["state_dict"])
    torch.save(payload, path)


@pytest.mark.parametrize("edit", [
    lambda m: m.update(kind=["mmoe"]),
    lambda m: m["encoder"]["dense"].__setitem__(0, None),
    lambda m: m["encoder"]["emb_dim"].__setitem__("uid", -1),
    lambda m: m["config"].update(num_experts="three"),
    lambda m: m["config"]["features"].__setitem__(0, "uid"),
    lambda m: m.update(extra=2.5),
], ids=["kind a list", "dense name None", "negative emb_dim", "num_experts a word", "feature a string",
        "extra a number"])
def test_a_signed_but_invalid_manifest_is_a_checkpoint_error(saved_tiny, edit):
    """Whatever the manifest holds, loading fails as CheckpointError, never as a bare error from deep inside."""
    path, _ = saved_tiny
    _signed(path, edit)
    with pytest.raises(mm.CheckpointError):
        mm.load_checkpoint(path)
