"""The fast wing (mmoe_annotated.fast) against the taught code it replaces: the fused prediction
pass against ``model.forward``, RowAdagrad against ``torch.optim.Adagrad``, side-by-side prediction
against one thread, block-wise training against one pass, and ``mm.fast.fit`` / ``predict`` against
``mm.fit`` / ``predict``. Also: no taught module imports the wing, and a change to the taught code
reaches prediction on both paths."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.fast import fused, guard
from mmoe_annotated.fast import inference as fast_predict
from mmoe_annotated.fast import threads as fast_threads
from mmoe_annotated.fast import train as fast_train
from mmoe_annotated.fast.optim import RowAdagrad

from tests.conftest import QUIET, SMALL, randomize_, small_model  # the split fixture comes from conftest too

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
    the next calls, as its docstring promises (a caller may keep outputs; only graphs.graphed
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
    preds, gates = mm.fast.predict(model, test, encoder=encoder, batch_size=300, return_gates=True)
    assert calls, "mm.fast.predict did not take the fused pass"
    x = encoder.transform(test)
    with torch.no_grad():
        want = model.eval()(x.ids, x.dense)
    np.testing.assert_allclose(preds, torch.sigmoid(want.logits).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gates, want.gates.numpy(), rtol=1e-5, atol=1e-6)
    metrics = mm.fast.evaluate(model, test, encoder=encoder)
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


# ---------------------------------------------------------------------------
# Side by side, blocks: the wing's machinery against one thread and one pass
# ---------------------------------------------------------------------------



@pytest.fixture
def two_threads():
    """Two intra-op threads for one test (conftest sets one for the whole run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _count_side_by_side(monkeypatch) -> list:
    calls, real = [], fast_threads.side_by_side
    monkeypatch.setattr(fast_predict, "side_by_side", lambda *a: (calls.append(a[2]), real(*a))[1])
    return calls


@pytest.mark.parametrize("kind", ["mmoe", "omoe", "shared_bottom"])
def test_small_batches_predict_side_by_side_with_the_numbers_of_one_thread(split, two_threads, monkeypatch, kind):
    _, test, enc = split
    torch.manual_seed(0)
    model = mm.build_model(kind, mm.ModelConfig(enc.features, **SMALL))
    randomize_(model)  # large weights: outputs that differ from row to row
    calls = _count_side_by_side(monkeypatch)
    real, threads_seen = fused.batches, []
    monkeypatch.setattr(fused, "batches", lambda m: (threads_seen.append(torch.get_num_threads()), real(m))[1])
    preds, gates = mm.fast.predict(model, test, encoder=enc, batch_size=64, return_gates=True)  # 800 rows: 13 batches
    metrics = mm.fast.evaluate(model, test, encoder=enc, batch_size=64)
    assert calls == [64, 64]  # both took the path
    assert threads_seen == [1] * 4  # two workers per call, each running its operators on one thread
    assert torch.get_num_threads() == 2  # the caller's thread keeps its two
    if torch.backends.mkl.is_available():  # and so do its matrix multiplies
        assert "mkl_get_max_threads() : 2" in torch.__config__.parallel_info()
    torch.set_num_threads(1)
    one_preds, one_gates = mm.fast.predict(model, test, encoder=enc, batch_size=64, return_gates=True)
    assert calls == [64, 64]  # one thread: batch after batch, as before
    np.testing.assert_allclose(preds, one_preds, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gates, one_gates, rtol=1e-5, atol=1e-7)
    for task, values in mm.fast.evaluate(model, test, encoder=enc, batch_size=64).items():
        assert values == pytest.approx(metrics[task], rel=1e-6)
    x = enc.transform(test)
    with torch.inference_mode():  # every row, from the modules in one pass
        want = model(x.ids, x.dense)
    np.testing.assert_allclose(preds, torch.sigmoid(want.logits).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gates, want.gates.numpy(), rtol=1e-5, atol=1e-6)
    assert preds.std(0).min() > 0.01  # not a comparison of constant outputs


def test_side_by_side_only_for_small_batches_on_several_threads(split, two_threads, monkeypatch):
    _, test, enc = split
    model = small_model(enc)
    calls = _count_side_by_side(monkeypatch)
    big = fast_threads.SIDE_BY_SIDE_ROWS + 1
    whole = mm.fast.predict(model, test, encoder=enc, batch_size=big)  # 800 rows: one batch
    mm.fast.predict(model, test.iloc[:64], encoder=enc, batch_size=64)  # one batch: nothing to share
    assert calls == []
    parts = mm.fast.predict(model, test, encoder=enc, batch_size=1)  # 800 batches of one row
    assert calls == [1]
    np.testing.assert_allclose(parts, whole, rtol=1e-5, atol=1e-7)


def test_an_error_in_a_side_by_side_batch_reaches_the_caller(split, two_threads, monkeypatch):
    _, test, enc = split
    model = small_model(enc)
    real, ran = fused.batches, []

    def failing(model):
        run = real(model)

        def fails_on_the_third_batch(ids, dense):
            ran.append(len(ids))
            if len(ran) == 3:
                raise RuntimeError("batch failed")
            return run(ids, dense)
        return fails_on_the_third_batch
    monkeypatch.setattr(fused, "batches", failing)
    model.train()
    with pytest.raises(RuntimeError, match="batch failed"):
        mm.fast.predict(model, test, encoder=enc, batch_size=32)  # 800 rows: 25 batches
    assert len(ran) < 10  # the other thread stopped too, not after the remaining batches
    assert torch.get_num_threads() == 2 and model.training  # both as they were before the call




BLOCK_SETTINGS = {
    "mean, row L2": dict(),
    "sum, row L2": dict(loss_reduction="sum", embedding_l2=1e-3),
    "table L2, weight L2, adam": dict(embedding_l2=1e-3, embedding_l2_mode="table", weight_l2=1e-3, optimizer="adam"),
    "sparse, task weights, sgd": dict(sparse=True, task_weights=(2.0, 0.5), optimizer="sgd", lr=0.5),
    "sparse, RowAdagrad": dict(sparse=True, embedding_l2=1e-2),
}


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")  # torch's own note
@pytest.mark.parametrize("name", list(BLOCK_SETTINGS))
def test_blocks_give_the_batch_update(split, name):
    """A batch worked through in blocks (``block_rows``) gets the update of one pass over the whole
    batch: the same weights and losses, while the model really runs once per block. Training on
    batches the size of a block instead ends elsewhere (so the comparison can tell them apart)."""
    settings = dict(BLOCK_SETTINGS[name])
    sparse = settings.pop("sparse", False)
    train, _, enc = split
    train = train.iloc[:200]  # batches of 64: three full ones and one of 8 rows

    def run(batch_size, block_rows):
        torch.manual_seed(0)
        model = small_model(enc, sparse_embeddings=sparse)
        rows = []
        model.register_forward_hook(lambda module, inputs, out: rows.append(out.logits.shape[0]))
        cfg = mm.TrainConfig(batch_size=batch_size, epochs=2, **settings, **QUIET)
        return model, mm.fast.fit(model, train, cfg, encoder=enc, block_rows=block_rows), rows

    whole, h_whole, rows_whole = run(64, 64)
    blocks, h_blocks, rows_blocks = run(64, 24)
    assert rows_whole == [64, 64, 64, 8] * 2
    assert rows_blocks == ([24, 24, 16] * 3 + [8]) * 2
    for (n, p), q in zip(whole.named_parameters(), blocks.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=lambda m: f"{n}: {m}")
    for key in ("train_loss", "train_finish_loss", "train_like_loss"):
        np.testing.assert_allclose(h_blocks[key], h_whole[key], rtol=1e-5)
    smaller, _, _ = run(24, 24)
    assert not all(torch.allclose(p, q, rtol=1e-4, atol=1e-6) for p, q in zip(whole.parameters(), smaller.parameters()))


def test_blocks_by_default_on_cpu_only(split, monkeypatch):
    """``block_rows=None``: blocks of ``CPU_BLOCK_ROWS`` on a CPU; a batch no larger runs in one pass."""
    train, _, enc = split
    monkeypatch.setattr(fast_train, "CPU_BLOCK_ROWS", 48)
    model = small_model(enc)
    rows = []
    model.register_forward_hook(lambda module, inputs, out: rows.append(out.logits.shape[0]))
    mm.fast.fit(model, train.iloc[:160], mm.TrainConfig(batch_size=128, epochs=1, **QUIET), encoder=enc)
    assert rows == [48, 48, 32, 32]
    rows.clear()
    mm.fast.fit(model, train.iloc[:160], mm.TrainConfig(batch_size=40, epochs=1, **QUIET), encoder=enc)
    assert rows == [40] * 4
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="block_rows must be a whole number"):
            mm.fast.fit(model, train.iloc[:160], mm.TrainConfig(**QUIET), encoder=enc, block_rows=bad)


