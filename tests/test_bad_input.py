"""The bad-input suite: every way readers can hand the package broken data or arguments, and what
each produces. Table-driven: each case names the input, the exception type, and what the message
must name (file, line and column for data; the argument for configs and calls).

Loader cases check ``DataError.path``, ``.line`` and ``.column`` as well as the message; the
closing table of ``load_byterec`` behaviour is also shown live in the book's appendix
"When things go wrong".
"""
from __future__ import annotations

import bz2
import gzip
import io
import re
import types
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch

import mmoe_annotated as mm

# Four valid rows in file order (what write_byterec writes for make_byterec(4, seed=0)).
BASE = [
    "1000\t-1\t501619\t12104\t180\t0\t0\t0\t-1\t4066\t53085917215\t9.0",
    "1014\t-1\t503097\t10394\t157\t0\t0\t0\t-1\t3112\t53086019899\t14.0",
    "1536\t278\t504290\t10065\t177\t0\t1\t0\t-1\t3128\t53086223379\t12.0",
    "1315\t39\t500908\t11553\t49\t2\t0\t1\t-1\t3974\t53086363435\t23.0",
]
COL = {c: i for i, c in enumerate(mm.COLUMNS)}


def with_field(line: int, column: str, value: str) -> bytes:
    """BASE with one field replaced (``line`` is 1-based, as in messages)."""
    rows = [r.split("\t") for r in BASE]
    rows[line - 1][COL[column]] = value
    return ("\n".join("\t".join(r) for r in rows) + "\n").encode()


def with_line(line: int, text: str) -> bytes:
    rows = list(BASE)
    rows[line - 1] = text
    return ("\n".join(rows) + "\n").encode()


GOOD = ("\n".join(BASE) + "\n").encode()


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("byterec.txt", GOOD)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# load_byterec: (id, file contents, expected line, expected column, message pattern)
# ---------------------------------------------------------------------------

LOADER_CASES = [
    ("too_few_columns", with_line(2, "1014\t-1\t503097"), 2, None,
     r"has 3 tab-separated columns, expected 12 \(uid, user_city"),
    ("too_many_columns", with_line(3, BASE[2] + "\t7"), 3, None, r"has 13 tab-separated columns, expected 12"),
    ("comma_separated", with_line(1, BASE[0].replace("\t", ",")), 1, None,
     r"has 1 tab-separated columns.*looks comma-separated, but ByteRec files are tab-separated"),
    ("space_separated", with_line(1, BASE[0].replace("\t", " ")), 1, None, r"has 1 tab-separated columns"),
    ("empty_line_inside", with_line(2, ""), 2, None, r"empty line"),
    ("word_in_id", with_field(3, "uid", "abc"), 3, "uid", r"'abc' is not a number"),
    ("word_in_time", with_field(4, "time", "2019-01-01"), 4, "time", r"'2019-01-01' is not a number"),
    ("word_in_duration", with_field(2, "duration_time", "9s"), 2, "duration_time", r"'9s' is not a number"),
    ("decimal_id", with_field(1, "item_id", "501619.5"), 1, "item_id", r"'501619.5' is not a whole number"),
    ("huge_id", with_field(2, "author_id", "1e30"), 2, "author_id", r"'1e30' is too large for an ID"),
    ("missing_id", with_field(3, "device", ""), 3, "device", r"missing value"),
    ("missing_label_finish", with_field(2, "finish", ""), 2, "finish", r"missing label"),
    ("missing_label_like", with_field(4, "like", " "), 4, "like", r"missing label"),
    ("label_two", with_field(1, "finish", "2"), 1, "finish", r"label '2' is not 0 or 1"),
    ("label_minus_one", with_field(3, "like", "-1"), 3, "like", r"label '-1' is not 0 or 1"),
    ("label_half", with_field(2, "like", "0.5"), 2, "like", r"label '0.5' is not 0 or 1"),
    ("label_word", with_field(2, "finish", "yes"), 2, "finish", r"'yes' is not a number"),
    ("negative_duration", with_field(4, "duration_time", "-3"), 4, "duration_time", r"duration '-3' is negative"),
    ("infinite_duration", with_field(1, "duration_time", "inf"), 1, "duration_time",
     r"duration 'inf' is not finite"),
    ("nan_duration", with_field(3, "duration_time", "nan"), 3, "duration_time", r"'nan' is not a number"),
    ("header_row", ("\t".join(mm.COLUMNS) + "\n").encode() + GOOD, 1, "uid",
     r"'uid' is not a number; line 1 looks like a header row, but ByteRec files have none"),
    ("stray_carriage_return", with_field(2, "channel", "0\r"), 2, "channel",
     r"carriage return \(\\r\) inside the line.*convert it to \\n line endings"),
    ("old_mac_line_endings", GOOD.replace(b"\n", b"\r"), 1, "duration_time", r"carriage return"),
    ("empty_file", b"", None, None, r"the file is empty"),
    ("blank_file", b"\n \n\r\n", None, None, r"the file is empty"),
    ("latin1_bytes", with_field(2, "user_city", "Montr\xe9al").replace("Montr\xe9al".encode(), b"Montr\xe9al"),
     2, "user_city", r"is not UTF-8 text \(byte 0xe9 at offset \d+\); re-save the file as UTF-8"),
    ("utf16_file", GOOD.decode().encode("utf-16"), 1, "uid", r"contains NUL bytes|is not UTF-8"),
    ("nul_bytes", with_field(3, "music_id", "\x00"), 3, "music_id", r"contains NUL bytes: this is a binary file"),
    ("gzip_as_text", gzip.compress(GOOD), None, None, r"is gzip-compressed, not tab-separated text; decompress it first \(gunzip\)"),
    ("zip_as_text", _zip_bytes(), None, None, r"is a zip archive, not tab-separated text; extract the .txt file first"),
    ("bzip2_as_text", bz2.compress(GOOD), None, None, r"is bzip2-compressed"),
    ("parquet_as_text", b"PAR1\x15\x04" + bytes(range(1, 60)), None, None, r"is a Parquet file, not tab-separated text; read it with pandas.read_parquet"),
    ("random_binary", bytes(range(256)) * 4, 1, "uid", r"contains NUL bytes"),
]


