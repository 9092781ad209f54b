"""Gate health (mmoe_annotated.health): utilisation, entropy, dead experts, polarized gates, and
their per-epoch record in fit and fast.fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mmoe_annotated as mm

TASKS = ("t0", "t1")


def test_detectors_on_hand_made_gates():
    M = 50
    even = np.full((M, 2, 4), 0.25)
    assert mm.dead_experts(even) == []
    np.testing.assert_allclose(mm.gate_entropy(even), [1.0, 1.0])
    pol = mm.polarized_gates(even, TASKS)
    assert not pol["polarized"].any() and pol["mean_top_weight"].tolist() == [0.25, 0.25]
    # expert 3 unused by both tasks; task t1 always picks expert 2: dead expert 3, polarized t1
    g = np.zeros((M, 2, 4))
    g[:, 0, :3] = [0.5, 0.3, 0.2]
    g[:, 1, :] = [0.01, 0.0, 0.985, 0.005]
    assert mm.dead_experts(g) == [3]
    assert mm.dead_experts(g, threshold=0.02) == [3]  # expert 1: a 0.3 share for t0 keeps it alive
    assert mm.dead_experts(g, threshold=0.4) == [1, 3]  # 0.3 < 0.4 for t0 and 0 for t1: dead
    pol = mm.polarized_gates(g, TASKS)
    assert pol["polarized"].tolist() == [False, True]
    ent = mm.gate_entropy(g)
    assert ent[1] < 0.1 < ent[0]
    rec = mm.gate_statistics(g, TASKS)
    assert rec["gate_dead_experts"] == 1 and rec["gate_polarized_tasks"] == 1
    assert rec["gate_t0_expert_0"] == pytest.approx(0.5) and rec["gate_t1_top_weight"] == pytest.approx(0.985)
    with pytest.raises(ValueError, match="shape"):
        mm.dead_experts(np.ones((3, 4)))
    with pytest.raises(ValueError, match="threshold"):
        mm.dead_experts(g, threshold=0)


def test_entropy_of_ple_gates_counts_only_the_experts_a_task_sees():
    # CGC, 2 tasks x 1 task expert + 2 shared: each task sees 3 of the 4 experts
    g = np.zeros((10, 2, 4))
    g[:, 0, [0, 2, 3]] = 1 / 3
    g[:, 1, [1, 2, 3]] = 1 / 3
    np.testing.assert_allclose(mm.gate_entropy(g), [1.0, 1.0])
    assert mm.dead_experts(g) == []


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 10, (n, 1), generator=g)
    dense = torch.rand(n, 2, generator=g)
    y = torch.stack([(ids[:, 0] > 4).float(), (dense[:, 0] > 0.5).float()], 1)
    return mm.EncodedFeatures(ids, dense), y


@pytest.mark.parametrize("kind", ["mmoe", "ple"])
def test_fit_records_gate_health_per_epoch(kind):
    cfg_m = mm.ModelConfig(features=(mm.SparseFeature("a", 10, 4), mm.DenseFeature("d", 2)), task_names=TASKS,
                           num_experts=3, expert_hidden=(8,), gate_hidden=(), tower_hidden=(4,), init_std=1e-2)
    train, valid = _data(), _data(40, seed=1)
    cfg = mm.TrainConfig(epochs=3, batch_size=32, optimizer="adam", gate_stats=True, gate_stats_rows=30,
                         progress=False)
    model = mm.build_model(kind, cfg_m)
    history = mm.fit(model, train, cfg, valid=valid)
    frame = history.to_frame()
    E = model.num_experts
    for t in TASKS:
        assert frame[f"gate_{t}_entropy"].between(0, 1).all()
        shares = frame[[f"gate_{t}_expert_{e}" for e in range(E)]].to_numpy()
        np.testing.assert_allclose(shares.sum(1), 1.0, rtol=1e-5)
    # the last record is the trained model's gates on the first 30 validation rows
    _, gates = mm.predict(model, valid[0].index(slice(0, 30)), return_gates=True)
    assert frame.iloc[-1]["gate_t0_entropy"] == pytest.approx(float(mm.gate_entropy(gates)[0]))
    fast_history = mm.fast.fit(mm.build_model(kind, cfg_m), train, cfg, valid=valid)
    cols = [c for c in frame.columns if c.startswith("gate_")]
    np.testing.assert_allclose(fast_history.to_frame()[cols].to_numpy(), frame[cols].to_numpy(), atol=1e-5)
    axes = mm.plot_gate_health(history, TASKS)
    assert len(axes[0].lines) == 2
    with pytest.raises(ValueError, match="valid="):
        mm.fit(mm.build_model(kind, cfg_m), train, cfg)
    with pytest.raises(ValueError, match="gate_stats"):
        mm.TrainConfig(gate_stats=1)


def test_gate_distance_by_hand():
    g = np.zeros((4, 2, 3))
    g[:, 0, 0], g[:, 1, 1] = 1.0, 1.0  # disjoint experts
    assert mm.gate_distance(g) == 1.0
    g[:, 1] = g[:, 0]
    assert mm.gate_distance(g) == 0.0
    h = np.tile(np.array([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5]]), (3, 1, 1))
    assert mm.gate_distance(h) == pytest.approx(0.5)


# ---------------------------------------------------------------------------
# Dead experts judged only by the gates that can select them (CGC and PLE)
# ---------------------------------------------------------------------------

def test_dead_experts_count_only_the_gates_that_can_select_an_expert():
    # CGC, 2 tasks x 2 task experts + 1 shared: [t0's 0, 1 | t1's 2, 3 | shared 4]
    mask = mm.model.health.extraction_mask(2, 2, 1)
    assert mask.tolist() == [[True, True, False, False, True], [False, False, True, True, True]]
    g = np.zeros((20, 2, 5))
    g[:, 0, [0, 1, 4]] = [0.995, 0.002, 0.003]  # t0 leaves its expert 1 and the shared one
    g[:, 1, [2, 3, 4]] = [0.3, 0.3, 0.4]  # t1 uses all it can see
    assert mm.dead_experts(g, can_select=mask) == [1]  # the shared expert lives on t1's gate
    assert mm.dead_experts(g) == [1]  # the default (every gate, MMoE) on exact zeros: the same here
    # the mask decides, not the zeros: a small leak into another task's expert is an error ...
    leak = g.copy()
    leak[:, 1, 1], leak[:, 1, 2] = 0.02, 0.28
    assert mm.dead_experts(leak) == []  # without the mask t1's leak would keep t0's expert alive
    with pytest.raises(ValueError, match="task 1 cannot select expert 1"):
        mm.dead_experts(leak, can_select=mask)
    # ... and an expert that no gate can select is never counted
    none, unused = mask.copy(), g.copy()
    none[:, 1] = False
    unused[:, 0, [0, 1, 4]] = [0.997, 0.0, 0.003]
    assert mm.dead_experts(unused, can_select=none) == [] and mm.dead_experts(unused) == [1]
    rec = mm.gate_statistics(g, TASKS, can_select=mask)
    assert rec["gate_dead_experts"] == 1
    with pytest.raises(ValueError, match=r"can_select must be a boolean mask of shape \(T, E\) = \(2, 5\)"):
        mm.dead_experts(g, can_select=mask[:, :4])
    with pytest.raises(ValueError, match="can_select must be a boolean"):
        mm.dead_experts(g, can_select=mask.astype(int))
    with pytest.raises(ValueError, match="task_experts must be a whole number"):
        mm.model.health.extraction_mask(2, -1, 1)


@pytest.mark.parametrize("kind, levels", [("mmoe", 1), ("omoe", 1), ("cgc", 1), ("ple", 2)])
def test_selectable_experts_reads_the_models_gates(kind, levels):
    from mmoe_annotated.model.health import extraction_mask, selectable_experts

    cfg = mm.ModelConfig(features=(mm.SparseFeature("a", 10, 4), mm.DenseFeature("d", 2)), task_names=TASKS,
                         num_experts=3, num_task_experts=2, num_shared_experts=1, num_levels=levels,
                         expert_hidden=(8,), gate_hidden=(), tower_hidden=(4,), init_std=1e-2)
    model = mm.build_model(kind, cfg)
    mask = selectable_experts(model)
    x, _ = _data()
    _, gates = mm.predict(model, x, return_gates=True)  # (M, T, E)
    assert mask.shape == gates.shape[1:]
    np.testing.assert_array_equal(mask, gates.mean(axis=0) > 0)  # exactly the experts each gate weighs
    if kind in ("cgc", "ple"):
        np.testing.assert_array_equal(mask, extraction_mask(2, 2, 1))
    else:
        assert mask.all()
    assert mm.dead_experts(gates, can_select=mask) == []
    with pytest.raises(ValueError, match="has no gates"):
        selectable_experts(mm.build_model("shared_bottom", cfg))
