"""The fused prediction pass (mmoe_annotated.fused) and RowAdagrad against their references:
``model.forward`` and ``torch.optim.Adagrad``."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated import fused
from mmoe_annotated.train import RowAdagrad

from conftest import randomize_

FEATURES = (mm.SparseFeature("a", 7, 3), mm.SparseFeature("b", 5, 3), mm.DenseFeature("d", 2))
SHAPES = list(itertools.product(
    ["mmoe", "omoe", "shared_bottom"],  # kind
    [1, 3],  # experts
    [(8,), (8, 6)],  # expert layers
    [(), (5,), (5, 4)],  # gate: the paper's linear gate, one or two hidden layers
    [(), (4,)],  # towers: linear, or one hidden layer
    ["relu", "tanh", "sigmoid", "linear"],
    [1, 3],  # tasks
))


def _inputs(rows: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, 7, (rows,), generator=g), torch.randint(0, 5, (rows,), generator=g)], 1)
    return ids, torch.randn(rows, 2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("kind,experts,expert_hidden,gate_hidden,tower_hidden,activation,tasks", SHAPES)
def test_fused_forward_equals_the_modules(kind, experts, expert_hidden, gate_hidden, tower_hidden, activation, tasks):
    config = mm.ModelConfig(FEATURES, task_names=tuple(f"t{i}" for i in range(tasks)), task_types=("binary",) * tasks,
                            num_experts=experts, expert_hidden=expert_hidden, gate_hidden=gate_hidden,
                            tower_hidden=tower_hidden, activation=activation)
    model = mm.build_model(kind, config).double().eval()
    randomize_(model, seed=len(expert_hidden) + experts)  # large weights: every entry matters
    ids, dense = _inputs(9)
    with torch.inference_mode():
        want, got = model(ids, dense), fused.forward(model, ids, dense)
    assert got.logits.shape == want.logits.shape and got.gates.shape == want.gates.shape
    assert want.logits.abs().max() > 1e-3  # not a comparison of zeros
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.gates, want.gates, rtol=1e-12, atol=1e-12)


def test_fused_forward_at_batch_size_one_and_float32():
    model = mm.MMoE(mm.ModelConfig(FEATURES)).eval()
    randomize_(model)
    ids, dense = _inputs(1)
    with torch.no_grad():
        want, got = model(ids, dense.float()), fused.forward(model, ids, dense.float())
    assert got.logits.shape == (1, 2) and got.gates.shape == (1, 2, 3)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)


def test_batches_reuses_the_first_layer_and_matches_forward():
    model = mm.OMoE(mm.ModelConfig(FEATURES, gate_hidden=())).eval()
    randomize_(model)
    with torch.no_grad():
        run = fused.batches(model)
        for rows in (1, 5, 9):
            ids, dense = _inputs(rows, seed=rows)
            want, got = model(ids, dense.float()), run(ids, dense.float())
            torch.testing.assert_close(got.logits, want.logits, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got.gates, want.gates, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="no gradients"):
        run(ids, dense.float())  # grad mode is on again


@pytest.mark.parametrize("kind,gate_hidden,tower_hidden", [("mmoe", (5,), (4,)), ("mmoe", (), ()),
                                                        ("omoe", (5, 4), (4,)), ("shared_bottom", (), (4,))])
def test_batches_reuse_working_tensors_but_never_overwrite_earlier_outputs(kind, gate_hidden, tower_hidden):
    """batches() keeps its working tensors from call to call; what a call returned must survive
    the next calls, as its docstring promises (a caller may keep outputs; only fused.graphed
    hands out tensors that the next call overwrites)."""
    config = mm.ModelConfig(FEATURES, expert_hidden=(8, 6), gate_hidden=gate_hidden, tower_hidden=tower_hidden)
    model = mm.build_model(kind, config).double().eval()
    randomize_(model)
    batches = [_inputs(6, seed=s) for s in range(4)] + [_inputs(2, seed=9)]  # a smaller last batch too
    with torch.inference_mode():
        run = fused.batches(model)
        kept = [run(ids, dense) for ids, dense in batches]
        for (ids, dense), got in zip(batches, kept):
            want = model(ids, dense)
            torch.testing.assert_close(got.logits, want.logits, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(got.gates, want.gates, rtol=1e-12, atol=1e-12)
    assert kept[0].logits.data_ptr() != kept[1].logits.data_ptr()


def test_fused_forward_refuses_what_it_cannot_compute():
    model = mm.MMoE(mm.ModelConfig(FEATURES, dropout=0.2))
    ids, dense = _inputs(4)
    with pytest.raises(RuntimeError, match="no gradients"):
        fused.forward(model.eval(), ids, dense.float())  # grad mode is on
    assert "dropout" in fused.supports(model.train())
    with torch.no_grad(), pytest.raises(ValueError, match="dropout"):
        fused.forward(model, ids, dense.float())
    assert fused.supports(model.eval()) is None
    assert "MultiTaskModel" in fused.supports(torch.nn.Linear(2, 2))

    from mmoe_annotated.bench.ablation import AblatedMMoE
    assert "own forward" in fused.supports(AblatedMMoE(mm.ModelConfig(FEATURES), rowwise_mixing=True))
    replaced = mm.MMoE(mm.ModelConfig(FEATURES))
    replaced.towers = torch.nn.Identity()
    assert "replaced" in fused.supports(replaced)


def test_predict_and_evaluate_use_the_fused_pass_and_match_the_modules(monkeypatch):
    train, test = mm.split_by_row(mm.load_example(n_rows=3000, seed=0), 0.8)
    encoder = mm.FeatureEncoder(mm.SPARSE_FEATURES, mm.DENSE_FEATURES, emb_dim=4).fit(train)
    model = mm.MMoE(mm.ModelConfig(encoder.features))
    mm.fit(model, train, mm.TrainConfig(epochs=1, batch_size=512, progress=False), encoder=encoder)
    calls = []
    original = fused.batches
    monkeypatch.setattr(fused, "batches", lambda *a: calls.append(1) or original(*a))
    preds, gates = mm.predict(model, test, encoder=encoder, batch_size=300, return_gates=True)
    assert calls, "predict did not take the fused pass"
    x = encoder.transform(test)
    with torch.no_grad():
        want = model.eval()(x.ids, x.dense)
    np.testing.assert_allclose(preds, torch.sigmoid(want.logits).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gates, want.gates.numpy(), rtol=1e-5, atol=1e-6)
    metrics = mm.evaluate(model, test, encoder=encoder)
    assert 0.0 <= metrics["finish"]["auc"] <= 1.0


@pytest.mark.parametrize("lr", [0.01, 0.3])
def test_row_adagrad_equals_torch_adagrad(lr):
    torch.manual_seed(0)
    ours, theirs = torch.nn.Embedding(50, 4, sparse=True), torch.nn.Embedding(50, 4, sparse=True)
    theirs.load_state_dict(ours.state_dict())
    opt_ours, opt_theirs = RowAdagrad(ours.parameters(), lr=lr), torch.optim.Adagrad(theirs.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        for _ in range(25):
            ids = torch.randint(0, 50, (32, 3), generator=g)  # repeats within a batch
            weight = torch.randn(32, 3, 4, generator=g)
            for table, opt in ((ours, opt_ours), (theirs, opt_theirs)):
                opt.zero_grad()
                (table(ids) * weight).sum().backward()
                table(ids[:5]).square().sum().backward()  # a second, accumulated sparse gradient
                opt.step()
    assert (ours.weight - theirs.weight).abs().max() < 1e-5
    assert (ours.weight - torch.nn.Embedding(50, 4).weight).abs().max() > 0.01  # it moved
    torch.testing.assert_close(opt_ours.state[ours.weight]["sum"], opt_theirs.state[theirs.weight]["sum"],
                               rtol=1e-5, atol=1e-6)
    assert opt_ours.state[ours.weight]["scratch"].abs().max() == 0  # cleaned after every step


def test_row_adagrad_dense_gradients_and_errors():
    p = torch.nn.Parameter(torch.ones(3, 2))
    q = torch.nn.Parameter(torch.ones(3, 2))
    ours, theirs = RowAdagrad([p], lr=0.1), torch.optim.Adagrad([q], lr=0.1)
    for _ in range(3):
        for param, opt in ((p, ours), (q, theirs)):
            opt.zero_grad()
            (param * torch.arange(6.0).view(3, 2)).sum().backward()
            opt.step()
    torch.testing.assert_close(p, q)
    with pytest.raises(ValueError, match="lr must be positive"):
        RowAdagrad([p], lr=0)
