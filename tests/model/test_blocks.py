"""The three building blocks against plain loop-based references built from nn.Linear."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

import mmoe_annotated as mm
from tests.conftest import randomize_
from mmoe_annotated.model.experts import ACTIVATIONS


def reference_mlps(stacked: mm.StackedMLP, activation: str = "relu") -> list[nn.Sequential]:
    """One nn.Sequential of nn.Linear per stacked network, with the stacked weights copied in."""
    nets = []
    for s in range(stacked.num_stacks):
        layers = []
        for w, b in zip(stacked.weights, stacked.biases):
            lin = nn.Linear(w.shape[1], w.shape[2])
            with torch.no_grad():
                lin.weight.copy_(w[s].T)  # nn.Linear stores (out, in)
                lin.bias.copy_(b[s])
            layers += [lin, ACTIVATIONS[activation]()]
        nets.append(nn.Sequential(*layers))
    return nets


@pytest.mark.parametrize("B", [1, 2, 7])
@pytest.mark.parametrize("E", [2, 4])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_batched_experts_equal_loop_reference(B, E, activation):
    torch.manual_seed(B * 10 + E)
    experts = mm.Experts(input_dim=9, num_experts=E, hidden_units=(16, 5), activation=activation)
    randomize_(experts, seed=E)
    x = torch.randn(B, 9)
    out = experts(x)
    assert out.shape == (B, E, 5)
    ref = torch.stack([net(x) for net in reference_mlps(experts, activation)], dim=1)  # (B, E, D)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("B", [1, 7])
def test_stacked_mlp_per_stack_input_equals_loop(B):
    mlp = mm.StackedMLP(input_dim=6, num_stacks=3, hidden_units=(8, 4, 2))
    randomize_(mlp, seed=1)
    x = torch.randn(B, 3, 6)  # one input per network
    ref = torch.stack([net(x[:, s]) for s, net in enumerate(reference_mlps(mlp))], dim=1)
    torch.testing.assert_close(mlp(x), ref, rtol=1e-5, atol=1e-6)


def test_experts_differ_at_init():
    for init_std in (1e-4, None):
        experts = mm.Experts(input_dim=12, num_experts=4, hidden_units=(8, 6), init_std=init_std)
        for w in experts.weights:
            for i in range(4):
                for j in range(i + 1, 4):
                    assert not torch.equal(w[i], w[j])
        out = experts(torch.randn(5, 12))
        assert not torch.allclose(out[:, 0], out[:, 1])


def test_init_follows_deepctr():
    experts = mm.Experts(input_dim=400, num_experts=3, hidden_units=(256, 128), init_std=1e-4)
    w0 = experts.weights[0]
    assert w0.shape == (3, 400, 256)
    assert abs(w0.std().item() - 1e-4) < 1e-5 and abs(w0.mean().item()) < 1e-5
    b0 = experts.biases[0]
    assert b0.abs().max().item() <= 1 / 400 ** 0.5 and b0.std().item() > 0.3 / 400 ** 0.5
    default = mm.Experts(input_dim=400, num_experts=3, hidden_units=(8,), init_std=None)
    assert default.weights[0].abs().max().item() <= 1 / 400 ** 0.5


class CountCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _calls(module: nn.Module, x: torch.Tensor) -> int:
    with CountCalls() as counter:
        module(x)
    return counter.calls


def test_no_python_loop_over_experts():
    """The number of torch calls does not grow with the number of experts (or gates)."""
    x = torch.randn(4, 10)
    few = _calls(mm.Experts(10, 2, (8, 4)), x)
    many = _calls(mm.Experts(10, 16, (8, 4)), x)
    assert few == many > 0
    assert _calls(mm.Gates(10, 2, 2, (8,)), x) == _calls(mm.Gates(10, 16, 9, (8,)), x)
    z2, z9 = torch.randn(4, 2, 6), torch.randn(4, 9, 6)
    assert _calls(mm.Towers(6, 2, (5,)), z2) == _calls(mm.Towers(6, 9, (5,)), z9)


@pytest.mark.parametrize("hidden", [(8,), (8, 6), ()])
@pytest.mark.parametrize("B", [1, 7])
def test_gates_equal_loop_reference(hidden, B):
    E, G, I = 4, 3, 10
    gates = mm.Gates(I, num_experts=E, num_gates=G, hidden_units=hidden)
    randomize_(gates, seed=len(hidden))
    x = torch.randn(B, I)
    out = gates(x)
    assert out.shape == (B, G, E)
    nets = reference_mlps(gates.mlp) if gates.mlp is not None else [nn.Identity()] * G
    ref = []
    for g in range(G):
        final = nn.Linear(gates.out.shape[1], E, bias=False)  # DeepCTR's gate_dnn_final_layer
        with torch.no_grad():
            final.weight.copy_(gates.out[g].T)
        ref.append(final(nets[g](x)).softmax(dim=1))
    torch.testing.assert_close(out, torch.stack(ref, dim=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("B", [1, 2, 7])
def test_gates_sum_to_one(B):
    gates = mm.Gates(5, num_experts=4, num_gates=3)
    randomize_(gates, seed=2)
    g = gates(torch.randn(B, 5) * 3)
    assert (g >= 0).all()
    torch.testing.assert_close(g.sum(-1), torch.ones(B, 3))
    assert not torch.allclose(g, torch.full_like(g, 0.25))  # not trivially uniform once weights are random


@pytest.mark.parametrize("hidden", [(8,), ()])
@pytest.mark.parametrize("B", [1, 7])
def test_towers_equal_loop_reference(hidden, B):
    T, D = 3, 6
    towers = mm.Towers(D, num_tasks=T, hidden_units=hidden)
    randomize_(towers, seed=3)
    z = torch.randn(B, T, D)
    out = towers(z)
    assert out.shape == (B, T)
    nets = reference_mlps(towers.mlp) if towers.mlp is not None else [nn.Identity()] * T
    ref = []
    for t in range(T):
        final = nn.Linear(towers.out.shape[1], 1, bias=False)  # DeepCTR's tower_dnn_final_layer
        with torch.no_grad():
            final.weight.copy_(towers.out[t].unsqueeze(0))
        ref.append(final(nets[t](z[:, t]))[:, 0] + towers.bias[t])  # + PredictionLayer's bias
    torch.testing.assert_close(out, torch.stack(ref, dim=1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="towers expect"):
        towers(torch.randn(B, T + 1, D))


@pytest.mark.parametrize("B", [1, 2, 7])
@pytest.mark.parametrize("T,E", [(2, 2), (3, 4)])
def test_mix_equals_deepctr_matmul(B, T, E):
    D = 5
    gates = torch.softmax(torch.randn(B, T, E), dim=-1)
    experts = torch.randn(B, E, D)
    ours = mm.mix(gates, experts)
    assert ours.shape == (B, T, D)
    # DeepCTR-Torch: torch.matmul(gate.softmax(1).unsqueeze(1), expert_outs) per task, (B, 1, D)
    deepctr = torch.cat([torch.matmul(gates[:, t].unsqueeze(1), experts) for t in range(T)], dim=1)
    torch.testing.assert_close(ours, deepctr, rtol=1e-5, atol=1e-6)


def test_block_validation():
    with pytest.raises(ValueError, match="hidden_units"):
        mm.StackedMLP(4, 2, ())
    with pytest.raises(ValueError, match="num_stacks"):
        mm.StackedMLP(4, 0, (3,))
    with pytest.raises(ValueError, match="activation"):
        mm.StackedMLP(4, 2, (3,), activation="gelu-ish")
    with pytest.raises(ValueError, match="dropout"):
        mm.StackedMLP(4, 2, (3,), dropout=1.0)
    with pytest.raises(ValueError, match="shared input"):
        mm.Experts(4, 2, (3,))(torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match="num_experts"):
        mm.Gates(4, 0, 2)


def test_dropout_only_in_training():
    experts = mm.Experts(6, 3, (32,), dropout=0.5)
    randomize_(experts)
    x = torch.randn(4, 6)
    experts.eval()
    torch.testing.assert_close(experts(x), experts(x))
    experts.train()
    torch.manual_seed(0)
    a = experts(x)
    assert (a == 0).float().mean() > 0.2  # about half of the units dropped (plus ReLU zeros)
