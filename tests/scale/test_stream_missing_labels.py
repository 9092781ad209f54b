"""The stream over a ByteRec file with missing labels (``index_byterec(missing_labels=True)``):
the loader's NaN labels, the same batches as the in-memory load, the same trained weights."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.scale import ddp
from mmoe_annotated.scale import stream as S
from mmoe_annotated.train.optimizers import make_optimizer

BATCH, EPOCHS, SEED, LR = 64, 2, 3, 0.05


def write_with_missing_labels(df: pd.DataFrame, path, seed: int, share: float = 0.2, both: bool = True):
    """``df`` as a ByteRec file with about ``share`` of each task's labels left empty; ``both``:
    some rows lose both labels, otherwise a row keeps at least one."""
    df = df.copy()
    rng = np.random.default_rng(seed)
    gone = rng.random((len(df), len(mm.TASKS))) < share  # (M, T)
    if not both:
        gone[gone.all(1), rng.integers(len(mm.TASKS))] = False
    for t, task in enumerate(mm.TASKS):
        col = df[task].astype("Int64")
        col[gone[:, t]] = pd.NA  # written as an empty field
        df[task] = col
    return mm.write_byterec(df, path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = write_with_missing_labels(mm.make_byterec(2000, seed=31), tmp_path_factory.mktemp("ml") / "b.txt", 1)
    frame = mm.load_byterec(path, missing_labels=True)
    assert frame[list(mm.TASKS)].isna().all(axis=1).any() and 0.1 < frame["like"].isna().mean() < 0.3
    return path, frame, S.index_byterec(path, chunk_bytes=9000, missing_labels=True)


def _encoder(index, train):
    return S.fit_encoder(index, train, mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES))


def _labels(frame) -> torch.Tensor:
    return torch.from_numpy(frame[list(mm.TASKS)].to_numpy(np.float32, copy=True))  # (M, T), NaN if missing


def test_the_default_index_refuses_the_empty_label_as_the_loader_does(data):
    path, _, _ = data
    index = S.index_byterec(path, chunk_bytes=9000)
    with pytest.raises(mm.DataError) as loader:
        mm.load_byterec(path)
    with pytest.raises(mm.DataError) as streamed:
        _encoder(index, index.split(0.8)[0])
    assert str(streamed.value) == str(loader.value) and "missing label" in str(loader.value)


def test_the_stream_yields_the_in_memory_batches(data):
    path, frame, index = data
    train, test = index.split(0.8)
    assert len(index.chunks) > 5 and index.missing_labels
    enc = _encoder(index, train)
    ref_train, ref_test = mm.split_by_row(frame, 0.8)
    assert enc.to_dict() == mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES).fit(ref_train).to_dict()
    x, y = enc.transform(ref_train), _labels(ref_train)
    batches = list(S.ByteRecStream(index, train, enc, batch_size=BATCH, shuffle=False))
    assert len(batches) == -(-len(ref_train) // BATCH)
    for (ids, dense, yb), rows in zip(batches, torch.arange(len(ref_train)).split(BATCH)):
        assert torch.equal(ids, x.ids[rows]) and torch.equal(dense, x.dense[rows])
        torch.testing.assert_close(yb, y[rows], rtol=0, atol=0, equal_nan=True)
    # shuffled: the same rows, labels and missing labels included, in another order
    got = torch.cat([b[2] for b in S.ByteRecStream(index, train, enc, batch_size=BATCH, buffer_rows=500, seed=1)])
    assert sorted(map(tuple, got.nan_to_num(7).tolist())) == sorted(map(tuple, y.nan_to_num(7).tolist()))
    # the test split as predict_parts reads it: float labels, NaN where missing
    model = mm.build_model("mmoe", mm.ModelConfig(enc.features, seed=SEED))
    _, labels = ddp.predict_parts(model, index, test, enc, torch.device("cpu"))
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, ref_test[list(mm.TASKS)].to_numpy(np.float32))


def test_training_on_the_stream_gives_the_in_memory_weights(data):
    """The same batches in the same order, trained with the masked loss: ``mm.fit`` on the loaded
    frame and the stream's training loop (:func:`~mmoe_annotated.scale.ddp.train_epochs`) agree."""
    torch.set_num_threads(1)
    path, frame, index = data
    train, _ = index.split(0.8)
    enc = _encoder(index, train)
    ref_train, _ = mm.split_by_row(frame, 0.8)
    in_memory = mm.build_model("mmoe", mm.ModelConfig(enc.features, seed=SEED))
    cfg = mm.TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=LR, shuffle=False, embedding_l2=0.0, progress=False)
    mm.fit(in_memory, ref_train, cfg, encoder=enc)
    streamed = mm.build_model("mmoe", mm.ModelConfig(enc.features, seed=SEED))
    stream = S.ByteRecStream(index, train, enc, batch_size=BATCH, shuffle=False)
    losses = ddp.train_epochs(streamed, make_optimizer("adagrad", streamed.parameters(), LR), stream, EPOCHS,
                              streamed.config.task_types, torch.device("cpu"))
    assert len(losses) == EPOCHS and np.isfinite(losses).all()
    a, b = in_memory.state_dict(), streamed.state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"largest weight difference, in-memory vs stream: {worst:.2e}")
    assert worst < 1e-5, f"largest weight difference {worst:.2e}"
    start = mm.build_model("mmoe", mm.ModelConfig(enc.features, seed=SEED)).state_dict()
    assert max(float((start[k] - b[k]).abs().max()) for k in start) > 1e-3  # it did train
