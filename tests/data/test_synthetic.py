"""The synthetic generator (mmoe_annotated.synthetic): geometry, closed form, determinism."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from mmoe_annotated import synthetic
from mmoe_annotated.data.synthetic import PAPER_LIKE, SyntheticConfig

CORRELATIONS = [-0.3, 0.0, 0.5, 0.9, 1.0]


@pytest.mark.parametrize("seed", [0, 1, 123])
def test_task_vectors_are_orthonormal(seed):
    u1, u2 = synthetic.task_vectors(seed, dim=100)
    assert u1.shape == u2.shape == (100,)
    assert np.linalg.norm(u1) == pytest.approx(1.0, abs=1e-12)
    assert np.linalg.norm(u2) == pytest.approx(1.0, abs=1e-12)
    assert abs(u1 @ u2) < 1e-12


@pytest.mark.parametrize("p", CORRELATIONS)
def test_weights_have_cosine_p_and_norm_c(p):
    W = synthetic.task_weights(p, seed=7)
    w1, w2 = W[:, 0], W[:, 1]
    assert np.linalg.norm(w1) == pytest.approx(PAPER_LIKE.scale, abs=1e-12)
    assert np.linalg.norm(w2) == pytest.approx(PAPER_LIKE.scale, abs=1e-12)
    assert w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2)) == pytest.approx(p, abs=1e-12)


def test_generate_shapes_and_determinism():
    X, Y = synthetic.generate(50, 0.5, seed=3)
    assert X.shape == (50, 100) and Y.shape == (50, 2)
    X2, Y2 = synthetic.generate(50, 0.5, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(Y, Y2)
    X3, Y3 = synthetic.generate(50, 0.5, seed=4)
    assert not np.allclose(X, X3) and not np.allclose(Y, Y3)


def test_same_seed_shares_inputs_across_correlations():
    # The runner's pairing relies on it: a seed's rows and u1, u2 do not depend on p.
    X5, _ = synthetic.generate(20, 0.5, seed=9)
    X9, _ = synthetic.generate(20, 0.9, seed=9)
    np.testing.assert_array_equal(X5, X9)


def test_labels_follow_the_formula():
    cfg = SyntheticConfig(noise_std=0.0)
    X, Y = synthetic.generate(10, 0.9, seed=2, config=cfg)
    W = synthetic.task_weights(0.9, seed=2, config=cfg)
    s = X @ W
    expected = s + sum(np.sin(a * s + b) for a, b in zip(cfg.alphas, cfg.betas))
    np.testing.assert_allclose(Y, expected, rtol=1e-12, atol=1e-12)


def test_signal_is_the_same_in_torch_and_numpy():
    s = np.linspace(-1, 1, 101)
    got = synthetic.signal(torch.tensor(s, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, synthetic.signal(s), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", [PAPER_LIKE, synthetic.COMMON_REPRODUCTION,
                                    SyntheticConfig(scale=0.7, alphas=(1.0, -2.0, 3.5), betas=(0.4, -1.1, 2.0),
                                                    noise_std=0.5)],
                         ids=["paper_like", "common", "phases"])
@pytest.mark.parametrize("p", CORRELATIONS)
def test_empirical_label_correlation_matches_closed_form(config, p):
    n = 200_000
    # The labels' law does not depend on d (w_k^T x ~ N(0, c^2) for any d), so a small d keeps this fast.
    _, Y = synthetic.generate(n, p, seed=11, config=replace(config, dim=4))
    r = np.corrcoef(Y.T)[0, 1]
    exact = synthetic.label_correlation(p, config)
    # Pearson r of n pairs has a standard error of at most (1 - rho^2) / sqrt(n - 1) for Gaussian
    # pairs and of the same order otherwise; 5 standard errors (floored for rho near 1) keep
    # false alarms away while catching any real error in a term (each term moves r by > 0.01).
    tol = 5 * max(1 - exact ** 2, 0.02) / math.sqrt(n - 1)
    assert abs(r - exact) < tol, (r, exact, tol)
    assert Y.var(axis=0) == pytest.approx([synthetic.label_variance(config)] * 2, rel=0.02)


def test_book_constants_match_the_papers_figure_2():
    # Read off the paper's Figure 2: about 0.08, 0.31 and 0.99 at p = 0.5, 0.9, 1.0.
    got = [synthetic.label_correlation(p) for p in (0.5, 0.9, 1.0)]
    assert got == pytest.approx([0.08, 0.31, 0.99], abs=0.02)
    # ... while the common reproduction's constants give far more correlated labels.
    assert synthetic.label_correlation(0.5, synthetic.COMMON_REPRODUCTION) > 0.3


def test_closed_form_limits():
    assert synthetic.label_correlation(0.0) == pytest.approx(0.0, abs=1e-12)
    noiseless = SyntheticConfig(noise_std=0.0)
    assert synthetic.label_correlation(1.0, noiseless) == pytest.approx(1.0, abs=1e-12)
    # Antisymmetric in p when all phases are zero (f is odd).
    assert synthetic.label_correlation(-0.5) == pytest.approx(-synthetic.label_correlation(0.5), abs=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=0, correlation=0.5), "n_samples"),
    (dict(n_samples=10, correlation=1.5), "correlation"),
    (dict(n_samples=10, correlation=float("nan")), "correlation"),
])
def test_generate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic.generate(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dim=1), "dim"), (dict(scale=0.0), "scale"), (dict(alphas=(1.0,), betas=()), "same length"),
    (dict(noise_std=-1.0), "noise_std"),
])
def test_config_rejects_bad_constants(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticConfig(**kwargs)
