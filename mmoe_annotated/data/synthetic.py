"""The paper's synthetic data: two regression tasks whose correlation we control.

Explained in chapter 8, "Reproducing the paper" (``book/08_reproducing_paper.ipynb``).

Ma et al. (2018, section 3.2) build two tasks from two weight vectors with a chosen
cosine ``p``: orthogonal unit vectors ``u1, u2`` in ``R^d``, ``w1 = c u1`` and
``w2 = c (p u1 + sqrt(1 - p^2) u2)``, inputs ``x ~ N(0, I_d)`` and labels

    y_k = w_k^T x + sum_{i=1..m} sin(alpha_i w_k^T x + beta_i) + eps_k,   eps_k ~ N(0, 0.01).

The paper gives neither ``c``, ``m``, ``alpha_i``, ``beta_i`` nor a data size. The
constants below (:data:`PAPER_LIKE`) are **this book's choice**: ``c = 0.3``, ``m = 5``,
``alpha_i = 5 i``, ``beta_i = 0``, noise std 0.1. They are chosen so that the Pearson
correlation of the two labels against ``p`` matches the paper's Figure 2 (about 0.08,
0.31 and 0.99 at ``p`` = 0.5, 0.9 and 1.0); :func:`label_correlation` computes it in
closed form, so the match is checked exactly rather than by sampling.

Why the closed form exists: ``s_k = w_k^T x`` are jointly Gaussian with variance ``c^2``
and covariance ``c^2 p``, so every term of ``Cov(y_1, y_2)`` is an expectation of a
linear or sine function of a bivariate Gaussian (Stein's lemma for the linear-sine
terms, the Gaussian characteristic function for the sine-sine terms).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SyntheticConfig", "PAPER_LIKE", "COMMON_REPRODUCTION", "task_vectors", "task_weights", "signal",
           "generate", "label_correlation", "label_variance"]


@dataclass(frozen=True)
class SyntheticConfig:
    """The generator's constants. Frozen and validated once.

    ``scale`` is the paper's ``c``; ``alphas`` and ``betas`` are the ``m`` sine
    frequencies and phases, shared by both tasks; ``noise_std`` is the std of ``eps``
    (the paper's ``N(0, 0.01)`` is a variance, so std 0.1).
    """

    dim: int = 100
    scale: float = 0.3
    alphas: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 25.0)
    betas: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    noise_std: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if int(self.dim) < 2:
            raise ValueError(f"dim must be >= 2 (two orthogonal unit vectors), got {self.dim}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale (the paper's c) must be a positive number, got {self.scale}")
        if len(self.alphas) != len(self.betas):
            raise ValueError(f"alphas ({len(self.alphas)}) and betas ({len(self.betas)}) must have the same length")
        if not all(math.isfinite(v) for v in self.alphas + self.betas):
            raise ValueError("alphas and betas must be finite numbers")
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std must be a non-negative number, got {self.noise_std}")


#: The book's constants, chosen to match the paper's Figure 2.
PAPER_LIKE = SyntheticConfig()

#: What common public reproductions use (c = 0.3, m = 5, alpha, beta ~ N(0, 1)), with one fixed
#: draw (seed 0) so that it is a constant; its labels are far more correlated than the paper's.
_rng = np.random.default_rng(0)
COMMON_REPRODUCTION = SyntheticConfig(alphas=tuple(_rng.standard_normal(5)), betas=tuple(_rng.standard_normal(5)))
del _rng


def _check_correlation(correlation: float) -> float:
    p = float(correlation)
    if not (math.isfinite(p) and -1.0 <= p <= 1.0):
        raise ValueError(f"correlation is the cosine of w1 and w2 and must lie in [-1, 1], got {correlation!r}")
    return p


def task_vectors(seed: int, dim: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Two random orthogonal unit vectors ``u1, u2`` of shape ``(d,)``, drawn from ``seed``.

    Gram-Schmidt on two Gaussian vectors: the pair is uniformly oriented, so no task
    favours a coordinate of ``x``."""
    rng = np.random.default_rng([int(seed), 0])  # stream 0 of this seed: the task vectors
    a, b = rng.standard_normal((2, int(dim)))
    u1 = a / np.linalg.norm(a)
    b = b - (b @ u1) * u1
    return u1, b / np.linalg.norm(b)


def task_weights(correlation: float, seed: int = 0, config: SyntheticConfig = PAPER_LIKE) -> np.ndarray:
    """The two tasks' weight vectors as the columns of a ``(d, 2)`` array, with cosine ``correlation``."""
    p = _check_correlation(correlation)
    u1, u2 = task_vectors(seed, config.dim)
    w1 = config.scale * u1
    w2 = config.scale * (p * u1 + math.sqrt(max(0.0, 1.0 - p * p)) * u2)
    return np.stack([w1, w2], axis=1)  # (d, 2)


def signal(s, config: SyntheticConfig = PAPER_LIKE):
    """The noise-free label of a projection ``s = w^T x``:
    ``s + sum_i sin(alpha_i s + beta_i)``.

    Works elementwise on a NumPy array or a torch tensor of any shape, so the experiment
    runner can draw labels on the GPU with the very same function."""
    if torch.is_tensor(s):
        a = torch.tensor(config.alphas, dtype=s.dtype, device=s.device)
        b = torch.tensor(config.betas, dtype=s.dtype, device=s.device)
        return s + torch.sin(s.unsqueeze(-1) * a + b).sum(-1)
    s = np.asarray(s)
    a, b = np.asarray(config.alphas), np.asarray(config.betas)
    return s + np.sin(s[..., None] * a + b).sum(-1)


def generate(n_samples: int, correlation: float, seed: int = 0,
             config: SyntheticConfig = PAPER_LIKE) -> tuple[np.ndarray, np.ndarray]:
    """``n_samples`` rows of the two-task regression problem with task correlation
    ``correlation``.

    Returns ``X`` ``(n, d)`` and ``Y`` ``(n, 2)``, both float64. The tasks' weights
    depend on ``seed`` only (not on ``correlation`` beyond the mixing), so the same seed
    at two correlations shares ``u1``, ``u2`` and the same inputs ``X``.
    """
    n = int(n_samples)
    if n < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    W = task_weights(correlation, seed, config)  # (d, 2)
    rng = np.random.default_rng([int(seed), 1])  # stream 1 of this seed: the rows
    X = rng.standard_normal((n, config.dim))  # (n, d)
    Y = signal(X @ W, config) + config.noise_std * rng.standard_normal((n, 2))  # (n, 2)
    return X, Y


# ---------------------------------------------------------------------------
# The closed form
# ---------------------------------------------------------------------------

def _signal_covariance(correlation: float, config: SyntheticConfig) -> float:
    """``Cov(f(s1), f(s2))`` for ``f = signal`` and ``(s1, s2)`` Gaussian with variances
    ``v = c^2`` and covariance ``v p``. Term by term:

    * ``Cov(s1, s2) = v p``.
    * Stein's lemma, ``E[s1 g(s2)] = Cov(s1, s2) E[g'(s2)]``, with ``g = sin(a s + b)``
      and ``E[cos(a s + b)] = cos(b) exp(-a^2 v / 2)``:
      ``Cov(s1, sin(a s2 + b)) = v p a cos(b) exp(-a^2 v / 2)``, and the same for
      ``Cov(sin(a s1 + b), s2)``.
    * ``sin A sin B = (cos(A - B) - cos(A + B)) / 2`` and, for Gaussian ``Z``,
      ``E[cos(Z + k)] = cos(k) exp(-Var Z / 2)``,
      ``E[sin(a s + b)] = sin(b) exp(-a^2 v / 2)``:
      ``Cov(sin(a s1 + b), sin(a' s2 + b'))`` =
      ``(cos(b - b') exp(-v (a^2 + a'^2 - 2 a a' p) / 2)
      - cos(b + b') exp(-v (a^2 + a'^2 + 2 a a' p) / 2)) / 2
      - sin(b) sin(b') exp(-v (a^2 + a'^2) / 2)``.
    """
    p = _check_correlation(correlation)
    v = config.scale ** 2
    a, b = np.asarray(config.alphas), np.asarray(config.betas)
    linear = v * p
    linear_sine = 2.0 * np.sum(v * p * a * np.cos(b) * np.exp(-0.5 * a * a * v))
    ai, aj = a[:, None], a[None, :]  # (m, 1), (1, m): every pair of sines
    bi, bj = b[:, None], b[None, :]
    sq = ai * ai + aj * aj
    sine_sine = (0.5 * (np.cos(bi - bj) * np.exp(-0.5 * v * (sq - 2 * ai * aj * p))
                        - np.cos(bi + bj) * np.exp(-0.5 * v * (sq + 2 * ai * aj * p)))
                 - np.sin(bi) * np.sin(bj) * np.exp(-0.5 * v * sq))
    return float(linear + linear_sine + sine_sine.sum())


def label_variance(config: SyntheticConfig = PAPER_LIKE) -> float:
    """``Var(y_k)``, the same for both tasks (``|w1| = |w2| = c``): the signal's variance plus the noise's."""
    return _signal_covariance(1.0, config) + config.noise_std ** 2


def label_correlation(correlation: float, config: SyntheticConfig = PAPER_LIKE) -> float:
    """The exact Pearson correlation of ``y_1`` and ``y_2`` at task correlation ``p = cos(w1, w2)``.

    The quantity on the y-axis of the paper's Figure 2."""
    return _signal_covariance(correlation, config) / label_variance(config)