# ---------------------------------------------------------------------------
# The wing against the taught path: same numbers, same training
# ---------------------------------------------------------------------------

FORMS = list(itertools.product(["mmoe", "omoe", "shared_bottom"], [(), (6,)], [(), (5,)]))  # kind, gate, tower


def _form_model(enc, kind, gate_hidden, tower_hidden, **kw):
    config = mm.ModelConfig(enc.features, expert_hidden=(16, 8), gate_hidden=gate_hidden, tower_hidden=tower_hidden, **kw)
    return mm.build_model(kind, config)


@pytest.mark.parametrize("kind,gate_hidden,tower_hidden", FORMS)
def test_fast_predictions_and_gates_equal_the_taught_ones(split, kind, gate_hidden, tower_hidden):
    _, test, enc = split
    model = _form_model(enc, kind, gate_hidden, tower_hidden)
    randomize_(model)  # large weights: every entry matters
    taught, taught_gates = mm.predict(model, test, encoder=enc, batch_size=300, return_gates=True)
    fast, fast_gates = mm.fast.predict(model, test, encoder=enc, batch_size=300, return_gates=True)
    assert taught.std(0).min() > 0.01  # not a comparison of constant outputs
    np.testing.assert_allclose(fast, taught, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast_gates, taught_gates, rtol=0, atol=1e-6)
    np.testing.assert_allclose(mm.fast.gate_weights(model, test, encoder=enc), mm.gate_weights(model, test, encoder=enc),
                               rtol=0, atol=1e-6)
    taught_metrics = mm.evaluate(model, test, encoder=enc)
    for task, values in mm.fast.evaluate(model, test, encoder=enc).items():
        # large weights saturate some probabilities: rounding can break their ties the other way in AUC
        assert values == pytest.approx(taught_metrics[task], abs=1e-4)


