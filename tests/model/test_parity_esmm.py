"""Numerical parity with DeepCTR-Torch 0.3.0's ``ESMM`` (``deepctr_torch.models.multitask``).

The setup is the MMoE parity tests' (``tests/model/test_parity_deepctr.py``): the tutorial's
ByteRec preprocessing, DeepCTR-Torch's weights copied into ours, DeepCTR-equivalent training
(Adagrad lr 0.01, summed losses, whole-table embedding L2, no shuffling). ByteRec's funnel is
the click ``finish`` and the click-and-conversion ``finish and like``.

================================================  ==========================================
DeepCTR-Torch                                     mmoe_annotated
================================================  ==========================================
``embedding_dict[feat]``                          ``inputs.table`` rows from the feature's offset
``ctr_dnn``, ``ctr_dnn_final_layer``              ``towers`` stack 0, ``towers.out[0]``
``cvr_dnn``, ``cvr_dnn_final_layer``              ``towers`` stack 1, ``towers.out[1]``
``out.bias`` (one ``PredictionLayer`` for both)   ``towers.bias[0]`` and ``towers.bias[1]``
================================================  ==========================================

**One output bias for two towers.** DeepCTR-Torch's ``ESMM.forward`` passes both logits
through the same ``self.out`` (``PredictionLayer``), so pCTR and pCVR share one output bias;
ours gives each tower its own, as every other model does. At initialisation both are zero and
the predictions agree; for training, the test ties ours to one shared bias
(:func:`tie_output_bias`) so that both models have the same parameters.

DeepCTR-Torch's ESMM outputs probabilities and trains ``F.binary_cross_entropy`` on pCTR and
on the product pCTR * pCVR; ours outputs the CTR and CTCVR logits and trains BCE with logits
on them: the same loss, rounded differently.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mmoe_annotated as mm
from tests.model.test_parity_deepctr import SPARSE, _copy_mlp, _put, our_inputs, tutorial_frame

deepctr_torch = pytest.importorskip(
    "deepctr_torch", reason="parity tests need deepctr-torch==0.3.0 (requirements-test.txt)")
from deepctr_torch.inputs import DenseFeat, SparseFeat, get_feature_names  # noqa: E402
from deepctr_torch.models.multitask import ESMM  # noqa: E402

DENSE = list(mm.DENSE_FEATURES)
#: DeepCTR-Torch's ESMM defaults: towers of (256, 128), no DNN L2.
DEFAULT = dict(tower_hidden=(256, 128), l2_dnn=0.0)
VARIANTS = {
    "defaults": {},
    "small_towers_weight_l2": dict(tower_hidden=(32, 16), l2_dnn=1e-2),
    "one_layer": dict(tower_hidden=(8,)),
}


def deepctr_esmm(data, settings: dict):
    s = {**DEFAULT, **settings}
    columns = ([SparseFeat(feat, data[feat].max() + 1, embedding_dim=4) for feat in SPARSE]
               + [DenseFeat(feat, 1) for feat in DENSE])
    model = ESMM(columns, tower_dnn_hidden_units=s["tower_hidden"], l2_reg_dnn=s["l2_dnn"],
                 l2_reg_embedding=1e-5, task_names=["ctr", "ctcvr"])
    return model, get_feature_names(columns)


def our_esmm(data, settings: dict) -> mm.ESMM:
    s = {**DEFAULT, **settings}
    features = ([mm.SparseFeature(feat, int(data[feat].max()) + 1, 4) for feat in SPARSE]
                + [mm.DenseFeature(feat) for feat in DENSE])
    return mm.ESMM(mm.ModelConfig(features=features, task_names=("ctr", "ctcvr"),
                                  tower_hidden=s["tower_hidden"]))


class TiedTowers(mm.Towers):
    """Towers whose output bias is one parameter shared by both tasks (DeepCTR-Torch's ESMM)."""

    @property
    def bias(self) -> torch.Tensor:
        return self.shared_bias.expand(self.num_tasks)  # (T,)


def tie_output_bias(model: mm.ESMM) -> None:
    towers = model.towers
    value = towers._parameters.pop("bias").detach()[:1].clone()
    towers.shared_bias = nn.Parameter(value)
    towers.__class__ = TiedTowers
    embedding = [model.inputs.table.weight]
    model.parameter_roles = lambda: {"embedding": embedding, "weights": [*towers.mlp.weights, towers.out],
                                     "biases": [*towers.mlp.biases, towers.shared_bias]}


@torch.no_grad()
def copy_weights(dc, ours: mm.ESMM) -> None:
    """Copy every DeepCTR-Torch parameter into ours; asserts that nothing is left over."""
    copied = 0
    for feat, offset in zip(SPARSE, ours.inputs.offsets.tolist()):
        w = dc.embedding_dict[feat].weight
        _put(ours.inputs.table.weight[offset:offset + w.shape[0]], w)
        copied += w.numel()
    for t, (dnn, final) in enumerate([(dc.ctr_dnn, dc.ctr_dnn_final_layer), (dc.cvr_dnn, dc.cvr_dnn_final_layer)]):
        copied += _copy_mlp(dnn, ours.towers.mlp, t)
        _put(ours.towers.out[t], final.weight[0])
        copied += final.weight.numel()
    if isinstance(ours.towers, TiedTowers):
        _put(ours.towers.shared_bias, dc.out.bias)
    else:
        ours.towers.bias.copy_(dc.out.bias.expand(2))
    copied += dc.out.bias.numel()
    assert copied == sum(p.numel() for p in dc.parameters())
    assert sum(p.numel() for p in ours.parameters()) == copied + (0 if isinstance(ours.towers, TiedTowers) else 1)


@pytest.fixture
def data(byterec_path):
    data = tutorial_frame(byterec_path)
    data["ctr"] = data["finish"].astype(float)
    data["ctcvr"] = (data["finish"] * data["like"]).astype(float)  # a like is counted after a finish
    return data


def both(data, settings):
    dc, names = deepctr_esmm(data, settings)
    ours = our_esmm(data, settings)
    return dc, names, ours


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_predictions_at_init(data, variant):
    dc, names, ours = both(data, VARIANTS[variant])
    copy_weights(dc, ours)
    p_dc, p_ours = dc.predict({n: data[n] for n in names}, 256), mm.predict(ours, our_inputs(data))
    assert p_ours.shape == p_dc.shape == (200, 2)
    diff = np.abs(p_dc - p_ours).max()
    print(f"\nESMM parity at init, {variant}: max |p_deepctr - p_ours| = {diff:.3g}")
    assert diff <= 1e-5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_predictions_with_large_random_weights(data, variant):
    """Large weights make every copied parameter matter (with the 1e-4 init all rows look alike)."""
    dc, names, ours = both(data, VARIANTS[variant])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in dc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    copy_weights(dc, ours)
    p_dc, p_ours = dc.predict({n: data[n] for n in names}, 256), mm.predict(ours, our_inputs(data))
    assert p_dc.std(axis=0).min() > 0.01  # predictions really vary across rows
    diff = np.abs(p_dc - p_ours).max()
    print(f"\nESMM parity with large weights, {variant}: max |p_deepctr - p_ours| = {diff:.3g}")
    assert diff <= 1e-5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_same_predictions_after_five_epochs(data, variant):
    s = {**DEFAULT, **VARIANTS[variant]}
    dc, names, ours = both(data, s)
    tie_output_bias(ours)
    copy_weights(dc, ours)
    x_dc = {n: data[n] for n in names}
    p_init = dc.predict(x_dc, 256)
    y = data[["ctr", "ctcvr"]].to_numpy()
    dc.compile("adagrad", loss=["binary_crossentropy", "binary_crossentropy"])
    dc.fit(x_dc, y, batch_size=32, epochs=5, verbose=0, shuffle=False)
    cfg = mm.TrainConfig(optimizer="adagrad", lr=0.01, loss_reduction="sum", embedding_l2=1e-5,
                         embedding_l2_mode="table", weight_l2=s["l2_dnn"], shuffle=False, batch_size=32,
                         epochs=5, progress=False)
    mm.fit(ours, (our_inputs(data), y), cfg)
    p_dc, p_ours = dc.predict(x_dc, 256), mm.predict(ours, our_inputs(data))
    assert np.abs(p_dc - p_init).max() > 0.05  # both really trained
    diff = np.abs(p_dc - p_ours).max()
    print(f"\nESMM parity after 5 epochs at batch 32, {variant}: max |p_deepctr - p_ours| = {diff:.3g}")
    assert diff <= 1e-5


def test_deepctr_esmm_shares_one_output_bias(data):
    """The reason for :func:`tie_output_bias`: one ``PredictionLayer`` serves both towers."""
    dc, _, _ = both(data, {})
    assert sum(p.numel() for p in dc.out.parameters()) == 1
