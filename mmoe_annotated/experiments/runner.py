"""The paper's synthetic experiment (Ma et al. 2018, section 5): MMoE, OMoE and Shared-Bottom
over a grid of task correlations and seeds, with fresh data every step.

Explained in chapter 8, "Reproducing the paper" (``book/08_reproducing_paper.ipynb``).

Protocol, after the paper where it is stated (sizes in section 5.1, ReLU experts and linear
softmax gates in section 4.2) and the book's choice where not:

* models: 8 experts of one ReLU layer of 16 units, towers of one 8-unit layer, linear
  softmax gates (``gate_hidden=()``); Shared-Bottom has one bottom layer of 113 units.
  PyTorch's default initialisation (``init_std=None``), not DeepCTR-Torch's normal draw with
  standard deviation 1e-4.
* data: :mod:`mmoe_annotated.data.synthetic` with the book's constants; every step draws a
  fresh batch of 256 rows (a book choice: the paper generates a finite set of unstated size),
  so there is no overfitting and the held-out loss measures how well the model fits the tasks,
  i.e. trainability.
* loss: the sum of both tasks' MSE; Adam. Reported: task 1's MSE on ``eval_samples``
  held-out rows of :func:`mmoe_annotated.data.synthetic.generate` (noise included, so 0.01 is the floor).
* pairing: run ``(correlation, seed)`` of every model and learning rate sees the same task
  vectors, the same training batches and the same held-out rows, so models compare seed by seed.

All runs of one ``(model, lr)`` train at once as one :class:`~.batched.StackedRuns`.
Shape letters: ``R`` runs (correlations x seeds), ``S`` seeds, ``C`` correlations,
``B`` batch, ``I`` input width, ``T`` tasks, ``M`` held-out rows.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..features.inputs import DenseFeature
from ..model.config import ModelConfig
from ..model import build_model
from ..data.synthetic import PAPER_LIKE, SyntheticConfig, generate, signal, task_weights
from ..runtime import resolve_device
from .batched import StackedRuns

__all__ = ["PAPER_MODELS", "SyntheticExperiment", "paper_model_config", "run_synthetic", "num_parameters",
           "RESULT_COLUMNS"]

#: Section 5.1's shapes: ``(num_experts, expert_hidden)`` by model kind.
PAPER_MODELS = {"mmoe": (8, (16,)), "omoe": (8, (16,)), "shared_bottom": (1, (113,))}

#: The columns of ``results.csv``: one row per run and evaluation step.
RESULT_COLUMNS = ["model", "correlation", "seed", "lr", "step", "loss", "loss_task2", "train_loss"]


def paper_model_config(kind: str, seed: int | None = 0, dim: int = 100) -> ModelConfig:
    """The package's :class:`~mmoe_annotated.model.ModelConfig` for the paper's
    synthetic models."""
    if kind not in PAPER_MODELS:
        raise ValueError(f"unknown model kind {kind!r}; choose from "
                         f"{sorted(PAPER_MODELS)}")
    num_experts, hidden = PAPER_MODELS[kind]
    return ModelConfig(features=(DenseFeature("x", dim),),
                       task_names=("task1", "task2"),
                       task_types=("regression", "regression"), num_experts=num_experts,
                       expert_hidden=hidden, gate_hidden=(), tower_hidden=(8,),
                       init_std=None, seed=seed)


@dataclass(frozen=True)
class SyntheticExperiment:
    """The grid and the training budget. Frozen and validated once.

    ``lrs`` maps a model kind to its learning rates; every ``(model, lr)`` pair is
    trained on every ``(correlation, seed)``. Seeds are ``first_seed .. first_seed + seeds - 1``.
    """

    models: tuple[str, ...] = ("mmoe", "omoe", "shared_bottom")
    correlations: tuple[float, ...] = (0.5, 0.9, 1.0)
    seeds: int = 20
    first_seed: int = 0
    steps: int = 1500
    lrs: dict = field(default_factory=lambda: {"mmoe": (1e-2,), "omoe": (1e-2,), "shared_bottom": (1e-2,)})
    batch_size: int = 256
    eval_every: int = 100
    eval_samples: int = 5000
    data: SyntheticConfig = PAPER_LIKE
    device: str = "cpu"

    def __post_init__(self):
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "correlations", tuple(float(p) for p in self.correlations))
        for m in self.models:
            if m not in PAPER_MODELS:
                raise ValueError(f"unknown model kind {m!r}; choose from {sorted(PAPER_MODELS)}")
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models must be a non-empty list without repeats, got {list(self.models)}")
        if not self.correlations or any(not (math.isfinite(p) and -1 <= p <= 1) for p in self.correlations):
            raise ValueError(f"correlations must be a non-empty list of numbers in [-1, 1], got {self.correlations}")
        lrs = {}
        for m in self.models:
            values = tuple(float(v) for v in self.lrs.get(m, ()))
            if not values or any(not (math.isfinite(v) and v > 0) for v in values):
                raise ValueError(f"lrs[{m!r}] must be a non-empty list of positive learning rates, got {values}")
            lrs[m] = values
        object.__setattr__(self, "lrs", lrs)
        for name in ("seeds", "steps", "batch_size", "eval_every", "eval_samples"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if int(self.first_seed) < 0:
            raise ValueError(f"first_seed must be >= 0, got {self.first_seed}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def groups(self) -> list[tuple[str, float]]:
        """Every ``(model, lr)`` pair, each trained as one batch of runs."""
        return [(m, lr) for m in self.models for lr in self.lrs[m]]

    @property
    def eval_steps(self) -> list[int]:
        return sorted({*range(self.eval_every, self.steps + 1, self.eval_every), self.steps})

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("models", "correlations", "seeds", "first_seed", "steps", "batch_size",
                                          "eval_every", "eval_samples", "device")}
        d["lrs"] = {m: list(v) for m, v in self.lrs.items()}
        d["data"] = {k: getattr(self.data, k) for k in ("dim", "scale", "alphas", "betas", "noise_std")}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


class _Stream:
    """Fresh training batches for every run, one torch generator per seed.

    A seed's stream depends on the seed and on the *number* of correlations (each step draws
    the seed's rows, then one noise draw per correlation), never on the other seeds, models or
    learning rates: a run gives the same numbers whether it is trained with 1 or 200 other
    seeds (up to float reassociation in batched kernels) and with or without other models."""

    def __init__(self, exp: SyntheticExperiment, device: torch.device):
        self.exp, self.device = exp, device
        C, d = len(exp.correlations), exp.data.dim
        W = [[task_weights(p, s, exp.data) for s in exp.seed_list] for p in exp.correlations]
        self.W = torch.tensor(np.array(W), dtype=torch.float32, device=device).view(-1, d, 2)  # (R, I, T)
        self.generators = []
        for s in exp.seed_list:
            g = torch.Generator(device=device)
            g.manual_seed(int(np.random.SeedSequence([s, 2]).generate_state(1)[0]))  # stream 2 of this seed
            self.generators.append(g)
        self.C = C

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``X`` ``(R, B, I)`` and ``Y`` ``(R, B, T)``; runs are ordered correlation-major."""
        B, d, C, dev = self.exp.batch_size, self.exp.data.dim, self.C, self.device
        x = torch.stack([torch.randn(B, d, generator=g, device=dev) for g in self.generators])  # (S, B, I)
        noise = torch.stack([torch.randn(C, B, 2, generator=g, device=dev) for g in self.generators], 1)  # (C, S, B, T)
        X = x.expand(C, *x.shape).reshape(-1, B, d)  # (R, B, I): a seed's rows are shared across correlations
        Y = signal(torch.bmm(X, self.W), self.exp.data) + self.exp.data.noise_std * noise.reshape(-1, B, 2)
        return X, Y  # (R, B, I), (R, B, T)