def _train_both(enc, train, kind, gate_hidden, tower_hidden, cfg, dtype=torch.float32, **kw):
    models = {}
    for name, fit in (("taught", mm.fit), ("fast", mm.fast.fit)):
        model = _form_model(enc, kind, gate_hidden, tower_hidden, **kw).to(dtype)
        x = enc.transform(train)
        data = (mm.EncodedFeatures(x.ids, x.dense.to(dtype)), torch.tensor(train[list(mm.TASKS)].to_numpy(), dtype=dtype))
        history = fit(model, data, cfg)
        models[name] = (model, history)
    return models


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")
@pytest.mark.parametrize("kind,gate_hidden,tower_hidden", FORMS)
@pytest.mark.parametrize("sparse", [False, True])
def test_fast_fit_gives_the_taught_weights(split, kind, gate_hidden, tower_hidden, sparse):
    """Same seed, same batch order: the same weights after training, within 1e-5 in float32 (one
    epoch of ten steps, row L2, Adagrad), and to float64 rounding over two epochs (the same updates:
    only the order of the additions differs)."""
    train, _, enc = split
    cfg = mm.TrainConfig(batch_size=64, epochs=1, embedding_l2=1e-3, **QUIET)
    both = _train_both(enc, train.iloc[:640], kind, gate_hidden, tower_hidden, cfg, sparse_embeddings=sparse)
    (taught, h_taught), (fast, h_fast) = both["taught"], both["fast"]
    moved = 0.0
    for (name, p), q, start in zip(taught.named_parameters(), fast.parameters(),
                                   _form_model(enc, kind, gate_hidden, tower_hidden).parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-5, msg=lambda m: f"{name}: {m}")
        moved = max(moved, float((p.detach() - start.detach()).abs().max()))
    assert moved > 1e-3  # training moved the weights: not a comparison of two untouched models
    np.testing.assert_allclose(h_fast["train_loss"], h_taught["train_loss"], rtol=1e-6)
    cfg64 = mm.TrainConfig(batch_size=64, epochs=2, embedding_l2=1e-3, weight_l2=1e-4, **QUIET)
    both = _train_both(enc, train.iloc[:640], kind, gate_hidden, tower_hidden, cfg64, torch.float64,
                       sparse_embeddings=sparse)
    for (name, p), q in zip(both["taught"][0].named_parameters(), both["fast"][0].parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-9, msg=lambda m: f"{name} (float64): {m}")