@pytest.mark.parametrize("name, data, line, column, pattern", LOADER_CASES, ids=[c[0] for c in LOADER_CASES])
def test_loader_rejects(tmp_path, name, data, line, column, pattern):
    path = tmp_path / f"{name}.txt"
    path.write_bytes(data)
    with pytest.raises(mm.DataError) as info:
        mm.load_byterec(path)
    err = info.value
    msg = str(err)
    assert re.search(pattern, msg), msg
    assert isinstance(err, ValueError)  # one error type, catchable as ValueError too
    assert err.path == str(path) and msg.startswith(str(path)), msg  # the message names the file
    assert err.line == line, msg
    assert err.column == column, msg
    if line is not None:
        assert f"line {line}" in msg
    if column is not None:
        assert f"column {column!r}" in msg


def test_loader_directory(tmp_path):
    with pytest.raises(mm.DataError, match="is a directory, not a ByteRec file") as info:
        mm.load_byterec(tmp_path)
    assert info.value.path == str(tmp_path)


def test_loader_missing_path(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(mm.DataError, match="no such file") as info:
        mm.load_byterec(path)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_loader_unknown_option(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_bytes(GOOD)
    with pytest.raises(ValueError, match=r"on_bad_lines must be 'error' or 'skip', got 'warn'"):
        mm.load_byterec(path, on_bad_lines="warn")


# Inputs that look odd but are fine.
ACCEPTED = [
    ("crlf_line_endings", GOOD.replace(b"\n", b"\r\n")),
    ("trailing_blank_line", GOOD + b"\n"),
    ("trailing_blank_lines_crlf", GOOD.replace(b"\n", b"\r\n") + b"\r\n  \r\n"),
    ("utf8_byte_order_mark", b"\xef\xbb\xbf" + GOOD),
]


@pytest.mark.parametrize("name, data", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_loader_accepts(tmp_path, name, data):
    path = tmp_path / f"{name}.txt"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and says nothing: nothing was skipped
        df = mm.load_byterec(path)
    assert df["uid"].tolist() == [1000, 1014, 1536, 1315]
    assert df["duration_time"].tolist() == [9.0, 14.0, 12.0, 23.0]
    assert df.attrs["bad_lines"] == []


def test_skip_mode_reports_how_many_and_which_lines(tmp_path):
    rows = BASE + [BASE[0]]
    rows[1] = "1014\t-1"  # line 2: wrong column count
    rows[3] = rows[3].replace("\t2\t0\t1\t", "\t2\t7\t1\t")  # line 4: finish = 7
    path = tmp_path / "some_bad.txt"
    path.write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"some_bad\.txt: skipped 2 bad line\(s\): 2, 4; see df\.attrs"):
        df = mm.load_byterec(path, on_bad_lines="skip")
    assert len(df) == 3
    assert df["uid"].tolist() == [1000, 1536, 1000]
    assert [n for n, _ in df.attrs["bad_lines"]] == [2, 4]
    assert "has 2 tab-separated columns" in df.attrs["bad_lines"][0][1]
    assert df.attrs["bad_lines"][1][1] == "column 'finish': label '7' is not 0 or 1"


def test_skip_mode_one_entry_per_line(tmp_path):
    """A line with several problems is reported once, with its first problem in column order;
    a header row is named as such."""
    rows = ["\t".join(mm.COLUMNS)] + BASE
    rows[2] = rows[2].replace("1014\t-1", "x\t-1").replace("\t14.0", "\t-2")  # line 3: uid and duration
    path = tmp_path / "header_and_more.txt"
    path.write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 2 bad line\(s\): 1, 3;"):
        df = mm.load_byterec(path, on_bad_lines="skip")
    assert len(df) == 3
    assert df.attrs["bad_lines"] == [
        (1, "column 'uid': looks like a header row; ByteRec files have none"),
        (3, "column 'uid': 'x' is not a number (and 1 more problem(s) on this line)"),
    ]


def test_skip_mode_with_every_line_bad(tmp_path):
    path = tmp_path / "all_bad.txt"
    path.write_text("a\tb\nc\td\n")
    with pytest.raises(mm.DataError, match="no valid rows: every line is malformed") as info:
        mm.load_byterec(path, on_bad_lines="skip")
    assert info.value.path == str(path)


# ---------------------------------------------------------------------------
# Features, model and trainer: (id, call, exception type, message pattern naming what to change)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctx():
    df = mm.load_example(n_rows=400, seed=1)
    train, test = mm.split_by_row(df)
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES).fit(train)
    cfg = mm.ModelConfig(enc.features, expert_hidden=(8,), gate_hidden=(), tower_hidden=(4,))
    model = mm.MMoE(cfg)
    x = enc.transform(train)
    y = train[list(mm.TASKS)].to_numpy(dtype=np.float32)
    return types.SimpleNamespace(train=train, test=test, enc=enc, cfg=cfg, model=model, x=x, y=y,
                                 quick=mm.TrainConfig(epochs=1, batch_size=64, progress=False))


def _frame(ctx, **changes):
    """The test split with some columns changed; a value of None drops the column."""
    df = ctx.test.copy()
    for col, value in changes.items():
        if value is None:
            df = df.drop(columns=[col])
        else:
            df[col] = value(df[col]) if callable(value) else value
    return df


def _with_nan(col, at=2, value=np.nan):
    def change(s):
        s = s.astype(float)
        s.iloc[at] = value
        return s
    return change


def _labels(ctx, **edits):
    y = ctx.y.copy()
    for (row, col), v in edits.get("cells", {}).items():
        y[row, col] = v
    return y


def _cfg(ctx, **changes):
    return lambda: mm.ModelConfig(ctx.enc.features, **changes)


def _tc(**changes):
    return lambda: mm.TrainConfig(**changes)


CASES = [
    # --- features ---------------------------------------------------------
    ("transform_lacks_column", lambda c: c.enc.transform(_frame(c, item_id=None)),
     mm.DataError, r"column 'item_id': the frame lacks column\(s\) \['item_id'\]"),
    ("transform_dense_wrong_dtype", lambda c: c.enc.transform(_frame(c, duration_time=lambda s: s.astype(str))),
     mm.DataError, r"column 'duration_time': dense column has dtype .*; it must be numeric"),
    ("transform_dense_nan", lambda c: c.enc.transform(_frame(c, duration_time=_with_nan("duration_time"))),
     mm.DataError, r"column 'duration_time': 1 NaN or infinite value\(s\), first at row 2.*pass dense_fill="),
    ("transform_dense_inf", lambda c: c.enc.transform(_frame(c, duration_time=_with_nan("d", 5, np.inf))),
     mm.DataError, r"column 'duration_time': 1 NaN or infinite value\(s\), first at row 5"),
    ("fit_dense_nan", lambda c: mm.FeatureEncoder(dense=["duration_time"]).fit(
        _frame(c, duration_time=_with_nan("d"))), mm.DataError, r"column 'duration_time'.*dense_fill="),
    ("sparse_cell_holds_a_list", lambda c: c.enc.transform(_frame(c, uid=lambda s: [[v] for v in s])),
     mm.DataError, r"column 'uid': categorical column holds a list at row 0"),
    ("duplicate_column", lambda c: c.enc.transform(pd.concat([c.test, c.test[["uid"]]], axis=1)),
     mm.DataError, r"column 'uid': the frame has more than one column named 'uid'"),
    ("transform_not_a_frame", lambda c: c.enc.transform(c.test.to_numpy()),
     TypeError, r"expected a pandas DataFrame, got ndarray"),
    ("transform_before_fit", lambda c: mm.FeatureEncoder(["uid"]).transform(c.test),
     RuntimeError, r"not fitted yet: call \.fit\(train_df\) first"),
    ("fit_empty_frame", lambda c: mm.FeatureEncoder(["uid"]).fit(c.test.iloc[:0]),
     mm.DataError, r"cannot fit an encoder on an empty frame"),
    ("encoder_without_columns", lambda c: mm.FeatureEncoder(), ValueError, r"at least one sparse or dense column"),
    ("encoder_emb_dim_zero", lambda c: mm.FeatureEncoder(["uid"], emb_dim=0).fit(c.train).features,
     ValueError, r"SparseFeature 'uid': emb_dim must be >= 1, got 0"),
    ("encoder_hash_buckets_zero", lambda c: mm.FeatureEncoder(["uid"], hash_buckets=0).fit(c.train),
     ValueError, r"hash buckets must be >= 1, got 0"),
    ("encoder_dense_fill_nan", lambda c: mm.FeatureEncoder(dense=["duration_time"], dense_fill=float("nan")),
     ValueError, r"dense_fill must be a finite number or None"),
    ("encoder_emb_dim_unknown_column", lambda c: mm.FeatureEncoder(["uid"], emb_dim={"item": 4}),
     ValueError, r"emb_dim names columns that are not sparse features: \['item'\]"),
    # --- model config ------------------------------------------------------
    ("unknown_task_type", lambda c: _cfg(c, task_types=("binary", "multiclass"))(),
     ValueError, r"unknown task type 'multiclass'; choose one of \('binary', 'regression'\)"),
    ("task_names_vs_types_length", lambda c: _cfg(c, task_types=("binary",))(),
     ValueError, r"task_names \(2\) and task_types \(1\) must have the same length"),
    ("no_tasks", lambda c: _cfg(c, task_names=(), task_types=())(), ValueError, r"at least one task"),
    ("duplicate_task_names", lambda c: _cfg(c, task_names=("like", "like"))(),
     ValueError, r"task names must be unique, got \['like', 'like'\]"),
    ("zero_experts", lambda c: _cfg(c, num_experts=0)(), ValueError, r"num_experts must be a whole number >= 1, got 0"),
    ("negative_experts", lambda c: _cfg(c, num_experts=-2)(), ValueError, r"num_experts .* got -2"),
    ("fractional_experts", lambda c: _cfg(c, num_experts=2.5)(), ValueError, r"num_experts .* got 2\.5"),
    ("zero_width_expert", lambda c: _cfg(c, expert_hidden=(16, 0))(),
     ValueError, r"ModelConfig\.expert_hidden must hold positive ints \(layer widths\), got \(16, 0\)"),
    ("negative_tower_width", lambda c: _cfg(c, tower_hidden=(-4,))(), ValueError, r"ModelConfig\.tower_hidden"),
    ("zero_gate_width", lambda c: _cfg(c, gate_hidden=(0,))(), ValueError, r"ModelConfig\.gate_hidden"),
    ("no_expert_layers", lambda c: _cfg(c, expert_hidden=())(), ValueError, r"expert_hidden must have at least one"),
    ("dropout_one", lambda c: _cfg(c, dropout=1.0)(), ValueError, r"dropout must be in \[0, 1\), got 1\.0"),
    ("init_std_zero", lambda c: _cfg(c, init_std=0.0)(), ValueError, r"init_std must be positive or None"),
    ("unknown_activation", lambda c: _cfg(c, activation="gelu")(), ValueError, r"unknown activation 'gelu'"),
    ("no_features", lambda c: mm.ModelConfig(()), ValueError, r"ModelConfig\.features is empty: pass encoder\.features"),
    ("task_names_a_string", lambda c: _cfg(c, task_names="finish")(),
     ValueError, r"ModelConfig\.task_names must be a sequence, got 'finish'"),
    ("unknown_model_kind", lambda c: mm.build_model("mlp", c.cfg),
     ValueError, r"unknown model kind 'mlp'; choose one of \['cgc', 'esmm', 'mmoe', 'omoe', 'ple', 'shared_bottom'\]"),
    # --- model inputs --------------------------------------------------------
    ("ids_out_of_range", lambda c: c.model(torch.full((2, 8), 10**6), torch.zeros(2, 1)),
     ValueError, r"feature 'uid': ids must lie in \[0, \d+\).*fitted FeatureEncoder"),
    ("negative_ids", lambda c: c.model(torch.full((2, 8), -1), torch.zeros(2, 1)),
     ValueError, r"feature 'uid': ids must lie in"),
    ("float_ids", lambda c: c.model(torch.zeros(2, 8), torch.zeros(2, 1)), TypeError, r"ids must be int64"),
    ("dense_wrong_width", lambda c: c.model(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 3)),
     ValueError, r"dense must have shape \(B, 1\), got \(2, 3\)"),
    ("wrong_encoder_for_model", lambda c: mm.predict(c.model, c.test, encoder=mm.FeatureEncoder(["uid"]).fit(c.train)),
     ValueError, r"the encoder does not match the model .*columns: encoder \['uid'\] vs model \['uid', 'user_city'"),
    # --- trainer -------------------------------------------------------------
    ("task_weights_length", lambda c: mm.fit(c.model, c.train, mm.TrainConfig(task_weights=(1.0,)), encoder=c.enc),
     ValueError, r"task_weights has 1 entries but the model has 2 tasks \['finish', 'like'\]"),
    ("task_weights_negative", lambda c: _tc(task_weights=(1.0, -1.0))(),
     ValueError, r"task_weights must be non-negative with at least one positive"),
    ("labels_wrong_shape", lambda c: mm.fit(c.model, (c.x, c.y[:, :1]), c.quick),
     ValueError, r"train: labels must have shape \(rows, 2\) for tasks \['finish', 'like'\], got \(\d+, 1\)"),
    ("labels_inf", lambda c: mm.fit(c.model, (c.x, _labels(c, cells={(5, 1): np.inf})), c.quick),
     ValueError, r"train: label of task 'like' at row 5 is inf; labels must be finite, or NaN where"),
    ("labels_outside_0_1", lambda c: mm.fit(c.model, (c.x, _labels(c, cells={(7, 0): 2.0})), c.quick),
     ValueError, r"train: binary task 'finish' has label 2\.0 at row 7; binary labels must be 0 or 1"),
    ("labels_not_numbers", lambda c: mm.fit(c.model, (c.x, [["a", "b"]] * len(c.x)), c.quick),
     ValueError, r"train: labels must be numbers, one column per task"),
    ("labels_rows_mismatch", lambda c: mm.fit(c.model, (c.x, c.y[:10]), c.quick),
     ValueError, r"train: \d+ rows of features but 10 rows of labels"),
    ("frame_label_inf", lambda c: mm.fit(c.model, _frame(c, like=_with_nan("like", 3, -np.inf)), c.quick,
                                         encoder=c.enc),
     ValueError, r"train: label of task 'like' at row 3 is -inf"),
    ("frame_lacks_label_column", lambda c: mm.fit(c.model, _frame(c, like=None), c.quick, encoder=c.enc),
     ValueError, r"train lacks label column\(s\) \['like'\]"),
    ("frame_without_encoder", lambda c: mm.fit(c.model, c.train, c.quick),
     ValueError, r"train is a DataFrame: pass the fitted encoder="),
    ("empty_training_set", lambda c: mm.fit(c.model, c.train.iloc[:0], c.quick, encoder=c.enc),
     ValueError, r"the training set is empty"),
    ("empty_evaluation_set", lambda c: mm.evaluate(c.model, c.test.iloc[:0], encoder=c.enc),
     ValueError, r"the evaluation set is empty"),
    ("zero_epochs", lambda c: _tc(epochs=0)(), ValueError, r"epochs must be a whole number >= 1, got 0"),
    ("fractional_epochs", lambda c: _tc(epochs=1.5)(), ValueError, r"epochs must be a whole number >= 1, got 1\.5"),
    ("zero_batch_size", lambda c: _tc(batch_size=0)(), ValueError, r"batch_size must be a whole number >= 1, got 0"),
    ("negative_lr", lambda c: _tc(lr=-0.1)(), ValueError, r"lr must be a positive number, got -0\.1"),
    ("unknown_optimizer", lambda c: _tc(optimizer="rmsprop")(),
     ValueError, r"unknown optimizer 'rmsprop'; choose one of \['adagrad', 'adam', 'sgd'\]"),
    ("unknown_device", lambda c: _tc(device="tpu")(), ValueError, r"unknown device 'tpu'; use 'cpu', 'cuda'"),
    ("predict_batch_size_zero", lambda c: mm.predict(c.model, c.test, encoder=c.enc, batch_size=0),
     ValueError, r"batch_size must be >= 1, got 0"),
    ("fit_not_a_model", lambda c: mm.fit(torch.nn.Linear(2, 2), c.train), TypeError, r"expected an MMoE / OMoE"),
    ("fit_config_not_a_trainconfig", lambda c: mm.fit(c.model, c.train, {"epochs": 1}, encoder=c.enc),
     TypeError, r"config must be a TrainConfig, got dict"),
]


