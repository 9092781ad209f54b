"""Numerical parity with DeepCTR-Torch 0.3.0's ``MMOE``, the implementation the tutorial annotates.

Both models are built with the tutorial's settings on the real 200-row ByteRec sample
(LabelEncoder on the 8 ID columns and MinMaxScaler on ``duration_time``, both over all
rows; embedding dim 4; MMOE defaults; ``l2_reg_embedding=1e-5``). DeepCTR-Torch's weights
are copied into ours, and our model is fed the same label-encoded ids directly (our
encoder would reserve PAD/OOV/MISSING ids, which DeepCTR-Torch does not have).

Where the weights live in the two implementations:

=========================================  =============================================
DeepCTR-Torch                              mmoe_annotated
=========================================  =============================================
``embedding_dict[feat].weight`` (per field)  ``inputs.table.weight[offset:offset + V]``
``expert_dnn[i].linears[l]`` W.T, b        ``experts.weights[l][i]``, ``experts.biases[l][i]``
``gate_dnn[t].linears[l]`` W.T, b          ``gates.mlp.weights[l][t]``, ``gates.mlp.biases[l][t]``
``gate_dnn_final_layer[t].weight.T``       ``gates.out[t]``
``tower_dnn[t].linears[l]`` W.T, b         ``towers.mlp.weights[l][t]``, ``towers.mlp.biases[l][t]``
``tower_dnn_final_layer[t].weight[0]``     ``towers.out[t]``
``out[t].bias`` (PredictionLayer)          ``towers.bias[t]``
=========================================  =============================================
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import LabelEncoder, MinMaxScaler

import mmoe_annotated as mm

deepctr_torch = pytest.importorskip(
    "deepctr_torch", reason="parity tests need deepctr-torch==0.3.0 (requirements-test.txt)")
from deepctr_torch.inputs import DenseFeat, SparseFeat, get_feature_names  # noqa: E402
from deepctr_torch.models import MMOE  # noqa: E402

TASKS = ["finish", "like"]
SPARSE, DENSE = list(mm.SPARSE_FEATURES), list(mm.DENSE_FEATURES)


def tutorial_frame(path) -> pd.DataFrame:
    """The tutorial's preprocessing, verbatim in effect: encoders fit on *all* rows."""
    data = pd.read_csv(path, sep="\t", names=list(mm.COLUMNS))
    for feat in SPARSE:
        data[feat] = LabelEncoder().fit_transform(data[feat])
    data[DENSE] = MinMaxScaler(feature_range=(0, 1)).fit_transform(data[DENSE])
    return data


#: DeepCTR-Torch's MMOE defaults, as the tutorial uses them; variants below override some.
TUTORIAL = dict(task_names=("finish", "like"), task_types=("binary", "binary"), num_experts=3,
                expert_hidden=(256, 128), gate_hidden=(64,), tower_hidden=(64,), l2_dnn=0.0)


def deepctr_model(data: pd.DataFrame, settings: dict = TUTORIAL):
    s = {**TUTORIAL, **settings}
    columns = ([SparseFeat(feat, data[feat].max() + 1, embedding_dim=4) for feat in SPARSE]
               + [DenseFeat(feat, 1) for feat in DENSE])
    model = MMOE(columns, num_experts=s["num_experts"], expert_dnn_hidden_units=s["expert_hidden"],
                 gate_dnn_hidden_units=s["gate_hidden"], tower_dnn_hidden_units=s["tower_hidden"],
                 l2_reg_dnn=s["l2_dnn"], task_types=list(s["task_types"]), l2_reg_embedding=1e-5,
                 task_names=list(s["task_names"]))
    return model, get_feature_names(columns)


def our_model(data: pd.DataFrame, settings: dict = TUTORIAL) -> mm.MMoE:
    s = {**TUTORIAL, **settings}
    features = ([mm.SparseFeature(feat, int(data[feat].max()) + 1, 4) for feat in SPARSE]
                + [mm.DenseFeature(feat) for feat in DENSE])
    return mm.MMoE(mm.ModelConfig(features=features, task_names=s["task_names"], task_types=s["task_types"],
                                  num_experts=s["num_experts"], expert_hidden=s["expert_hidden"],
                                  gate_hidden=s["gate_hidden"], tower_hidden=s["tower_hidden"]))


def our_inputs(data: pd.DataFrame) -> mm.EncodedFeatures:
    return mm.EncodedFeatures(torch.tensor(data[SPARSE].to_numpy(), dtype=torch.int64),
                              torch.tensor(data[DENSE].to_numpy(), dtype=torch.float32))


def _put(dst: torch.Tensor, src: torch.Tensor) -> None:
    assert dst.shape == src.shape, (dst.shape, src.shape)
    dst.copy_(src)


