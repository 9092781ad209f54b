"""Training and prediction on a CUDA device give what they give on the CPU, on the taught path and
in the fast wing (CUDA graphs, chunked copies).

Most of these need a GPU and are skipped without one; the argument checks run everywhere."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.fast import graphs
from mmoe_annotated.fast import inference as fast_inference
from mmoe_annotated.fast.inference import GRAPH_MIN_BATCHES

from tests.conftest import randomize_

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FEATURES = (mm.SparseFeature("a", 50, 4), mm.SparseFeature("b", 30, 4), mm.DenseFeature("d", 2))


def _data(rows: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, 50, (rows,), generator=g), torch.randint(0, 30, (rows,), generator=g)], 1)
    dense = torch.randn(rows, 2, generator=g, dtype=dtype)
    labels = (torch.rand(rows, 2, generator=g) < torch.sigmoid(dense[:, :1] + (ids[:, :1] % 3 - 1.0))).float()
    return mm.EncodedFeatures(ids, dense), labels


def _model(kind: str, gate_hidden=(), dtype=torch.float32):
    config = mm.ModelConfig(FEATURES, num_experts=3, expert_hidden=(16, 8), gate_hidden=gate_hidden,
                            tower_hidden=(8,), sparse_embeddings=True)
    model = mm.build_model(kind, config).to(dtype)
    randomize_(model, seed=3)  # large weights: every entry matters, so the comparisons run in float64
    return model


def test_graphed_refuses_a_model_on_the_cpu():
    x, _ = _data(8)
    with torch.inference_mode(), pytest.raises(ValueError, match="CUDA graphs need the model on a CUDA device"):
        graphs.graphed(_model("mmoe").eval(), 8, x.ids, x.dense)


def test_prediction_in_chunks_gives_what_one_pass_gives(monkeypatch):
    x, _ = _data(1000, dtype=torch.float64)
    model = _model("mmoe", (6,), torch.float64)
    want, want_gates = mm.fast.predict(model, x, batch_size=64, return_gates=True)
    monkeypatch.setattr(fast_inference, "CHUNK_ROWS", 150)  # two batches of 64 per chunk, and a partial last chunk
    got, got_gates = mm.fast.predict(model, x, batch_size=64, return_gates=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_gates, want_gates)


@needs_cuda
@pytest.mark.parametrize("kind,gate_hidden,chunk_rows", [("mmoe", (), None), ("mmoe", (6,), 150), ("omoe", (), None),
                                                         ("shared_bottom", (), 150)])
def test_prediction_on_the_gpu_replays_a_graph_and_matches_the_cpu(kind, gate_hidden, chunk_rows, monkeypatch):
    if chunk_rows:
        monkeypatch.setattr(fast_inference, "CHUNK_ROWS", chunk_rows)
    batch = 64
    rows = batch * (GRAPH_MIN_BATCHES + 2) + 17  # enough full batches for the graph, and a partial last one
    x, _ = _data(rows, dtype=torch.float64)
    model = _model(kind, gate_hidden, torch.float64)
    want, want_gates = mm.fast.predict(model, x, batch_size=batch, return_gates=True, device="cpu")
    got, got_gates = mm.fast.predict(model, x, batch_size=batch, return_gates=True, device="cuda")
    assert got.shape == (rows, 2) and got_gates.shape == want_gates.shape
    assert np.ptp(want[:, 0]) > 1e-3  # the rows differ, so a repeated batch would show
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)  # float64 inside, float32 out
    np.testing.assert_allclose(got_gates, want_gates, rtol=1e-6, atol=1e-7)


@needs_cuda
def test_a_replayed_graph_computes_each_new_batch():
    model = _model("mmoe", dtype=torch.float64).cuda().eval()
    x, _ = _data(96, seed=1, dtype=torch.float64)
    with torch.inference_mode():
        replay = graphs.graphed(model, 32, x.ids, x.dense)
        for start in (64, 0, 32):  # out of order: nothing may carry over from the capture or the batch before
            part = x.index(slice(start, start + 32)).to("cuda")
            got = replay(part.ids, part.dense).logits.clone()
            torch.testing.assert_close(got, model(part.ids, part.dense).logits, rtol=1e-10, atol=1e-10)
        with pytest.raises(ValueError, match=r"batches of shape \(32, 2\)"):
            replay(part.ids[:5], part.dense[:5])


@needs_cuda
@pytest.mark.parametrize("fit", [mm.fit, mm.fast.fit], ids=["taught", "fast"])
def test_training_on_the_gpu_follows_the_cpu(fit):
    x, y = _data(2048, seed=2)
    cfg = dict(epochs=2, batch_size=128, optimizer="adagrad", embedding_l2=1e-5, embedding_l2_mode="rows",
               progress=False, seed=0)
    cpu, gpu = _model("mmoe"), _model("mmoe")
    h_cpu = fit(cpu, (x, y), mm.TrainConfig(**cfg, device="cpu"))
    h_gpu = fit(gpu, (x, y), mm.TrainConfig(**cfg, device="cuda"))
    assert h_cpu.records[-1]["train_loss"] < h_cpu.records[0]["train_loss"]  # it learned something
    for a, b in zip(h_cpu.records, h_gpu.records):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4
    for (name, p), q in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(q.detach().cpu(), p.detach(), rtol=1e-3, atol=1e-4, msg=name)
    want = mm.evaluate(cpu, (x, y), batch_size=256, device="cpu")
    got = mm.evaluate(gpu, (x, y), batch_size=256, device="cuda")
    for task in want:
        assert abs(got[task]["auc"] - want[task]["auc"]) < 1e-4