@pytest.mark.parametrize("name, call, exc_type, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_arguments(ctx, name, call, exc_type, pattern):
    with pytest.raises(exc_type) as info:
        call(ctx)
    assert type(info.value) is exc_type or (exc_type is ValueError and type(info.value) is mm.DataError), \
        f"{type(info.value).__name__}: {info.value}"
    assert re.search(pattern, str(info.value)), str(info.value)


def test_feature_errors_carry_the_column(ctx):
    with pytest.raises(mm.DataError) as info:
        ctx.enc.transform(_frame(ctx, author_id=None))
    assert info.value.column == "author_id" and info.value.path is None


def test_cuda_absent_is_said_plainly(ctx):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present on this machine")
    for call in (lambda: mm.fit(ctx.model, ctx.train, mm.TrainConfig(epochs=1, device="cuda", progress=False),
                                encoder=ctx.enc),
                 lambda: mm.predict(ctx.model, ctx.test, encoder=ctx.enc, device="cuda"),
                 lambda: mm.resolve_device("cuda:0")):
        with pytest.raises(ValueError, match=r"device 'cuda(:0)?' was asked for, but CUDA is not available here"):
            call()


# ---------------------------------------------------------------------------
# Not errors: what happens instead
# ---------------------------------------------------------------------------

def test_unseen_category_maps_to_oov(ctx):
    df = _frame(ctx, uid=lambda s: s.where(s.index != 0, 987654321))
    ids = ctx.enc.transform(df).ids
    assert ids[0, 0].item() == mm.OOV


def test_missing_category_gets_its_own_id(ctx):
    df = _frame(ctx, uid=_with_nan("uid", 1))
    ids = ctx.enc.transform(df).ids
    assert ids[1, 0].item() == mm.MISSING
    assert mm.MISSING not in (mm.OOV, mm.PAD)


def test_dense_fill_replaces_nan_when_chosen(ctx):
    enc = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, dense_fill=0.0).fit(ctx.train)
    df = _frame(ctx, duration_time=_with_nan("duration_time", 4))
    dense = enc.transform(df).dense
    low, high = enc.scalers["duration_time"].low, enc.scalers["duration_time"].high
    assert torch.isfinite(dense).all()
    assert dense[4, 0].item() == pytest.approx((0.0 - low) / (high - low))