def _copy_mlp(dnn, stacked: mm.StackedMLP, s: int) -> int:
    for l, lin in enumerate(dnn.linears):
        _put(stacked.weights[l][s], lin.weight.T)  # nn.Linear stores (out, in); we stack (in, out)
        _put(stacked.biases[l][s], lin.bias)
    return sum(p.numel() for p in dnn.parameters())


@torch.no_grad()
def copy_weights(dc, ours: mm.MMoE) -> None:
    """Copy every DeepCTR-Torch parameter into ours; asserts that nothing is left over."""
    copied = 0
    for feat, offset in zip(SPARSE, ours.inputs.offsets.tolist()):
        w = dc.embedding_dict[feat].weight
        _put(ours.inputs.table.weight[offset:offset + w.shape[0]], w)
        copied += w.numel()
    for i, expert in enumerate(dc.expert_dnn):
        copied += _copy_mlp(expert, ours.experts, i)
    for t in range(dc.num_tasks):
        if ours.gates.mlp is not None:
            copied += _copy_mlp(dc.gate_dnn[t], ours.gates.mlp, t)
        _put(ours.gates.out[t], dc.gate_dnn_final_layer[t].weight.T)
        if ours.towers.mlp is not None:
            copied += _copy_mlp(dc.tower_dnn[t], ours.towers.mlp, t)
        _put(ours.towers.out[t], dc.tower_dnn_final_layer[t].weight[0])
        _put(ours.towers.bias[t:t + 1], dc.out[t].bias)
        copied += dc.gate_dnn_final_layer[t].weight.numel() + dc.tower_dnn_final_layer[t].weight.numel() + 1
    # the same number of parameters on both sides, and every one of them copied
    assert copied == sum(p.numel() for p in dc.parameters()) == sum(p.numel() for p in ours.parameters())


def train_both(dc, names, ours, data, y, losses, *, weight_l2=0.0, epochs=10):
    """DeepCTR-equivalent training: Adagrad lr 0.01, summed losses, whole-table embedding L2, no shuffling."""
    x_dc = {n: data[n] for n in names}
    dc.compile("adagrad", loss=losses)
    dc.fit(x_dc, y, batch_size=32, epochs=epochs, verbose=0, shuffle=False)
    cfg = mm.TrainConfig(optimizer="adagrad", lr=0.01, loss_reduction="sum", embedding_l2=1e-5,
                         embedding_l2_mode="table", weight_l2=weight_l2, shuffle=False, batch_size=32,
                         epochs=epochs, progress=False)
    mm.fit(ours, (our_inputs(data), y), cfg)
    return dc.predict(x_dc, 256), mm.predict(ours, our_inputs(data))


@pytest.fixture
def data(byterec_path) -> pd.DataFrame:
    return tutorial_frame(byterec_path)


def test_tutorial_frame_matches_our_loader(data, byterec_path):
    """The tutorial reads the file with pd.read_csv; our strict loader reads the same values."""
    raw = pd.read_csv(byterec_path, sep="\t", names=list(mm.COLUMNS))
    ours = mm.load_byterec(byterec_path)
    np.testing.assert_array_equal(raw.to_numpy(dtype=np.float64), ours.to_numpy(dtype=np.float64))
    assert len(data) == 200


def test_same_predictions_at_init(data):
    dc, names = deepctr_model(data)
    ours = our_model(data)
    copy_weights(dc, ours)
    p_dc = dc.predict({n: data[n] for n in names}, 256)
    p_ours = mm.predict(ours, our_inputs(data))
    assert p_ours.shape == p_dc.shape == (200, 2)
    diff = np.abs(p_dc - p_ours).max()
    print(f"\nparity at init: max |p_deepctr - p_ours| = {diff:.3g}")
    assert diff <= 1e-5


def test_same_predictions_and_gates_with_random_weights(data):
    """With the 1e-4 init every row gets nearly the same prediction, which would hide a wrongly
    copied weight. Large random weights make every parameter matter."""
    dc, names = deepctr_model(data)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in dc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    ours = our_model(data)
    copy_weights(dc, ours)
    p_dc = dc.predict({n: data[n] for n in names}, 256)
    p_ours, gates = mm.predict(ours, our_inputs(data), return_gates=True)
    assert p_dc.std(axis=0).min() > 0.01  # predictions really vary across rows
    assert np.abs(p_dc - p_ours).max() <= 1e-5
    # DeepCTR-Torch computes the gates inside forward and throws them away; recompute them
    dc.eval()
    with torch.no_grad():
        x = torch.from_numpy(np.concatenate([data[n].to_numpy()[:, None] for n in names], axis=-1)).float()
        emb, dense = dc.input_from_feature_columns(x, dc.dnn_feature_columns, dc.embedding_dict)
        h = torch.cat([torch.cat(emb, dim=-1).flatten(1), torch.cat(dense, dim=-1)], dim=1)
        dc_gates = torch.stack([dc.gate_dnn_final_layer[t](dc.gate_dnn[t](h)).softmax(1)
                                for t in range(len(TASKS))], dim=1).numpy()
    assert gates.shape == dc_gates.shape == (200, 2, 3)
    assert np.abs(gates - dc_gates).max() <= 1e-5


