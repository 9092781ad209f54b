"""MMoE, OMoE and Shared-Bottom: shapes over batch sizes, experts and tasks; config validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from tests.conftest import randomize_

FEATURES = (mm.SparseFeature("a", 11, 4), mm.SparseFeature("b", 5, 4), mm.DenseFeature("d", 2))
TASKS = {2: (("finish", "like"), ("binary", "binary")),
         3: (("finish", "like", "watch_time"), ("binary", "binary", "regression"))}


def config(E=3, T=2, **kw) -> mm.ModelConfig:
    names, types = TASKS[T]
    small = dict(expert_hidden=(16, 8), gate_hidden=(6,), tower_hidden=(5,))
    small.update(kw)
    return mm.ModelConfig(FEATURES, task_names=names, task_types=types, num_experts=E, **small)


def inputs(B: int, seed: int = 0) -> mm.EncodedFeatures:
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, 11, (B,), generator=g), torch.randint(0, 5, (B,), generator=g)], 1)
    return mm.EncodedFeatures(ids, torch.rand(B, 2, generator=g))


@pytest.mark.parametrize("B", [1, 2, 7])
@pytest.mark.parametrize("E", [2, 4])
@pytest.mark.parametrize("T", [2, 3])
@pytest.mark.parametrize("kind", ["mmoe", "omoe", "shared_bottom"])
def test_output_shapes(kind, T, E, B):
    model = mm.build_model(kind, config(E=E, T=T))
    randomize_(model)
    for mode in ("train", "eval"):
        getattr(model, mode)()
        out = model(*inputs(B))
        assert isinstance(out, mm.ModelOutput)
        assert out.logits.shape == (B, T)
        width = 1 if kind == "shared_bottom" else E
        assert out.gates.shape == (B, T, width)
        torch.testing.assert_close(out.gates.sum(-1), torch.ones(B, T))
        assert torch.isfinite(out.logits).all()
    # a batch of one gives the same numbers as the same row inside a bigger batch
    model.eval()
    big = inputs(7)
    row = mm.EncodedFeatures(big.ids[3:4], big.dense[3:4])
    torch.testing.assert_close(model(*row).logits[0], model(*big).logits[3], rtol=1e-5, atol=1e-6)


def test_mmoe_is_the_composition_of_its_blocks():
    model = mm.MMoE(config(E=4, T=3))
    randomize_(model, seed=5)
    x = inputs(7)
    h = model.inputs(*x)  # (B, I)
    expected = model.towers(mm.mix(model.gates(h), model.experts(h)))
    out = model(x)  # EncodedFeatures accepted as one argument too
    torch.testing.assert_close(out.logits, expected)
    # per-task gates really differ in MMoE
    assert not torch.allclose(out.gates[:, 0], out.gates[:, 1])


@pytest.mark.parametrize("B", [1, 7])
def test_omoe_one_gate_for_all_tasks(B):
    model = mm.OMoE(config(E=4, T=3))
    randomize_(model, seed=1)
    assert model.gates.num_gates == 1
    g = model(*inputs(B)).gates
    for t in range(1, 3):
        assert torch.equal(g[:, 0], g[:, t])
    assert not torch.allclose(g[:, 0], torch.full_like(g[:, 0], 0.25))


def test_shared_bottom_gates_are_ones():
    model = mm.SharedBottom(config(E=4, T=3))
    assert model.gates is None and model.num_experts == 1
    out = model(*inputs(7))
    assert torch.equal(out.gates, torch.ones(7, 3, 1))
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith("gates") for n in names)


def test_mixed_binary_and_regression_tasks():
    model = mm.MMoE(config(E=2, T=3))
    randomize_(model, seed=2)
    x = inputs(7)
    logits = model(*x).logits
    preds = mm.predict(model, x)
    assert preds.shape == (7, 3)
    np.testing.assert_allclose(preds[:, :2], torch.sigmoid(logits[:, :2]).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(preds[:, 2], logits[:, 2].detach().numpy(), rtol=1e-6)  # regression: raw value
    assert ((preds[:, :2] > 0) & (preds[:, :2] < 1)).all()


def test_defaults_are_deepctr_mmoe_defaults_and_linear_gate_is_one_change():
    c = mm.ModelConfig(FEATURES)
    assert (c.num_experts, c.expert_hidden, c.gate_hidden, c.tower_hidden) == (3, (256, 128), (64,), (64,))
    assert (c.activation, c.dropout, c.init_std, c.seed) == ("relu", 0.0, 1e-4, 1024)
    model = mm.MMoE(c)
    assert model.experts.weights[0].shape == (3, 4 * 2 + 2, 256)
    assert model.gates.mlp.weights[0].shape == (2, 10, 64) and model.gates.out.shape == (2, 64, 3)
    assert model.towers.mlp.weights[0].shape == (2, 128, 64) and model.towers.out.shape == (2, 64)
    paper = mm.MMoE(mm.ModelConfig(FEATURES, gate_hidden=()))
    assert paper.gates.mlp is None and paper.gates.out.shape == (2, 10, 3)  # softmax(W_gk x)
    assert paper(*inputs(2)).gates.shape == (2, 2, 3)


def test_seeded_construction_leaves_global_rng_alone():
    a, b = mm.MMoE(config()), mm.MMoE(config())
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    c = mm.MMoE(config(seed=7))
    assert not torch.equal(a.experts.weights[0], c.experts.weights[0])
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    mm.MMoE(config())
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("kind", ["mmoe", "omoe", "shared_bottom"])
def test_parameter_roles_cover_every_parameter_once(kind):
    model = mm.build_model(kind, config(E=3, T=3))
    roles = model.parameter_roles()
    assert set(roles) == {"embedding", "weights", "biases"}
    ids = [id(p) for ps in roles.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert roles["embedding"] == [model.inputs.table.weight]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("bias" in names[id(p)] for p in roles["biases"])
    assert all("bias" not in names[id(p)] for p in roles["weights"])
    assert id(model.towers.bias) in map(id, roles["biases"]) and id(model.towers.out) in map(id, roles["weights"])
    assert model.num_parameters() - model.num_parameters(include_embedding=False) == (11 + 5) * 4


def test_sparse_only_and_dense_only_models():
    sparse_only = mm.MMoE(mm.ModelConfig(FEATURES[:2], expert_hidden=(8,), gate_hidden=(4,), tower_hidden=(4,)))
    ids = inputs(3).ids
    assert sparse_only(ids).logits.shape == (3, 2)
    dense_only = mm.MMoE(mm.ModelConfig((mm.DenseFeature("d", 3),), expert_hidden=(8,), gate_hidden=(4,),
                                        tower_hidden=(4,)))
    assert dense_only.inputs.table is None
    assert dense_only(None, torch.rand(3, 3)).logits.shape == (3, 2)
    assert dense_only.parameter_roles()["embedding"] == []


def test_config_round_trip():
    c = config(E=4, T=3, dropout=0.1, init_std=None, seed=None)
    back = mm.ModelConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        mm.ModelConfig.from_dict({**c.to_dict(), "experts": 3})


def test_config_is_frozen():
    c = config()
    with pytest.raises(Exception):
        c.num_experts = 5  # frozen dataclass


@pytest.mark.parametrize("kwargs,match", [
    (dict(features=()), "features is empty"),
    (dict(features=("uid",)), "SparseFeature or DenseFeature"),
    (dict(features=(mm.DenseFeature("x"), mm.DenseFeature("x"))), "unique"),
    (dict(task_names=("a", "b"), task_types=("binary",)), "same length"),
    (dict(task_names=(), task_types=()), "at least one task"),
    (dict(task_names=("a", "a")), "unique"),
    (dict(task_types=("binary", "multiclass")), "unknown task type"),
    (dict(task_names="finish"), "must be a sequence"),
    (dict(num_experts=0), "num_experts"),
    (dict(num_experts=2.5), "num_experts"),
    (dict(expert_hidden=()), "expert_hidden"),
    (dict(expert_hidden=(16, 0)), "positive ints"),
    (dict(gate_hidden=(4.5,)), "positive ints"),
    (dict(activation="swish-ish"), "unknown activation"),
    (dict(dropout=1.0), "dropout"),
    (dict(init_std=0.0), "init_std"),
])
def test_config_validation_errors(kwargs, match):
    base = dict(features=FEATURES)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mm.ModelConfig(**base)


def test_build_model_and_type_errors():
    with pytest.raises(ValueError, match="unknown model kind"):
        mm.build_model("moe", config())
    with pytest.raises(TypeError, match="ModelConfig"):
        mm.MMoE({"features": FEATURES})
    assert isinstance(mm.build_model("omoe", config()), mm.OMoE)
    assert "experts=3x[16, 8]" in repr(mm.MMoE(config()))


def test_no_bare_squeeze_in_the_package(repo_root):
    """A bare ``.squeeze()`` drops the batch axis at batch size 1 (a DeepCTR-Torch complaint);
    the package names the axis it removes, everywhere."""
    import re

    offenders = []
    for path in sorted((repo_root / "mmoe_annotated").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if re.search(r"\.squeeze\(\s*\)|torch\.squeeze\(\s*\w+\s*\)", line):
                offenders.append(f"{path.relative_to(repo_root)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