def test_single_class_split_gives_nan_auc_with_a_warning(ctx):
    df = _frame(ctx, like=0)
    with pytest.warns(RuntimeWarning, match=r"task 'like': the evaluation split holds only one class"):
        metrics = mm.evaluate(ctx.model, df, encoder=ctx.enc)
    assert np.isnan(metrics["like"]["auc"])
    assert np.isfinite(metrics["like"]["logloss"]) and np.isfinite(metrics["finish"]["auc"])


def test_single_task_models_are_legal(ctx):
    """Decision recorded in ModelConfig's docstring: one task is the single-task baseline."""
    cfg = mm.ModelConfig(ctx.enc.features, task_names=("finish",), task_types=("binary",),
                         expert_hidden=(8,), gate_hidden=(), tower_hidden=(4,))
    for kind in mm.MODELS:
        if kind == "esmm":  # the funnel has two tasks by definition (click, click and conversion)
            with pytest.raises(ValueError, match="ESMM models the funnel with two binary tasks"):
                mm.build_model(kind, cfg)
            continue
        model = mm.build_model(kind, cfg)
        mm.fit(model, ctx.train, ctx.quick, encoder=ctx.enc)
        assert mm.predict(model, ctx.test, encoder=ctx.enc).shape == (len(ctx.test), 1)
