"""The scoring service over real HTTP: started as a child process on a free loopback port and called
with httpx. Correct scores (mm.predict's), a 4xx naming the row and the field for each kind of bad
input and never a 500, concurrent clients, a clean SIGTERM, and no service from a damaged export."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import pytest

import mmoe_annotated as mm
from mmoe_annotated.serve import ServiceProcess, load_export

from .common import data, json_rows, trained, unseen

pytestmark = pytest.mark.filterwarnings("ignore:column .* not in the training vocabulary:RuntimeWarning")

TOLERANCE = 1e-5
MAX_ROWS = 512
MAX_BODY = 256 * 1024


@pytest.fixture(scope="module")
def model_and_rows(tmp_path_factory):
    df, train, enc = data(3000)
    model = trained("mmoe", train, enc)
    folder = mm.export(model, enc, tmp_path_factory.mktemp("export") / "mmoe", format=("onnx", "torch"))
    rows = pd.concat([df.tail(600), unseen(df)], ignore_index=True)  # IDs the encoder never saw included
    return model, enc, folder, rows, mm.predict(model, rows, encoder=enc)


@pytest.fixture(scope="module")
def service(model_and_rows):
    """The ONNX service; on teardown it must stop on SIGTERM with status 0 and no traceback."""
    _, _, folder, _, _ = model_and_rows
    process = ServiceProcess(folder, "--max-rows", str(MAX_ROWS), "--max-body-bytes", str(MAX_BODY),
                             "--threads", "1").start()
    yield process
    assert process.stop() == 0, process.stderr
    assert "Traceback" not in process.stderr, process.stderr


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=30) as c:
        yield c


def scores(reply: httpx.Response, tasks=("finish", "like")) -> np.ndarray:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["tasks"] == list(tasks)
    return np.array([[row[t] for t in tasks] for row in body["scores"]])


def test_it_listens_on_loopback_and_says_what_it_serves(service, client, model_and_rows):
    _, _, folder, _, _ = model_and_rows
    assert service.url.startswith("http://127.0.0.1:")
    assert client.get("/health").json() == {"status": "ok"}
    meta = client.get("/metadata").json()
    assert meta["kind"] == "mmoe" and [t["name"] for t in meta["tasks"]] == ["finish", "like"]
    assert meta["package_version"] == mm.__version__ and meta["runtime"] == "onnx"
    assert meta["checksum"] == load_export(folder).checksum
    assert meta["max_rows"] == MAX_ROWS and meta["columns"]["sparse"] == list(mm.SPARSE_FEATURES)


def test_scores_equal_mm_predict(client, model_and_rows):
    _, _, _, rows, expected = model_and_rows
    payload = json_rows(rows)
    got = scores(client.post("/score", json={"rows": payload[:MAX_ROWS]}))
    assert got.shape == (MAX_ROWS, 2) and np.abs(got - expected[:MAX_ROWS]).max() <= TOLERANCE
    rest = scores(client.post("/score", json={"rows": payload[MAX_ROWS:]}))  # the unseen IDs are here
    assert np.abs(rest - expected[MAX_ROWS:]).max() <= TOLERANCE
    one = scores(client.post("/score", json={"rows": payload[-1:]}))
    assert one.shape == (1, 2) and np.abs(one - expected[-1:]).max() <= TOLERANCE
    assert client.post("/score", json={"rows": []}).json() == {"tasks": ["finish", "like"], "scores": [],
                                                                "calibrated": False, "fused": False}


def test_values_of_other_types_that_mean_the_same_score_the_same(client, model_and_rows):
    _, _, _, rows, expected = model_and_rows
    row = json_rows(rows.head(1))[0]
    # 42, 42.0 and "42" are one category (chapter 3); "42.0" as a string is another value
    variants = [row, {k: (str(int(v)) if k in mm.SPARSE_FEATURES else v) for k, v in row.items()},
                {k: (float(v) if k in mm.SPARSE_FEATURES else v) for k, v in row.items()},
                dict(row, extra_field="ignored", finish=None)]
    got = scores(client.post("/score", json={"rows": variants}))
    assert np.abs(got - expected[0]).max() <= TOLERANCE


def _good_row(model_and_rows) -> dict:
    return json_rows(model_and_rows[3].head(1))[0]


BAD = [  # (name, how to make the request, status, words the message must hold)
    ("missing column", lambda r: {"json": {"rows": [r, {k: v for k, v in r.items() if k != "item_id"}]}},
     422, ["row 1", "'item_id'", "missing"]),
    ("a list for an ID", lambda r: {"json": {"rows": [dict(r, uid=[1, 2])]}}, 422, ["row 0", "'uid'", "a list"]),
    ("a boolean for an ID", lambda r: {"json": {"rows": [r, r, dict(r, device=True)]}}, 422,
     ["row 2", "'device'", "a boolean"]),
    ("a string for a number", lambda r: {"json": {"rows": [dict(r, duration_time="long")]}}, 422,
     ["row 0", "'duration_time'", "must be a number"]),
    ("null for a number", lambda r: {"json": {"rows": [dict(r, duration_time=None)]}}, 422,
     ["'duration_time'", "null"]),
    ("a number beyond float32 once scaled", lambda r: {"json": {"rows": [r, dict(r, duration_time=1e300)]}}, 422,
     ["duration_time", "row 1"]),
    ("an integer beyond float64", lambda r: {"content": b'{"rows": [' + json.dumps(r)[:-1].encode()
                                             + b', "duration_time": 1' + b"0" * 400 + b"}]}"}, 422,
     ["'duration_time'", "too large"]),
    ("too many rows", lambda r: {"json": {"rows": [r] * (MAX_ROWS + 1)}}, 413, ["too many rows", str(MAX_ROWS)]),
    ("not JSON", lambda r: {"content": b"uid=1&item_id=2"}, 400, ["not JSON"]),
    ("JSON's NaN", lambda r: {"content": b'{"rows": [{"uid": NaN}]}'}, 400, ["not JSON", "NaN"]),
    ("not UTF-8", lambda r: {"content": b'{"rows": "\xff\xfe"}'}, 400, ["UTF-8"]),
    ("an empty body", lambda r: {"content": b""}, 400, ["empty"]),
    ("deep nesting", lambda r: {"content": b"[" * 100_000 + b"]" * 100_000}, 400, ["nests too deeply"]),
    ("an oversized body", lambda r: {"content": b" " * (MAX_BODY + 1)}, 413, ["limit", str(MAX_BODY)]),
    ("an oversized body without a length", lambda r: {"content": iter([b" " * 65536] * 5)}, 413, ["limit"]),
    ("a list for the body", lambda r: {"json": [r]}, 422, ["JSON object", "a list"]),
    ("no rows", lambda r: {"json": {"row": [r]}}, 422, ["'rows'", "missing", "'row'"]),
    ("rows not a list", lambda r: {"json": {"rows": r}}, 422, ["'rows'", "a list of row objects"]),
    ("a row not an object", lambda r: {"json": {"rows": [r, 5]}}, 422, ["row 1", "an object"]),
    ("an ID that overflows to infinity", lambda r: {"content": b'{"rows": [' + json.dumps(r)[:-1].encode()
                                                    + b', "uid": 1e400}]}'}, 422, ["row 0", "'uid'", "finite"]),
]


@pytest.mark.parametrize("name, make, status, words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_that_names_the_problem(client, model_and_rows, name, make, status, words):
    reply = client.post("/score", **make(_good_row(model_and_rows)))
    assert reply.status_code == status, (name, reply.status_code, reply.text)
    message = reply.json()["error"]
    for word in words:
        assert word in message, (name, message)


def _raw(url: str, request: bytes) -> bytes:
    """Send bytes no HTTP client would send; the reply's first line."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        return s.recv(4096).split(b"\r\n", 1)[0]


