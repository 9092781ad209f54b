"""Missing labels in ByteRec files: refused by default, read as NaN with ``missing_labels=True``.

Chapter 12's task masks need rows whose label for a task does not exist. The loader's default
stays strict (an empty label field is an error naming file, line and column, as the troubleshooting
appendix shows); the opt-in reads an *empty* label field as NaN and refuses everything else it
refused before.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mmoe_annotated as mm


def _blank(path, line: int, column: str, value: str = "") -> None:
    lines = path.read_text().split("\n")
    fields = lines[line - 1].split("\t")
    fields[mm.COLUMNS.index(column)] = value
    lines[line - 1] = "\t".join(fields)
    path.write_text("\n".join(lines))


@pytest.fixture
def df():
    return mm.make_byterec(300, seed=5)


@pytest.fixture
def path(df, tmp_path):
    path = mm.write_byterec(df, tmp_path / "byterec.txt")
    _blank(path, 4, "like")
    _blank(path, 9, "finish", "  ")  # only spaces: empty too
    _blank(path, 120, "finish")
    _blank(path, 120, "like")  # a row with no label at all
    return path


def test_an_empty_label_is_refused_by_default(path):
    with pytest.raises(mm.DataError) as err:
        mm.load_byterec(path)
    assert str(err.value) == f"{path}, line 4, column 'like': missing label"
    assert (err.value.line, err.value.column) == (4, "like")


def test_missing_labels_reads_an_empty_label_as_nan(df, path):
    got = mm.load_byterec(path, missing_labels=True)
    assert [got[t].dtype for t in mm.TASKS] == [np.float64, np.float64]
    missing = {(3, "like"), (8, "finish"), (119, "finish"), (119, "like")}  # rows, 0-based
    for t in mm.TASKS:
        nan = set(np.flatnonzero(got[t].isna().to_numpy()))
        assert nan == {r for r, c in missing if c == t}
        keep = ~got[t].isna()
        assert (got[t][keep].to_numpy() == df[t][keep].to_numpy()).all()
    others = [c for c in mm.COLUMNS if c not in mm.TASKS]
    pd.testing.assert_frame_equal(got[others], mm.load_byterec(mm.write_byterec(df, path.with_name("b.txt")))[others])


@pytest.mark.parametrize("chunk_bytes", [600, 1 << 20])
def test_a_file_without_missing_labels_reads_the_same_with_the_option(df, tmp_path, chunk_bytes):
    """Chunks with and without an empty label field (fast and careful parsers) give one dtype."""
    clean = mm.write_byterec(df, tmp_path / "clean.txt")
    got = mm.load_byterec(clean, missing_labels=True, chunk_bytes=chunk_bytes)
    ref = mm.load_byterec(clean)
    assert [got[t].dtype for t in mm.TASKS] == [np.float64, np.float64]
    pd.testing.assert_frame_equal(got, ref.astype({t: np.float64 for t in mm.TASKS}))


def test_small_chunks_give_the_same_frame(path):
    whole = mm.load_byterec(path, missing_labels=True)
    pieces = mm.load_byterec(path, missing_labels=True, chunk_bytes=600)
    pd.testing.assert_frame_equal(whole, pieces)


@pytest.mark.parametrize("value, message", [("2", "label '2' is not 0 or 1"), ("nan", "'nan' is not a number"),
                                            ("yes", "'yes' is not a number"), ("0.5", "label '0.5' is not 0 or 1")])
def test_anything_else_invalid_in_a_label_is_still_refused(path, value, message):
    _blank(path, 7, "like", value)
    with pytest.raises(mm.DataError) as err:
        mm.load_byterec(path, missing_labels=True)
    assert str(err.value) == f"{path}, line 7, column 'like': {message}"


def test_an_empty_id_is_still_refused(path):
    _blank(path, 6, "uid")
    with pytest.raises(mm.DataError, match=r"line 6, column 'uid': missing value"):
        mm.load_byterec(path, missing_labels=True)


def test_a_missing_label_column_is_still_an_error(df, tmp_path):
    path = tmp_path / "no_like.txt"
    df.drop(columns="like").to_csv(path, sep="\t", header=False, index=False, lineterminator="\n")
    with pytest.raises(mm.DataError, match=r"line 1: has 11 tab-separated columns, expected 12"):
        mm.load_byterec(path, missing_labels=True)


def test_skip_mode_keeps_missing_labels_and_skips_bad_ones(path):
    _blank(path, 7, "like", "2")
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        got = mm.load_byterec(path, on_bad_lines="skip", missing_labels=True)
    assert len(got) == 299 and [n for n, _ in got.attrs["bad_lines"]] == [7]
    assert got["like"].isna().sum() == 2 and got["finish"].isna().sum() == 2
