"""load_byterec against hostile or unlucky files: special files, binary content, huge fields, huge IDs,
symbolic links, permissions, a last line without a line end, and the loader's memory.

Each kind has several cases. Cases that could block or eat memory on a loader that gets them wrong run
guarded: in a thread with a time limit, or in a child process with a memory limit.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

import mmoe_annotated as mm

REPO = Path(__file__).resolve().parents[2]
ROW = "1000\t-1\t501619\t12104\t180\t0\t0\t0\t-1\t4066\t53085917215\t{}"
GOOD = "".join(ROW.format(d) + "\n" for d in ("9.0", "14.0", "12.0", "23.0"))


def _load_with_time_limit(path, seconds=20.0):
    """load_byterec in a thread: a loader that blocks (a FIFO without a writer) fails the test
    instead of hanging the suite."""
    result = {}

    def work():
        try:
            result["df"] = mm.load_byterec(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"load_byterec({path}) still blocked after {seconds} s"
    return result


def _load_in_child(*paths, memory_limit=2 << 30, without_privileges=False, timeout=180):
    """load_byterec on each path in a child process with its data memory capped; one
    (error type, message) or ("ok", rows) per path. ``without_privileges``: when the tests run as
    root, the child drops root's capabilities, so file permissions apply to it."""
    code = f"""
import json, resource, sys
resource.setrlimit(resource.RLIMIT_DATA, ({memory_limit}, {memory_limit}))
import mmoe_annotated as mm
for path in sys.argv[1:]:
    try:
        df = mm.load_byterec(path)
        print(json.dumps(["ok", len(df)]))
    except BaseException as exc:
        print(json.dumps([type(exc).__name__, str(exc)]))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", code, *map(str, paths)]
    if without_privileges and os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop privileges")
        command = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", *command]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(paths), out.stderr[-2000:]
    return [json.loads(line) for line in lines]


# ---------------------------------------------------------------------------
# Not a regular file: refused before reading
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "data.txt"
    os.mkfifo(fifo)
    result = _load_with_time_limit(fifo)
    err = result.get("error")
    assert isinstance(err, mm.DataError), result
    assert "is a FIFO (named pipe), not a regular file" in str(err) and err.path == str(fifo)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_devices_are_refused():
    devices = ["/dev/null", "/dev/zero", "/dev/urandom"]  # empty, endless zeros, endless noise
    for device, (kind, message) in zip(devices, _load_in_child(*devices)):
        assert kind == "DataError", message
        assert message.startswith(f"{device}: is a character device, not a regular file"), message


def test_socket_is_refused(tmp_path):
    path = Path("/tmp") / f"mmoe-{os.getpid()}.sock"  # socket paths must be short
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        result = _load_with_time_limit(path)
        assert isinstance(result.get("error"), mm.DataError), result
        assert "is a socket, not a regular file" in str(result["error"])
    finally:
        sock.close()
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# Binary content: refused at the first chunk, not after reading the whole file
# ---------------------------------------------------------------------------

def _bytes_read() -> int:
    return int(re.search(r"rchar: (\d+)", Path("/proc/self/io").read_text()).group(1))


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
@pytest.mark.parametrize("head, line, column, pattern", [
    (b"", 1, "uid", r"contains NUL bytes"),  # a file of zeros
    (GOOD.encode(), 5, "uid", r"contains NUL bytes"),  # good lines, then zeros
    (b"\x1f\x8b\x08\x00", None, None, r"is gzip-compressed"),  # a big archive
])
def test_binary_content_is_refused_early(tmp_path, head, line, column, pattern):
    path = tmp_path / "big.txt"
    size = 256 << 20
    with open(path, "wb") as f:  # a sparse file: 256 MiB of zeros that cost no disk
        f.write(head)
        f.truncate(size)
    before = _bytes_read()
    with pytest.raises(mm.DataError, match=pattern) as info:
        mm.load_byterec(path)
    assert (info.value.line, info.value.column) == (line, column)
    assert _bytes_read() - before < size // 8, "the loader read most of the file before refusing it"


# ---------------------------------------------------------------------------
# Messages quote a short prefix of a field, however long the field
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("column, value, pattern", [
    ("uid", "x" * 10_000_000, r"column 'uid': 'xxxxxxxx.*'\.\.\. \(10,000,000 characters\) is not a number"),
    ("duration_time", "9" * 1_000_000 + "s", r"'9999.*'\.\.\. \(1,000,001 characters\) is not a number"),
    ("item_id", "1." + "5" * 100_000, r"'1\.555.*'\.\.\. \(100,002 characters\) is not a whole number"),
    ("like", "yes" * 50_000, r"column 'like': 'yesyes.*'\.\.\. \(150,000 characters\) is not a number"),
])
def test_messages_quote_a_short_prefix(tmp_path, column, value, pattern):
    fields = ROW.format("9.0").split("\t")
    fields[mm.COLUMNS.index(column)] = value
    path = tmp_path / "long_field.txt"
    path.write_text(GOOD + "\t".join(fields) + "\n")
    with pytest.raises(mm.DataError) as info:
        mm.load_byterec(path)
    msg = str(info.value)
    assert re.search(pattern, msg), msg[:300]
    assert len(msg) < len(str(path)) + 200, f"message of {len(msg)} characters"
    assert (info.value.line, info.value.column) == (5, column)


def test_skip_mode_reasons_are_short_too(tmp_path):
    fields = ROW.format("9.0").split("\t")
    fields[0] = "y" * 1_000_000
    path = tmp_path / "long_field.txt"
    path.write_text(GOOD + "\t".join(fields) + "\n")
    with pytest.warns(UserWarning, match="skipped 1 bad line"):
        df = mm.load_byterec(path, on_bad_lines="skip")
    assert len(df) == 4 and len(df.attrs["bad_lines"][0][1]) < 200


# ---------------------------------------------------------------------------
# IDs at and above 2**53: exact, or refused; never rounded
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [2**53 + 1, -(2**53 + 1), 2**63 - 1, 12345678901234567])
@pytest.mark.parametrize("other_bad", [False, True])  # alone (the quick path) or beside a bad value (the careful path)
def test_big_ids_stay_exact(tmp_path, value, other_bad):
    fields = ROW.format("9.0").split("\t")
    fields[mm.COLUMNS.index("item_id")] = str(value)
    lines = GOOD + "\t".join(fields) + "\n"
    if other_bad:
        lines += ROW.format("abc") + "\n"
    path = tmp_path / "big_ids.txt"
    path.write_text(lines)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        df = mm.load_byterec(path, on_bad_lines="skip" if other_bad else "error")
    assert df["item_id"].dtype == np.int64
    assert int(df["item_id"].iloc[4]) == value


@pytest.mark.parametrize("text", ["9007199254740993.0", "9223372036854775808", "1e19", "-99999999999999999999"])
def test_ids_that_cannot_be_exact_are_refused(tmp_path, text):
    fields = ROW.format("9.0").split("\t")
    fields[mm.COLUMNS.index("uid")] = text
    path = tmp_path / "too_big.txt"
    path.write_text(GOOD + "\t".join(fields) + "\n")
    with pytest.raises(mm.DataError, match="is too large for an ID") as info:
        mm.load_byterec(path)
    assert (info.value.line, info.value.column) == (5, "uid")


# ---------------------------------------------------------------------------
# Symbolic links and permissions
# ---------------------------------------------------------------------------

def test_symlink_loop_is_named(tmp_path):
    a, b, me = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "me.txt"
    a.symlink_to(b)
    b.symlink_to(a)
    me.symlink_to(me)
    for path in (a, me):
        with pytest.raises(mm.DataError, match="is a symbolic link loop") as info:
            mm.load_byterec(path)
        assert "no such file" not in str(info.value) and info.value.path == str(path)


def test_dangling_symlink_names_its_target(tmp_path):
    link = tmp_path / "data.txt"
    link.symlink_to(tmp_path / "moved_away.txt")
    with pytest.raises(mm.DataError, match=r"is a symbolic link to '.*moved_away\.txt', which does not exist"):
        mm.load_byterec(link)


def test_symlink_to_a_good_file_loads(tmp_path):
    (tmp_path / "real.txt").write_text(GOOD)
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert len(mm.load_byterec(tmp_path / "link.txt")) == 4


@pytest.fixture()
def unreadable():
    """A folder for files whose permissions the test takes away (and gives back to clean up)."""
    root = Path(tempfile.mkdtemp(prefix="mmoe-perm-"))
    yield root
    for p in sorted(root.rglob("*"), reverse=True):
        p.chmod(0o700)
    shutil.rmtree(root)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unreadable_file_is_a_data_error(unreadable):
    path = unreadable / "locked.txt"
    path.write_text(GOOD)
    path.chmod(0o000)
    [(kind, message)] = _load_in_child(path, without_privileges=True)
    assert kind == "DataError", message
    assert message.startswith(f"{path}: cannot be read: permission denied; check the file's permissions"), message


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_file_in_a_closed_folder_is_a_data_error(unreadable):
    folder = unreadable / "closed"
    folder.mkdir()
    (folder / "data.txt").write_text(GOOD)
    folder.chmod(0o000)
    [(kind, message)] = _load_in_child(folder / "data.txt", without_privileges=True)
    assert kind == "DataError", message  # not a bare PermissionError
    assert "permission denied" in message


# ---------------------------------------------------------------------------
# A last line without a line end: kept when it parses completely, with a warning
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("tail, kept", [("23.0", 23.0), ("2", 2.0), ("23.", 23.0)])
def test_last_line_without_line_end_warns(tmp_path, tail, kept):
    path = tmp_path / "cut.txt"
    path.write_text(GOOD + ROW.format(tail))  # the writer stopped inside the last field
    with pytest.warns(UserWarning, match=r"the last line \(line 5\) has no line end; it parsed completely "
                                         r"and is kept .*possibly cut"):
        df = mm.load_byterec(path)
    assert len(df) == 5 and df["duration_time"].iloc[-1] == kept


@pytest.mark.parametrize("data", [GOOD, GOOD + "\n", GOOD.replace("\n", "\r\n"), GOOD + "  \n"])
def test_complete_last_line_says_nothing(tmp_path, data):
    path = tmp_path / "whole.txt"
    path.write_text(data, newline="")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(mm.load_byterec(path)) == 4


@pytest.mark.parametrize("cut, pattern", [(ROW.format(""), "missing value"),
                                          ("\t".join(ROW.split("\t")[:7]), "has 7 tab-separated columns")])
def test_last_line_cut_earlier_is_refused(tmp_path, cut, pattern):
    path = tmp_path / "cut.txt"
    path.write_text(GOOD + cut)
    with pytest.raises(mm.DataError, match=pattern) as info:
        mm.load_byterec(path)
    assert info.value.line == 5


# ---------------------------------------------------------------------------
# Chunks: the answer does not depend on where the chunks fall
# ---------------------------------------------------------------------------

def test_chunked_reading_matches_one_chunk(tmp_path):
    df = mm.make_byterec(600, seed=5)
    path = mm.write_byterec(df, tmp_path / "gen.txt")
    whole = mm.load_byterec(path, chunk_bytes=1 << 30)
    for chunk in (1, 997, 4096):
        part = mm.load_byterec(path, chunk_bytes=chunk)
        assert part.equals(whole)
    assert whole.equals(df.reset_index(drop=True))


@pytest.mark.parametrize("chunk", [64, 1000, 1 << 20])
def test_first_problem_and_skips_do_not_depend_on_chunks(tmp_path, chunk):
    lines = [ROW.format(f"{i}.0") for i in range(200)]
    lines[120] = lines[120].replace("\t0\t0\t0\t", "\t0\t5\t0\t")  # finish = 5 on line 121
    lines[150] = ""  # an empty line 151
    lines[30] = "x" + lines[30]  # line 31: uid 'x1000'
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n\n\n")
    with pytest.raises(mm.DataError) as info:
        mm.load_byterec(path, chunk_bytes=chunk)
    assert (info.value.line, info.value.column) == (31, "uid")
    with pytest.warns(UserWarning, match=r"skipped 3 bad line\(s\): 31, 121, 151;"):
        df = mm.load_byterec(path, on_bad_lines="skip", chunk_bytes=chunk)
    assert len(df) == 197


# ---------------------------------------------------------------------------
# Memory: what the loader allocates stays within a few times the file's size
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("crlf", [False, True])
def test_loader_allocates_at_most_four_times_the_file(tmp_path, crlf):
    path = mm.write_byterec(mm.make_byterec(300_000, seed=2), tmp_path / "gen.txt")
    if crlf:
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        df = mm.load_byterec(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(df) == 300_000
    assert peak < 4 * size, f"peak traced allocation {peak / size:.1f}x the file size"