def test_wrong_routes_methods_and_headers_are_4xx_and_the_service_lives_on(service, client):
    assert client.get("/score").status_code == 405
    assert client.post("/health").status_code == 405
    assert client.get("/nowhere").status_code == 404
    bad_length = b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"
    assert _raw(service.url, bad_length).startswith(b"HTTP/1.1 400")
    assert _raw(service.url, b"NONSENSE\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert client.get("/health").status_code == 200


def test_random_bodies_never_get_a_500(client, model_and_rows):
    rng = np.random.default_rng(0)
    good = json.dumps({"rows": [_good_row(model_and_rows)]}).encode()
    junk = [b"null", b"true", b"1", b'"rows"', b"{}", b'{"rows": null}', b'{"rows": [null]}', b'{"rows": [[]]}',
            b'{"rows": [{}]}', b'{"rows": {}}', b"\x00" * 10, b'{"rows": [{"uid": {}}]}']
    for _ in range(150):  # the good body cut or with a byte changed
        body = bytearray(good)
        if rng.random() < 0.5:
            del body[rng.integers(1, len(body)):]
        else:
            body[rng.integers(len(body))] = int(rng.integers(256))
        junk.append(bytes(body))
    statuses = {client.post("/score", content=body).status_code for body in junk}
    assert statuses <= {200, 400, 413, 422}, statuses


def test_concurrent_clients_all_get_the_right_answers(service, model_and_rows):
    _, _, _, rows, expected = model_and_rows
    payload = json_rows(rows)
    clients, requests_each = 8, 200

    def one_client(seed: int) -> float:
        rng = np.random.default_rng(seed)
        worst = 0.0
        with httpx.Client(base_url=service.url, timeout=60) as c:
            for _ in range(requests_each):
                picked = rng.choice(len(payload), size=int(rng.integers(1, 9)), replace=False)
                got = scores(c.post("/score", json={"rows": [payload[i] for i in picked]}))
                worst = max(worst, float(np.abs(got - expected[picked]).max()))
        return worst

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        worst = max(pool.map(one_client, range(clients)))
    took = time.monotonic() - started
    print(f"{clients} clients x {requests_each} requests in {took:.1f} s")
    assert worst <= TOLERANCE and took < 120


def test_the_torch_runtime_serves_the_same_and_stops_cleanly(model_and_rows):
    _, _, folder, rows, expected = model_and_rows
    process = ServiceProcess(folder, "--runtime", "torch", "--threads", "1").start()
    try:
        with httpx.Client(base_url=process.url, timeout=30) as c:
            assert c.get("/metadata").json()["runtime"] == "torch"
            got = scores(c.post("/score", json={"rows": json_rows(rows.head(100))}))
        assert np.abs(got - expected[:100]).max() <= TOLERANCE
    finally:
        code = process.stop()
    assert code == 0 and "Traceback" not in process.stderr, process.stderr
    assert process.stdout.strip().endswith("stopped")


def test_a_damaged_export_is_never_served(model_and_rows, tmp_path):
    _, _, folder, _, _ = model_and_rows
    copy = shutil.copytree(folder, tmp_path / "copy")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 3] ^= 0x10
    (copy / "model.onnx").write_bytes(bytes(data))
    done = subprocess.run([sys.executable, "-m", "mmoe_annotated.serve", "--model", str(copy), "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "model.onnx: is damaged" in done.stderr and "not serving" in done.stderr
    assert "serving" not in done.stdout
