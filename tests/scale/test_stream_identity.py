"""The stream refuses a file that changed under its index, and says plainly what a file too small
to split holds (a header line, one row)."""
from __future__ import annotations

import os
import shutil

import pytest

import mmoe_annotated as mm
from mmoe_annotated.scale import stream as S


@pytest.fixture
def indexed(tmp_path):
    df = mm.make_byterec(1500, seed=5)
    path = mm.write_byterec(df, tmp_path / "byterec.txt")
    index = S.index_byterec(path, chunk_bytes=8000)
    train, _ = index.split(0.8)
    enc = S.fit_encoder(index, train, mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES))
    return path, index, train, enc


def _flip_label(path, line: int) -> None:
    """Line ``line`` (1-based) with its ``finish`` label flipped: the same length, so the same layout."""
    lines = path.read_bytes().split(b"\n")
    fields = lines[line - 1].split(b"\t")
    col = mm.COLUMNS.index("finish")
    fields[col] = b"1" if fields[col] == b"0" else b"0"
    lines[line - 1] = b"\t".join(fields)
    with open(path, "r+b") as fh:  # in place: the same inode
        fh.write(b"\n".join(lines))


def _stream_all(index, train, enc):
    return list(S.ByteRecStream(index, train, enc, batch_size=100, shuffle=False))


def test_an_unchanged_file_streams(indexed):
    path, index, train, enc = indexed
    assert index.identity == mm.data.reader.FileIdentity.of(os.stat(path))
    assert all(c.sha256 and len(c.sha256) == 64 for c in index.chunks)
    assert sum(len(b[2]) for b in _stream_all(index, train, enc)) == sum(hi - lo for _, lo, hi in train)


def test_labels_edited_in_place_with_the_same_size_and_time_are_refused(indexed):
    """The hardest case: same size, same modification time (set back), same inode; only the
    content differs. The old stream read the edited label with the old index, silently."""
    path, index, train, enc = indexed
    st = os.stat(path)
    _flip_label(path, 1000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_ino == st.st_ino
    with pytest.raises(mm.DataError, match=r"differ from when the file was indexed.*index it again") as info:
        _stream_all(index, train, enc)
    assert info.value.path == str(path)


def test_a_rewrite_that_changes_the_modification_time_is_refused(indexed):
    path, index, train, enc = indexed
    st = os.stat(path)
    _flip_label(path, 10)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(mm.DataError, match=r"changed since it was indexed \(its modification time changed\)"):
        S.read_part(index, train[0])


def test_another_file_under_the_same_name_is_refused(indexed, tmp_path):
    path, index, train, enc = indexed
    st = os.stat(path)
    other = tmp_path / "regenerated.txt"
    shutil.copyfile(path, other)  # the same bytes, even: it is still not the indexed file
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(other, path)
    with pytest.raises(mm.DataError, match=r"another file under the same name \(its inode changed\)"):
        S.read_part(index, train[0])


def test_an_appended_file_is_refused(indexed):
    path, index, train, enc = indexed
    with open(path, "ab") as fh:
        fh.write(path.read_bytes().split(b"\n")[0] + b"\n")
    with pytest.raises(mm.DataError, match=r"its size went from [\d,]+ to [\d,]+ bytes"):
        _stream_all(index, train, enc)


# ---------------------------------------------------------------------------
# Files too small to split
# ---------------------------------------------------------------------------

def _one_line(tmp_path, text: str):
    path = tmp_path / "small.txt"
    path.write_text(text + "\n")
    return path


def test_a_file_of_only_a_header_line_says_so(tmp_path):
    path = _one_line(tmp_path, "\t".join(mm.COLUMNS))
    with pytest.raises(mm.DataError, match=r"line 1.*looks like a header row, but ByteRec files have none") as info:
        S.index_byterec(path).split(0.8)
    assert info.value.line == 1


def test_a_header_above_the_rows_is_refused_at_indexing(tmp_path):
    rows = mm.write_byterec(mm.make_byterec(50, seed=1), tmp_path / "rows.txt").read_text()
    path = tmp_path / "with_header.txt"
    path.write_text("\t".join(mm.COLUMNS) + "\n" + rows)
    with pytest.raises(mm.DataError, match="looks like a header row"):
        S.index_byterec(path)


def test_a_file_of_one_row_says_how_many_rows_it_holds(tmp_path):
    rows = mm.write_byterec(mm.make_byterec(3, seed=1), tmp_path / "rows.txt").read_text().splitlines()
    path = _one_line(tmp_path, rows[0])
    index = S.index_byterec(path)
    assert index.rows == 1
    with pytest.raises(mm.DataError, match=r"holds 1 row; splitting it into training and test rows needs at least 2"):
        index.split(0.8)
