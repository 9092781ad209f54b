"""CGC and PLE (mmoe_annotated.ple): shapes, config, the paper's shared gate, checkpoints, training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mmoe_annotated as mm
from mmoe_annotated.model.ple import ExtractionLevel, RoutedGates

FEATURES = (mm.SparseFeature("a", 10, 4), mm.SparseFeature("b", 7, 4), mm.DenseFeature("d"))


def config(**kw) -> mm.ModelConfig:
    base = dict(features=FEATURES, task_names=("t0", "t1", "t2"), task_types=("binary", "binary", "regression"),
                num_task_experts=2, num_shared_experts=3, num_levels=3, expert_hidden=(16, 8), gate_hidden=(6,),
                tower_hidden=(5,), init_std=None)
    return mm.ModelConfig(**{**base, **kw})


def batch(B=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, 10, (B,), generator=g), torch.randint(0, 7, (B,), generator=g)], 1), \
        torch.rand(B, 1, generator=g)


@pytest.mark.parametrize("kind", ["cgc", "ple"])
@pytest.mark.parametrize("gate_hidden", [(6,), ()])
def test_outputs_and_gates(kind, gate_hidden):
    model = mm.build_model(kind, config(gate_hidden=gate_hidden))
    out = model(*batch())
    T, mk, ms = 3, 2, 3
    E = T * mk + ms
    assert out.logits.shape == (11, T) and out.gates.shape == (11, T, E) and model.num_experts == E
    torch.testing.assert_close(out.gates.sum(-1), torch.ones(11, T))
    for k in range(T):  # task k's gate weighs only its own experts and the shared ones (eq. 4)
        own = set(range(k * mk, (k + 1) * mk)) | set(range(T * mk, E))
        for e in range(E):
            assert bool((out.gates[:, k, e] > 0).all()) == (e in own)
    assert len(model.levels) == (1 if kind == "cgc" else 3)
    assert model.levels[-1].shared_gate is None  # nothing would read a last-level shared gate
    assert all(level.shared_gate is not None for level in model.levels[:-1])


def test_config_validation_and_round_trip():
    for name in ("num_task_experts", "num_shared_experts", "num_levels"):
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match=name):
                config(**{name: bad})
    c = config(num_levels=np.int64(2))
    assert type(c.num_levels) is int
    assert mm.ModelConfig.from_dict(c.to_dict()) == c
    old = c.to_dict()
    for name in ("num_task_experts", "num_shared_experts", "num_levels"):
        del old[name]  # a config saved before these fields existed still loads, with the defaults
    assert mm.ModelConfig.from_dict(old).num_levels == 2


def _shared_input_of_next_level(model, ids, dense):
    """What level 1's shared experts read, captured from the model's own forward pass."""
    seen = {}
    handle = model.levels[1].experts.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    try:
        model(ids, dense)
    finally:
        handle.remove()
    level = model.levels[1]
    shared = (level.reads == level.num_tasks).nonzero().flatten()
    return seen["x"][:, shared]  # (B, m_s, D): every shared expert of level 1 reads the same vector


def check_shared_gate(model) -> None:
    """The paper's shared gate (§4.2): at level 0 it mixes ALL experts of the level, every task's and
    the shared ones, and its mixture is what level 1's shared experts read."""
    ids, dense = batch()
    with torch.no_grad():
        x = model.inputs(ids, dense)  # (B, I)
        level0 = model.levels[0]
        h = level0.experts(x)  # (B, E, D): all experts of the level
        s = level0.shared_gate(x)  # (B, 1, E)
        assert s.shape == (len(x), 1, h.shape[1]), "the shared gate must weigh every expert of its level"
        expected = (s.transpose(1, 2) * h).sum(1)  # (B, D): sum_e s_e h_e over all E experts
        got = _shared_input_of_next_level(model, ids, dense)
        for j in range(got.shape[1]):
            torch.testing.assert_close(got[:, j], expected)
        # and behaviourally: changing one task-specific expert of level 0 changes what the shared
        # experts of level 1 read
        level0.experts.biases[-1][0] += 1.0
        try:
            moved = _shared_input_of_next_level(model, ids, dense)
        finally:
            level0.experts.biases[-1][0] -= 1.0
        assert (moved - got).abs().max() > 1e-3, "the shared path ignores the task-specific experts"