def test_both_paths_check_their_arguments_alike(split):
    """One helper (mm.train.inference.prediction_inputs) reads the arguments of the taught and the
    fast predict / evaluate: the same errors, an empty set included (no rows: empty predictions of
    the right shape; metrics of no rows: an error)."""
    _, test, enc = split
    model = small_model(enc)
    for predict, evaluate in ((mm.predict, mm.evaluate), (mm.fast.predict, mm.fast.evaluate)):
        preds, gates = predict(model, test.iloc[:0], encoder=enc, return_gates=True)
        assert preds.shape == (0, model.num_tasks) and gates.shape == (0, model.num_tasks, model.num_experts)
        with pytest.raises(ValueError, match="the evaluation set is empty"):
            evaluate(model, test.iloc[:0], encoder=enc)
        with pytest.raises(ValueError, match="batch_size must be >= 1"):
            predict(model, test, encoder=enc, batch_size=0)
        with pytest.raises(TypeError, match="expected an MMoE"):
            evaluate(torch.nn.Linear(2, 2), test, encoder=enc)


@pytest.mark.parametrize("balancing", ["fixed", "uncertainty"])
def test_fast_fit_keeps_the_taught_history_columns_in_order(split, balancing):
    """``mm.fast.fit`` builds its epoch records itself (its validation metrics come from the wing):
    the same columns as ``mm.fit``'s, in the same order, with the same values up to rounding."""
    train, test, enc = split
    cfg = mm.TrainConfig(batch_size=64, epochs=2, task_balancing=balancing, gate_stats=True, gate_stats_rows=100,
                         **QUIET)
    histories = {}
    for name, fit in (("taught", mm.fit), ("fast", mm.fast.fit)):
        histories[name] = fit(small_model(enc), train.iloc[:320], cfg, encoder=enc, valid=test.iloc[:200])
    taught, fast = histories["taught"].records, histories["fast"].records
    assert [list(r) for r in fast] == [list(r) for r in taught]
    assert "valid_finish_auc" in taught[0] and any(k.startswith("gate_") for k in taught[0])
    assert list(taught[0])[-1] == "seconds"
    for a, b in zip(taught, fast):
        for key in a:
            if key != "seconds":
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key


# ---------------------------------------------------------------------------
# A change to the taught code reaches prediction, on both paths (mm.fast.guard)
# ---------------------------------------------------------------------------

def _uniform_gates(self, x):  # a reader's edit: every expert weighted alike
    return x.new_full((x.shape[0], self.num_gates, self.num_experts), 1.0 / self.num_experts)


