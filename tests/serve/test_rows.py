"""A request's rows, checked in process: what is accepted, and where each refusal points."""
from __future__ import annotations

import numpy as np
import pytest

import mmoe_annotated as mm
from mmoe_annotated.features import MISSING, OOV
from mmoe_annotated.serve.rows import RequestError, parse_body, rows_frame


@pytest.fixture(scope="module")
def enc():
    return mm.FeatureEncoder(["uid", "item_id"], ["duration_time"]).fit(mm.load_example(300))


def test_accepted_values_encode_as_the_encoder_says(enc):
    uid = int(mm.load_example(300)["uid"].iloc[0])
    frame = rows_frame({"rows": [{"uid": uid, "item_id": None, "duration_time": 3},
                                 {"uid": str(uid), "item_id": 10**30, "duration_time": 2.5, "label": 1},
                                 {"uid": float(uid), "item_id": "new", "duration_time": 0}]}, enc, 10)
    assert list(frame.columns) == ["uid", "item_id", "duration_time"]
    x = enc.transform(frame)
    assert len(set(x.ids[:, 0].tolist())) == 1 and x.ids[0, 0] not in (OOV, MISSING)  # 42, "42", 42.0
    assert x.ids[:, 1].tolist() == [MISSING, OOV, OOV]


def test_null_for_a_dense_value_is_filled_only_with_a_fill_value():
    df = mm.load_example(300)
    strict = mm.FeatureEncoder(["uid"], ["duration_time"]).fit(df)
    lenient = mm.FeatureEncoder(["uid"], ["duration_time"], dense_fill=0.0).fit(df)
    rows = {"rows": [{"uid": 1, "duration_time": None}]}
    with pytest.raises(RequestError, match=r"row 0, field 'duration_time': must be a number, got null, and the "
                                           "model has no fill value"):
        rows_frame(rows, strict, 10)
    x = lenient.transform(rows_frame(rows, lenient, 10))
    assert np.isfinite(x.dense.numpy()).all()


@pytest.mark.parametrize("body, status, message", [
    ({"rows": [{"uid": 1, "item_id": 2}]}, 422, "row 0, field 'duration_time': missing"),
    ({"rows": [{"uid": 1, "item_id": 2, "duration_time": 1}, {"uid": {"a": 1}, "item_id": 2, "duration_time": 1}]},
     422, "row 1, field 'uid': must be a string, a number or null, got an object"),
    ({"rows": [{"uid": "x" * 100, "item_id": False, "duration_time": 1}]}, 422, "row 0, field 'item_id'"),
    ({"rows": [{}] * 11}, 413, "field 'rows': too many rows: 11, at most 10"),
    ({"rows": "all"}, 422, "field 'rows': must be a list"),
    ([], 422, "must be a JSON object"),
])
def test_refusals_name_the_row_and_the_field(enc, body, status, message):
    with pytest.raises(RequestError) as err:
        rows_frame(body, enc, 10)
    assert err.value.status == status and message in str(err.value)
    assert err.value.body()["error"] == str(err.value)


@pytest.mark.parametrize("raw, message", [(b"", "empty"), (b"{", "not JSON"), (b"[NaN]", "NaN"),
                                          (b"\xff", "UTF-8"), (b"[" * 50_000, "nests too deeply")])
def test_bodies_that_are_not_json(raw, message):
    with pytest.raises(RequestError, match=message) as err:
        parse_body(raw)
    assert err.value.status == 400