def _held_out(exp: SyntheticExperiment, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out rows of every run, from the public :func:`~mmoe_annotated.data.synthetic.generate`."""
    X, Y = [], []
    for p in exp.correlations:
        for s in exp.seed_list:
            x, y = generate(exp.eval_samples, p, seed=s, config=exp.data)
            X.append(x)
            Y.append(y)
    as_t = lambda a: torch.tensor(np.array(a), dtype=torch.float32, device=device)  # noqa: E731
    return as_t(X), as_t(Y)  # (R, M, I), (R, M, T)


def run_synthetic(exp: SyntheticExperiment | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every ``(model, lr)`` on every ``(correlation, seed)``; one row per run and evaluation.

    Columns are :data:`RESULT_COLUMNS`: ``loss`` is task 1's held-out MSE (the paper reports
    task 1's loss without naming the metric), ``loss_task2`` task 2's, ``train_loss`` the mean
    over the steps since the last evaluation of the summed training loss of both tasks.
    ``df.attrs["seconds"]`` holds the wall time.
    """
    exp = exp or SyntheticExperiment()
    device = resolve_device(exp.device)
    start = time.perf_counter()
    stream = _Stream(exp, device)
    X_test, Y_test = _held_out(exp, device)
    runs = [(p, s) for p in exp.correlations for s in exp.seed_list]  # correlation-major, as in _Stream
    groups = {}
    for kind, lr in exp.groups:
        models = [build_model(kind, paper_model_config(kind, seed=s, dim=exp.data.dim)) for _, s in runs]
        groups[(kind, lr)] = StackedRuns(models, lr, device)
    train_sums = {g: torch.zeros(len(runs), device=device) for g in groups}
    rows, since = [], 0
    evals = set(exp.eval_steps)
    bar = tqdm(range(1, exp.steps + 1), desc=f"synthetic: {len(groups)} groups x {len(runs)} runs",
               disable=not progress, mininterval=1.0)
    for step in bar:
        X, Y = stream.batch()  # every group trains on the same batch: paired comparisons
        for g, runner in groups.items():
            train_sums[g] += runner.step(X, Y)
        since += 1
        if step in evals:
            for (kind, lr), runner in groups.items():
                mse = ((runner.predict(X_test) - Y_test) ** 2).mean(dim=1).cpu().numpy()  # (R, T)
                train = (train_sums[(kind, lr)] / since).cpu().numpy()
                for r, (p, s) in enumerate(runs):
                    rows.append((kind, p, s, lr, step, float(mse[r, 0]), float(mse[r, 1]), float(train[r])))
                train_sums[(kind, lr)].zero_()
            since = 0
            last = pd.DataFrame(rows[-len(runs) * len(groups):], columns=RESULT_COLUMNS)
            bar.set_postfix_str(" ".join(f"{m}={v:.3f}" for m, v in last.groupby("model", sort=False)["loss"]
                                         .median().items()))
    bar.close()
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    df.attrs["seconds"] = time.perf_counter() - start
    return df


def num_parameters() -> dict[str, int]:
    """Parameter count of each paper model, from the package's own ``num_parameters``."""
    return {k: build_model(k, paper_model_config(k)).num_parameters() for k in PAPER_MODELS}