def test_shared_gate_mixes_all_experts_of_its_level():
    model = mm.build_model("ple", config())
    check_shared_gate(model)
    # levels after the first: the shared gate reads the shared output of the level below
    ids, dense = batch()
    with torch.no_grad():
        z, _ = model.levels[0](model.inputs(ids, dense))  # (B, T+1, D)
        _, g1 = model.levels[1](z)
        torch.testing.assert_close(g1[:, -1:], model.levels[1].shared_gate(z[:, -1]))


class SharedOnlyLevel(ExtractionLevel):
    """The known bug elsewhere: the shared gate weighs the shared experts only."""

    def __init__(self, input_dim, c, shared_gate):
        super().__init__(input_dim, c, shared_gate)
        ms = c.num_shared_experts
        self.shared_gate = RoutedGates(input_dim, ms, 1, c.gate_hidden, c.activation, c.dropout, c.init_std)

    def forward(self, z):
        T = self.num_tasks
        first = z.dim() == 2
        h = self.experts(z if first else z[:, self.reads])
        w = self.task_gates(z if first else z[:, :T])
        g = w.new_zeros(w.shape[0], T, self.num_experts).scatter(2, self.sees.expand(w.shape[0], -1, -1), w)
        s = self.shared_gate(z if first else z[:, T:])  # (B, 1, m_s)
        s = torch.cat([s.new_zeros(s.shape[0], 1, self.num_experts - s.shape[2]), s], dim=2)
        g = torch.cat([g, s], dim=1)
        return mm.mix(g, h), g


def test_a_shared_gate_over_shared_experts_only_fails_the_check():
    model = mm.build_model("ple", config())
    c = model.config
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model.levels[0] = SharedOnlyLevel(model.inputs.output_dim, c, True)
    with pytest.raises(AssertionError):
        check_shared_gate(model)


def test_cgc_is_a_one_level_ple():
    cgc = mm.build_model("cgc", config(num_levels=4))
    ple = mm.build_model("ple", config(num_levels=1))
    ple.load_state_dict(cgc.state_dict())
    ids, dense = batch()
    torch.testing.assert_close(cgc(ids, dense).logits, ple(ids, dense).logits)


@pytest.mark.parametrize("kind", ["cgc", "ple"])
def test_checkpoint_round_trip(kind, tmp_path):
    model = mm.build_model(kind, config())
    path = tmp_path / "m.pt"
    mm.save_checkpoint(path, model)
    loaded = mm.load_checkpoint(path).model
    assert type(loaded) is type(model)
    ids, dense = batch()
    torch.testing.assert_close(loaded(ids, dense).logits, model(ids, dense).logits)


@pytest.mark.parametrize("kind", ["cgc", "ple"])
def test_fit_trains_every_parameter_and_fast_fit_agrees(kind):
    c = config(init_std=1e-2, num_levels=2)
    ids, dense = batch(B=64, seed=1)
    y = torch.stack([(ids[:, 0] > 4).float(), (dense[:, 0] > 0.5).float(), dense[:, 0]], 1)
    data = (mm.EncodedFeatures(ids, dense), y)
    cfg = mm.TrainConfig(epochs=3, batch_size=16, optimizer="adam", weight_l2=1e-4, progress=False)
    model = mm.build_model(kind, c)
    before = [p.detach().clone() for p in model.parameters()]
    history = mm.fit(model, data, cfg)
    assert len(history) == 3
    moved = [bool((p - b).abs().max() > 0) for p, b in zip(model.parameters(), before)]
    assert all(moved)  # no parameter is dead weight (unlike DeepCTR-Torch's last-level shared gate)
    fast = mm.build_model(kind, c)
    mm.fast.fit(fast, data, cfg)
    for p, q in zip(model.parameters(), fast.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
