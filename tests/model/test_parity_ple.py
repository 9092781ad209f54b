"""Numerical parity with DeepCTR-Torch 0.3.0's ``PLE``, and the bug in its ``__init__``.

The setup is the MMoE parity tests' (``tests/test_parity_deepctr.py``): the tutorial's ByteRec
preprocessing, DeepCTR-Torch's weights copied into ours, DeepCTR-equivalent training settings.

Where the weights live (level ``l``, task ``k``, expert ``j``; ``m_k`` experts per task, ``T`` tasks):

================================================  ==================================================
DeepCTR-Torch                                     mmoe_annotated
================================================  ==================================================
``specific_experts[l][k][j]``                     ``levels[l].experts`` stack ``k * m_k + j``
``shared_experts[l][0][j]``                       ``levels[l].experts`` stack ``T * m_k + j``
``specific_gate_dnn[l][k][0]``, ``..._final_layer[l][k]``  ``levels[l].task_gates`` gate ``k``
``shared_gate_dnn[l]``, ``..._final_layer[l]``    ``levels[l].shared_gate`` (all levels but the last)
``tower_dnn[k]``, ``tower_dnn_final_layer[k]``    ``towers`` (as for MMoE)
================================================  ==================================================

**The bug.** ``PLE.__init__`` builds the shared experts with the wrong count::

    self.shared_experts = multi_module_list(self.num_levels, 1, self.specific_expert_num, ...)

while ``cgc_net`` loops ``for k in range(self.shared_expert_num)`` over them and the gates are
sized for ``shared_expert_num``. With more shared than task experts, the forward pass indexes past
the list (``IndexError``); with fewer, the surplus shared experts are built, counted and saved but
never run, so they never train. Separately, ``cgc_net`` computes a shared gate at the last level
whose output nothing reads: its parameters never train either. Our PLE builds the last level
without a shared gate, so parity copies every DeepCTR-Torch parameter except those dead ones.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from tests.model.test_parity_deepctr import SPARSE, _copy_mlp, _put, our_inputs, train_both, tutorial_frame

deepctr_torch = pytest.importorskip(
    "deepctr_torch", reason="parity tests need deepctr-torch==0.3.0 (requirements-test.txt)")
from deepctr_torch.inputs import DenseFeat, SparseFeat, get_feature_names  # noqa: E402
from deepctr_torch.models import PLE  # noqa: E402

DENSE = list(mm.DENSE_FEATURES)
#: DeepCTR-Torch's PLE defaults (one shared and one task expert per task, two levels), tutorial tasks.
DEFAULT = dict(task_names=("finish", "like"), task_types=("binary", "binary"), shared=1, specific=1, levels=2,
               expert_hidden=(256, 128), gate_hidden=(64,), tower_hidden=(64,), l2_dnn=0.0)


def deepctr_ple(data, settings: dict = DEFAULT):
    s = {**DEFAULT, **settings}
    columns = ([SparseFeat(feat, data[feat].max() + 1, embedding_dim=4) for feat in SPARSE]
               + [DenseFeat(feat, 1) for feat in DENSE])
    model = PLE(columns, shared_expert_num=s["shared"], specific_expert_num=s["specific"], num_levels=s["levels"],
                expert_dnn_hidden_units=s["expert_hidden"], gate_dnn_hidden_units=s["gate_hidden"],
                tower_dnn_hidden_units=s["tower_hidden"], l2_reg_dnn=s["l2_dnn"], l2_reg_embedding=1e-5,
                task_types=list(s["task_types"]), task_names=list(s["task_names"]))
    return model, get_feature_names(columns)


def our_ple(data, settings: dict = DEFAULT) -> mm.PLE:
    s = {**DEFAULT, **settings}
    features = ([mm.SparseFeature(feat, int(data[feat].max()) + 1, 4) for feat in SPARSE]
                + [mm.DenseFeature(feat) for feat in DENSE])
    return mm.PLE(mm.ModelConfig(features=features, task_names=s["task_names"], task_types=s["task_types"],
                                 num_task_experts=s["specific"], num_shared_experts=s["shared"],
                                 num_levels=s["levels"], expert_hidden=s["expert_hidden"],
                                 gate_hidden=s["gate_hidden"], tower_hidden=s["tower_hidden"]))


def dead_parameters(dc) -> list[torch.nn.Parameter]:
    """DeepCTR-Torch's parameters that never reach the output: the last level's shared gate and
    the shared experts past ``shared_expert_num``."""
    last = dc.num_levels - 1
    dead = list(dc.shared_gate_dnn_final_layer[last].parameters())
    if len(dc.gate_dnn_hidden_units) > 0:
        dead += list(dc.shared_gate_dnn[last].parameters())
    for level in dc.shared_experts:
        for expert in list(level[0])[dc.shared_expert_num:]:
            dead += list(expert.parameters())
    return dead


def _copy_gate(dnn, final, gates: mm.Gates, g: int) -> int:
    copied = _copy_mlp(dnn, gates.mlp, g) if gates.mlp is not None else 0
    _put(gates.out[g], final.weight.T)
    return copied + final.weight.numel()


@torch.no_grad()
def copy_weights(dc, ours: mm.PLE) -> None:
    """Copy every live DeepCTR-Torch parameter into ours; asserts that nothing else is left over."""
    copied = 0
    for feat, offset in zip(SPARSE, ours.inputs.offsets.tolist()):
        w = dc.embedding_dict[feat].weight
        _put(ours.inputs.table.weight[offset:offset + w.shape[0]], w)
        copied += w.numel()
    T, mk, ms = dc.num_tasks, dc.specific_expert_num, dc.shared_expert_num
    hidden = len(dc.gate_dnn_hidden_units) > 0
    for l, level in enumerate(ours.levels):
        for k in range(T):
            for j in range(mk):
                copied += _copy_mlp(dc.specific_experts[l][k][j], level.experts, k * mk + j)
            copied += _copy_gate(dc.specific_gate_dnn[l][k][0] if hidden else None,
                                 dc.specific_gate_dnn_final_layer[l][k], level.task_gates, k)
        for j in range(ms):
            copied += _copy_mlp(dc.shared_experts[l][0][j], level.experts, T * mk + j)
        if level.shared_gate is not None:
            copied += _copy_gate(dc.shared_gate_dnn[l] if hidden else None, dc.shared_gate_dnn_final_layer[l],
                                 level.shared_gate, 0)
    for t in range(T):
        if ours.towers.mlp is not None:
            copied += _copy_mlp(dc.tower_dnn[t], ours.towers.mlp, t)
        _put(ours.towers.out[t], dc.tower_dnn_final_layer[t].weight[0])
        _put(ours.towers.bias[t:t + 1], dc.out[t].bias)
        copied += dc.tower_dnn_final_layer[t].weight.numel() + 1
    dead = sum(p.numel() for p in dead_parameters(dc))
    assert copied == sum(p.numel() for p in ours.parameters())
    assert copied + dead == sum(p.numel() for p in dc.parameters())


def predict_both(dc, names, ours, data):
    """Both models' probabilities on every row: DeepCTR-Torch's ``(M, T)`` and ours."""
    return dc.predict({n: data[n] for n in names}, 256), mm.predict(ours, our_inputs(data))


@pytest.fixture
def data(byterec_path):
    return tutorial_frame(byterec_path)


#: Settings where the two counts agree (parity holds) and one where shared < specific (it holds
#: too: the surplus shared experts are dead weight, so copying the live ones is enough).
VARIANTS = {
    "defaults": {},
    "three_levels_linear_gates": dict(levels=3, shared=2, specific=2, expert_hidden=(32, 16), gate_hidden=(),
                                      tower_hidden=()),
    "mixed_tasks_cgc": dict(task_names=("finish", "like", "engagement"), levels=1,
                            task_types=("binary", "binary", "regression"), shared=2, specific=2,
                            expert_hidden=(32,), gate_hidden=(8, 8), tower_hidden=(8,)),
    "fewer_shared": dict(shared=1, specific=2, expert_hidden=(32, 16)),
    # DeepCTR's l2_reg_dnn is our weight_l2 (every weight matrix, no bias, no embedding)
    "weight_l2": dict(l2_dnn=1e-2, shared=2, specific=2, expert_hidden=(64, 32)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_predictions_at_init(data, variant):
    settings = VARIANTS[variant]
    dc, names = deepctr_ple(data, settings)
    ours = our_ple(data, settings)
    copy_weights(dc, ours)
    p_dc, p_ours = predict_both(dc, names, ours, data)
    diff = np.abs(p_dc - p_ours).max()
    print(f"\nPLE parity at init, {variant}: max |p_deepctr - p_ours| = {diff:.3g}")
    assert diff <= 1e-5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_predictions_with_large_random_weights(data, variant):
    """Large weights make every copied parameter matter (with the 1e-4 init all rows look alike)."""
    settings = VARIANTS[variant]
    data = data.assign(engagement=data["finish"] + data["like"])
    dc, names = deepctr_ple(data, settings)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in dc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    ours = our_ple(data, settings)
    copy_weights(dc, ours)
    p_dc, p_ours = predict_both(dc, names, ours, data)
    assert p_dc.std(axis=0).min() > 0.01  # predictions really vary across rows
    diff = np.abs(p_dc - p_ours).max()
    print(f"\nPLE parity with large weights, {variant}: max |p_deepctr - p_ours| = {diff:.3g}")
    assert diff <= 1e-5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_predictions_after_training(data, variant):
    settings = VARIANTS[variant]
    s = {**DEFAULT, **settings}
    data = data.assign(engagement=data["finish"] + data["like"])
    dc, names = deepctr_ple(data, settings)
    ours = our_ple(data, settings)
    copy_weights(dc, ours)
    p_init = dc.predict({n: data[n] for n in names}, 256)
    y = data[list(s["task_names"])].to_numpy()
    losses = ["binary_crossentropy" if t == "binary" else "mse" for t in s["task_types"]]
    p_dc, p_ours = train_both(dc, names, ours, data, y, losses, weight_l2=s["l2_dnn"], epochs=5)
    assert np.abs(p_dc - p_init).max() > 0.05  # both really trained
    diff = np.abs(p_dc - p_ours).max()
    print(f"\nPLE parity after 5 epochs at batch 32, {variant}: max |p_deepctr - p_ours| = {diff:.3g}")
    assert diff <= 1e-4


def test_deepctr_ple_more_shared_than_task_experts_fails(data):
    """``shared_experts`` holds ``specific_expert_num`` experts per level, but ``cgc_net`` asks for
    ``shared_expert_num`` of them: the forward pass indexes past the list."""
    dc, names = deepctr_ple(data, dict(shared=2, specific=1))
    assert len(dc.shared_experts[0][0]) == 1  # built with specific_expert_num
    with pytest.raises(IndexError):
        dc.predict({n: data[n] for n in names}, 256)
    ours = our_ple(data, dict(shared=2, specific=1))  # ours builds what it is asked for
    assert ours.levels[0].experts.num_stacks == 2 * 1 + 2
    assert np.isfinite(mm.predict(ours, our_inputs(data))).all()


def test_deepctr_ple_dead_parameters_never_train(data):
    """Fewer shared than task experts: the surplus shared experts never run; and at every setting the
    last level's shared gate is computed and thrown away. Neither gets a gradient, so neither trains."""
    dc, names = deepctr_ple(data, dict(shared=1, specific=2, expert_hidden=(32, 16)))
    assert len(dc.shared_experts[0][0]) == 2  # one more than the one the gates weigh
    dead = dead_parameters(dc)
    live = [p for p in dc.parameters() if all(p is not d for d in dead)]
    before = [p.detach().clone() for p in dc.parameters()]
    dc.compile("adagrad", loss=["binary_crossentropy", "binary_crossentropy"])
    dc.fit({n: data[n] for n in names}, data[["finish", "like"]].to_numpy(), batch_size=32, epochs=2, verbose=0,
           shuffle=False)
    changed = {id(p): bool((p.detach() != b).any()) for p, b in zip(dc.parameters(), before)}
    assert not any(changed[id(p)] for p in dead)
    assert all(changed[id(p)] for p in live)
    dead_share = sum(p.numel() for p in dead) / sum(p.numel() for p in dc.parameters())
    print(f"\nDeepCTR-Torch PLE (1 shared, 2 task experts): {dead_share:.1%} of the parameters never train")
    assert dead_share > 0.05
