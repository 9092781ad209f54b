"""The stream (mmoe_annotated.stream): the loader's checks, the encoder fit in one pass, every row once per epoch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.scale import stream as S


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    df = mm.make_byterec(4000, seed=21)
    path = mm.write_byterec(df, tmp_path_factory.mktemp("stream") / "byterec.txt")
    return df, path, S.index_byterec(path, chunk_bytes=9000)


def test_index_splits_where_split_by_row_does(data):
    df, path, index = data
    assert len(index.chunks) > 10 and index.rows == len(df)
    for fraction in (0.8, 0.5, 0.123):
        train, test = index.split(fraction)
        ref_train, ref_test = mm.split_by_row(df, fraction)
        assert sum(hi - lo for _, lo, hi in train) == len(ref_train)
        got = np.concatenate([S.read_part(index, p)["time"].to_numpy() for p in test])
        assert (got == ref_test["time"].to_numpy()).all()


@pytest.mark.parametrize("settings", [{}, {"min_count": 2}, {"min_count": 5, "emb_dim": 8},
                                      {"hash_buckets": {"uid": 50}}])
def test_one_pass_fit_equals_fit_on_the_split(data, settings):
    df, path, index = data
    train, _ = index.split(0.8)
    template = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, **settings)
    ref = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, **settings).fit(mm.split_by_row(df, 0.8)[0])
    assert S.fit_encoder(index, train, template).to_dict() == ref.to_dict()
    # counts of separate shares merge into the same encoder (what each process does under DDP)
    shares = [S.collect_stats(index, train[r::3], template) for r in range(3)]
    merged = shares[2].merge(shares[0]).merge(shares[1])
    assert merged.encoder(template).to_dict() == ref.to_dict()


def _rows(batches):
    ids, dense, y = (torch.cat(parts) for parts in zip(*batches))
    rows = np.concatenate([ids.numpy(), dense.numpy().view(np.int32), y.numpy().view(np.int32)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("buffer_rows, batch_size", [(1, 64), (1000, 100), (100_000, 33)])
def test_each_training_row_once_per_epoch(data, buffer_rows, batch_size):
    df, path, index = data
    train, _ = index.split(0.8)
    enc = S.fit_encoder(index, train, mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES))
    ref_frame = mm.split_by_row(df, 0.8)[0]
    x = enc.transform(ref_frame)
    ref = _rows([(x.ids, x.dense, torch.from_numpy(ref_frame[list(mm.TASKS)].to_numpy(np.float32, copy=True)))])
    stream = S.ByteRecStream(index, train, enc, batch_size=batch_size, buffer_rows=buffer_rows, seed=3)
    epochs = []
    for epoch in range(2):
        stream.set_epoch(epoch)
        batches = list(torch.utils.data.DataLoader(stream, batch_size=None))
        assert all(len(b[2]) == batch_size for b in batches[:-1])
        assert (_rows(batches) == ref).all()
        epochs.append(torch.cat([b[0] for b in batches]))
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch
    stream.set_epoch(1)
    assert torch.equal(torch.cat([b[0] for b in stream]), epochs[1])  # and the same order again for the seed


def test_unshuffled_stream_is_file_order(data):
    df, path, index = data
    train, _ = index.split(0.8)
    enc = S.fit_encoder(index, train, mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES))
    ids = torch.cat([b[0] for b in S.ByteRecStream(index, train, enc, batch_size=128, shuffle=False)])
    assert torch.equal(ids, enc.transform(mm.split_by_row(df, 0.8)[0]).ids)


def test_shares_cover_the_rows_and_steps_are_equal(data):
    df, path, index = data
    train, _ = index.split(0.8)
    enc = S.fit_encoder(index, train, mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES))
    shares = [S.ByteRecStream(index, train, enc, batch_size=50, rank=r, world_size=3) for r in range(3)]
    assert sum(s.rows for s in shares) == sum(hi - lo for _, lo, hi in train)
    steps = S.ByteRecStream.steps_for(train, 3, 50)
    capped = [S.ByteRecStream(index, train, enc, batch_size=50, rank=r, world_size=3, batches=steps, drop_last=True)
              for r in range(3)]
    assert [len(list(s)) for s in capped] == [steps] * 3
    with pytest.raises(ValueError, match="rank must lie in"):
        S.ByteRecStream(index, train, enc, rank=3, world_size=3)


def test_a_file_of_one_chunk_gives_every_rank_rows(tmp_path):
    """Shares are rows, not chunks: a file that is one chunk still gives each of 3 processes a third
    of its rows (a chunk cut between them), and the step count follows the smallest share."""
    path = mm.write_byterec(mm.make_byterec(90, seed=3), tmp_path / "small.txt")
    index = S.index_byterec(path)
    train, _ = index.split(0.8)
    assert len(train) == 1 and sum(hi - lo for _, lo, hi in train) == 72
    enc = S.fit_encoder(index, train, mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES))
    shares = [S.ByteRecStream(index, train, enc, batch_size=8, rank=r, world_size=3) for r in range(3)]
    assert [s.rows for s in shares] == [24, 24, 24]
    times = [torch.cat([b[0] for b in S.ByteRecStream(index, train, enc, batch_size=8, rank=r,
                                                        world_size=3, shuffle=False)]) for r in range(3)]
    assert torch.equal(torch.cat(times), torch.cat([b[0] for b in S.ByteRecStream(
        index, train, enc, batch_size=8, shuffle=False)]))  # every row once, in order
    assert S.ByteRecStream.steps_for(train, 3, 8) == 3


@pytest.mark.parametrize("column, value, message", [("finish", "2", "label '2' is not 0 or 1"),
                                                    ("uid", "abc", "'abc' is not a number")])
def test_stream_errors_are_the_loaders(tmp_path, column, value, message):
    df = mm.make_byterec(3000, seed=2)
    path = mm.write_byterec(df, tmp_path / "byterec.txt")
    lines = path.read_text().split("\n")
    fields = lines[1499].split("\t")
    fields[mm.COLUMNS.index(column)] = value
    lines[1499] = "\t".join(fields)
    path.write_text("\n".join(lines))
    index = S.index_byterec(path, chunk_bytes=8000)  # the index does not parse: the bad value is found later
    train, test = index.split(0.8)
    with pytest.raises(mm.DataError) as loader:
        mm.load_byterec(path)
    with pytest.raises(mm.DataError) as streamed:
        S.fit_encoder(index, train, mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES))
    assert str(streamed.value) == str(loader.value)
    assert (streamed.value.line, streamed.value.column) == (1500, column) and message in str(streamed.value)


def test_index_refuses_what_the_loader_refuses(tmp_path):
    path = tmp_path / "zeros.txt"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(mm.DataError, match="contains NUL bytes"):
        S.index_byterec(path)
    with pytest.raises(mm.DataError, match="no such file"):
        S.index_byterec(tmp_path / "missing.txt")