def _count(monkeypatch, module, name) -> list:
    """Calls of ``module.name`` from now on (the function still runs)."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


def _fast_matches_taught_with_one_warning(model, test, enc):
    """mm.fast.predict gives mm.predict's numbers, and says once (a RuntimeWarning) that it left the
    fused pass; a second call for the same model and weights says nothing more."""
    taught, taught_gates = mm.predict(model, test, encoder=enc, return_gates=True)
    with pytest.warns(RuntimeWarning, match="differ by up to .* predicting with model.forward"):
        fast, fast_gates = mm.fast.predict(model, test, encoder=enc, return_gates=True)
    np.testing.assert_allclose(fast, taught, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast_gates, taught_gates, rtol=0, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per state: no second warning
        np.testing.assert_allclose(mm.fast.predict(model, test, encoder=enc), taught, rtol=0, atol=1e-6)


def test_a_change_to_the_taught_gates_reaches_every_prediction(split, monkeypatch):
    _, test, enc = split
    model = small_model(enc)
    randomize_(model)
    before = mm.predict(model, test, encoder=enc)
    monkeypatch.setattr(mm.Gates, "forward", _uniform_gates)
    gates = mm.gate_weights(model, test, encoder=enc)
    np.testing.assert_allclose(gates, 1 / 3, rtol=1e-6)  # the taught path follows the edit
    after = mm.predict(model, test, encoder=enc)
    assert np.abs(after - before).max() > 1e-3
    assert mm.fast.fused.supports(model.eval()) is None  # the structure is as before: only numbers tell
    _fast_matches_taught_with_one_warning(model, test, enc)  # the wing says so and follows the edit
    np.testing.assert_allclose(mm.fast.gate_weights(model, test, encoder=enc), 1 / 3, rtol=1e-6)


def test_an_activation_swapped_in_the_taught_table_reaches_the_fast_predictions(split, monkeypatch):
    """``ACTIVATIONS["relu"] = GELU`` before building a model: the config still says "relu", the
    modules compute GELU. The fused pass would compute ReLU; the wing must notice and follow."""
    _, test, enc = split
    monkeypatch.setitem(mm.model.experts.ACTIVATIONS, "relu", torch.nn.GELU)
    model = small_model(enc)
    randomize_(model)
    assert model.config.activation == "relu" and mm.fast.fused.supports(model.eval()) is None
    _fast_matches_taught_with_one_warning(model, test, enc)


def test_a_forward_replaced_on_one_models_gates_reaches_the_fast_predictions(split):
    """One model's gates get a new ``forward`` on the instance (sharper gates); another model of the
    same class is untouched and keeps the fused pass."""
    _, test, enc = split
    model, other = small_model(enc), small_model(enc)
    randomize_(model)
    randomize_(other, seed=1)
    stock = model.gates.forward
    model.gates.forward = lambda x: torch.softmax(4 * stock(x).log(), dim=-1)
    _fast_matches_taught_with_one_warning(model, test, enc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(mm.fast.predict(other, test, encoder=enc), mm.predict(other, test, encoder=enc),
                                   rtol=0, atol=1e-6)
    del model.gates.forward  # the class's forward again: the fused pass again, without a word
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(mm.fast.predict(model, test, encoder=enc), mm.predict(model, test, encoder=enc),
                                   rtol=0, atol=1e-6)


def test_renaming_a_local_variable_keeps_the_fused_pass(split, monkeypatch):
    """An edit that computes the same numbers (here every local of ``Gates.forward`` renamed) leaves
    the wing on its fused pass: no warning, the same predictions."""
    import inspect
    import re
    import textwrap

    from mmoe_annotated.model import gates as gates_module
    source = textwrap.dedent(inspect.getsource(mm.Gates.forward))
    renamed = re.sub(r"\blogits\b", "scores", re.sub(r"\bh\b", "hidden", source))
    assert renamed != source and "scores" in renamed and "hidden" in renamed
    namespace = dict(vars(gates_module))
    exec(renamed, namespace)
    monkeypatch.setattr(mm.Gates, "forward", namespace["forward"])
    _, test, enc = split
    model = small_model(enc)
    randomize_(model)
    batches = _count(monkeypatch, fused, "batches")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preds, gates = mm.fast.predict(model, test, encoder=enc, return_gates=True)
    assert batches, "the renamed code turned the fused pass off"
    taught, taught_gates = mm.predict(model, test, encoder=enc, return_gates=True)
    np.testing.assert_allclose(preds, taught, rtol=0, atol=1e-6)
    np.testing.assert_allclose(gates, taught_gates, rtol=0, atol=1e-6)


def test_the_check_runs_once_per_state_of_the_weights(split, monkeypatch):
    _, test, enc = split
    model = small_model(enc)
    randomize_(model)
    checks = _count(monkeypatch, guard, "_compare")
    batches = _count(monkeypatch, fused, "batches")
    first = mm.fast.predict(model, test, encoder=enc, batch_size=300)
    mm.fast.evaluate(model, test, encoder=enc)
    mm.fast.gate_weights(model, test, encoder=enc)
    assert len(checks) == 1 and len(batches) == 3  # one check, three fused predictions
    with torch.no_grad():
        model.towers.bias.add_(0.5)  # an in-place change: a new state
    second = mm.fast.predict(model, test, encoder=enc, batch_size=300)
    assert len(checks) == 2 and len(batches) == 4
    assert np.abs(second - first).max() > 1e-2  # and the new weights reach the predictions
    np.testing.assert_allclose(second, mm.predict(model, test, encoder=enc), rtol=0, atol=1e-6)
    model.towers.bias = torch.nn.Parameter(model.towers.bias.detach().clone())  # a new tensor: a new state
    mm.fast.predict(model, test, encoder=enc)
    model.double()  # new tensors and dtype: a new state, checked at float64's tolerance
    mm.fast.predict(model, test, encoder=enc)
    assert len(checks) == 4
    handle = model.towers.register_forward_hook(lambda module, inputs, out: out + 1.0)  # a hook: a new state
    with pytest.warns(RuntimeWarning, match="differ by up to 1"):
        mm.fast.predict(model, test, encoder=enc)
    handle.remove()
    mm.fast.predict(model, test, encoder=enc)
    assert len(checks) == 6
    other = small_model(enc)  # another model: its own check
    mm.fast.predict(other, test, encoder=enc)
    assert len(checks) == 7


def test_a_checked_model_is_not_kept_alive(split):
    import gc
    import weakref

    _, test, enc = split
    model = small_model(enc)
    model.gates.forward = lambda x, stock=model.gates.forward: stock(x)  # refers to the model itself
    mm.fast.predict(model, test.iloc[:10], encoder=enc)
    assert model in guard._VERDICTS
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_the_tolerance_follows_dtype_and_device():
    assert guard.tolerance(torch.float64, "cpu") == 1e-9
    assert guard.tolerance(torch.float32, "cpu") == 1e-4
    assert guard.tolerance(torch.bfloat16, "cpu") == guard.tolerance(torch.float16, "cuda") == 5e-2
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")  # full float32 (also allow_tf32 False)
        assert guard.tolerance(torch.float32, "cuda") == 1e-4
        torch.set_float32_matmul_precision("high")  # TF32 allowed
        assert guard.tolerance(torch.float32, "cuda") == 1e-2
        assert guard.tolerance(torch.float32, "cpu") == 1e-4  # a CPU never multiplies in TF32
    finally:
        torch.set_float32_matmul_precision(before)


# ---------------------------------------------------------------------------
# No taught module imports the wing (tests/test_layering.py checks every import statically)
# ---------------------------------------------------------------------------

def test_importing_the_taught_modules_never_loads_the_wing():
    import subprocess
    import sys
    code = ("import sys, mmoe_annotated.train, mmoe_annotated.scale.stream, mmoe_annotated.scale.distributed, "
            "mmoe_annotated.checkpoint, mmoe_annotated.experiments; "
            "print(sorted(m for m in sys.modules if m.startswith('mmoe_annotated.fast')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
    code = "import mmoe_annotated as mm; mm.fast.predict; import sys; print('mmoe_annotated.fast' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"  # and mm.fast loads on first use


# ---------------------------------------------------------------------------
# The renormalised uncertainty weighting in the wing: blocks of a batch, and the taught numbers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("block_rows", [16, None])
def test_fast_fit_matches_fit_with_normalized_uncertainty(split, block_rows):
    """``task_balancing="uncertainty_normalized"`` through ``mm.fast.fit``, in blocks of a batch
    (its weights are held constant within a batch, so the blocks add up) or whole: the taught
    weights, task weights and validation metrics."""
    train, test, enc = split
    assert mm.train.losses.NormalizedUncertaintyWeighting in fast_train.BLOCKWISE
    cfg = mm.TrainConfig(batch_size=64, epochs=2, optimizer="adam", task_balancing="uncertainty_normalized",
                         balance_lr=0.05, **QUIET)
    a, b = small_model(enc), small_model(enc)
    ha = mm.fit(a, train.iloc[:320], cfg, encoder=enc, valid=test.iloc[:200])
    hb = mm.fast.fit(b, train.iloc[:320], cfg, encoder=enc, valid=test.iloc[:200], block_rows=block_rows)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    fa, fb = ha.to_frame(), hb.to_frame()
    cols = [c for c in fa.columns if c.startswith("train_") or c.endswith("_logloss")]
    assert any(c.endswith("_weight") for c in cols)
    np.testing.assert_allclose(fb[cols].to_numpy(), fa[cols].to_numpy(), rtol=1e-4, atol=1e-6)
    # AUC on 200 rows of a barely trained model: near-ties that float rounding may reorder
    auc = [c for c in fa.columns if c.endswith("_auc")]
    np.testing.assert_allclose(fb[auc].to_numpy(), fa[auc].to_numpy(), atol=5e-3)
    weights = fa[[c for c in cols if c.endswith("_weight")]].to_numpy()
    np.testing.assert_allclose(weights.sum(1), weights.shape[1], rtol=1e-5)