def test_same_predictions_after_ten_epochs(data):
    """The tutorial's model, trained 10 epochs at batch 32 by both, with DeepCTR-equivalent settings."""
    dc, names = deepctr_model(data)
    ours = our_model(data)
    copy_weights(dc, ours)
    p_init = dc.predict({n: data[n] for n in names}, 256)
    y = data[TASKS].to_numpy()
    p_dc, p_ours = train_both(dc, names, ours, data, y, ["binary_crossentropy", "binary_crossentropy"])
    assert np.abs(p_dc - p_init).max() > 0.1  # both really trained
    diff = np.abs(p_dc - p_ours).max()
    print(f"\nparity after 10 epochs at batch 32: max |p_deepctr - p_ours| = {diff:.3g}")
    assert diff <= 1e-4


VARIANTS = {
    # the paper's linear gate, no tower hidden layer, four experts of one layer
    "linear_gate": dict(gate_hidden=(), tower_hidden=(), num_experts=4, expert_hidden=(32,)),
    # three tasks, one of them regression (MSE), deeper gates and towers
    "mixed_tasks": dict(task_names=("finish", "like", "engagement"), task_types=("binary", "binary", "regression"),
                        num_experts=2, expert_hidden=(32, 16), gate_hidden=(8, 8), tower_hidden=(8,)),
    # DeepCTR's l2_reg_dnn is our weight_l2 (every weight matrix, no bias, no embedding)
    "weight_l2": dict(l2_dnn=1e-2, expert_hidden=(64, 32)),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_predictions_after_training_variants(data, variant):
    settings = VARIANTS[variant]
    s = {**TUTORIAL, **settings}
    data = data.assign(engagement=data["finish"] + data["like"])  # 0, 1 or 2: a regression target
    dc, names = deepctr_model(data, settings)
    ours = our_model(data, settings)
    copy_weights(dc, ours)
    y = data[list(s["task_names"])].to_numpy()
    losses = ["binary_crossentropy" if t == "binary" else "mse" for t in s["task_types"]]
    p_dc, p_ours = train_both(dc, names, ours, data, y, losses, weight_l2=s["l2_dnn"])
    assert p_ours.shape == p_dc.shape == (200, len(s["task_names"]))
    diff = np.abs(p_dc - p_ours).max()
    print(f"\nparity, variant {variant}: max |p_deepctr - p_ours| = {diff:.3g}")
    assert diff <= 1e-4
    if variant == "weight_l2":  # the penalty really acted: the same start trained without it ends elsewhere
        free = our_model(data, settings)
        copy_weights(deepctr_model(data, settings)[0], free)  # DeepCTR seeds 1024: the same initial weights
        mm.fit(free, (our_inputs(data), y), mm.TrainConfig(
            optimizer="adagrad", lr=0.01, loss_reduction="sum", embedding_l2=1e-5, embedding_l2_mode="table",
            shuffle=False, batch_size=32, epochs=10, progress=False))
        assert np.abs(mm.predict(free, our_inputs(data)) - p_ours).max() > 1e-3


def test_tutorial_figures(data):
    """The tutorial's own run (80/20 split by row order, DeepCTR's default shuffled fit) gives
    the figures the book quotes: finish AUC 0.5303 / log loss 0.8588, like AUC 0.6842 / log loss 0.3686
    (DeepCTR-Torch 0.3.0 on torch 2.13, CPU)."""
    boundary = int(data.shape[0] * 0.8)
    train, test = data[:boundary], data[boundary:]
    model, names = deepctr_model(data)  # seeds torch with 1024, as the tutorial's run does
    model.compile("adagrad", loss=["binary_crossentropy", "binary_crossentropy"], metrics=["binary_crossentropy"])
    model.fit({n: train[n] for n in names}, train[TASKS].values, batch_size=32, epochs=10, verbose=0)
    pred = model.predict({n: test[n] for n in names}, 256)
    got = {t: (round(roc_auc_score(test[t].values, pred[:, i]), 4), round(log_loss(test[t].values, pred[:, i]), 4))
           for i, t in enumerate(TASKS)}
    print(f"\ntutorial run (AUC, log loss): {got}")
    expected = {"finish": (0.5303, 0.8588), "like": (0.6842, 0.3686)}
    for t in TASKS:
        assert got[t] == pytest.approx(expected[t], abs=2e-3), (t, got[t])
