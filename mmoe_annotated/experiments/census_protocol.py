"""The Census-Income study's settings, its data and one training: what every run and search shares.

Explained in chapter 9, "The paper on real data: Census-Income" (``book/09_census.ipynb``); the
study as a whole, and the order of its steps, in :mod:`mmoe_annotated.experiments.census`.

* :class:`CensusExperiment`: the frozen settings of a run, and the *families* it trains per seed
  (one per model and task group, one per label for Single-Task) with their hyper-parameters;
* :func:`prepare`: the labels, the 1:1 validation/test split and one
  :class:`~mmoe_annotated.features.FeatureEncoder` fit on the training rows;
* :func:`train_one`: one family trained with one seed by :func:`~mmoe_annotated.train.fit` and
  scored by :func:`~mmoe_annotated.train.evaluate` on validation and test; the search
  (:mod:`~.census_search`) and the runs (:func:`~.census.run_census`) both train through it.

**How long to train.** With ``patience`` set, every training stops on the validation AUC of its
family's main task (``fit``'s :class:`~mmoe_annotated.train.selection.EarlyStopping`, chapter 7,
``restore="best"``): the scored model is that task's best epoch's, and ``epochs`` only a cap.
``patience=None`` is the shipped runs' protocol, ``epochs`` fixed (4). ``"mmoe_matched"`` (chapter
10) is MMoE at the size of the group's PLE (:func:`matched_hparams`), so that PLE against MMoE is
not also a comparison of sizes.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ..data import census
from ..features.encoder import FeatureEncoder
from ..features.inputs import DenseFeature, SparseFeature
from ..train.losses import BALANCING
from ..model.config import ModelConfig
from ..model import build_model
from ..train.loop import TrainConfig, fit
from ..train.inference import evaluate
from ..train.selection import EarlyStopping

__all__ = ["CENSUS_MODELS", "EXTRACTION_MODELS", "MATCHED_MODEL", "MODEL_NAMES", "DEFAULT_HPARAMS",
           "EXTRACTION_HPARAMS", "CensusExperiment", "family", "levels_of", "tasks_of", "CensusData", "prepare",
           "train_one", "family_params", "matched_hparams"]

#: The models of Tables 1 and 2 that this package builds (L2-Constrained and Cross-Stitch are not built).
CENSUS_MODELS: tuple[str, ...] = ("single_task", "shared_bottom", "omoe", "mmoe")
#: MMoE's successors (chapter 10), run on the same protocol for the seesaw; not in the paper's tables.
EXTRACTION_MODELS: tuple[str, ...] = ("cgc", "ple")
#: MMoE sized to the group's PLE (:func:`matched_hparams`); run beside CGC and PLE.
MATCHED_MODEL = "mmoe_matched"
MODEL_NAMES = {"single_task": "Single-Task", "shared_bottom": "Shared-Bottom", "l2_constrained": "L2-Constrained",
               "cross_stitch": "Cross-Stitch", "omoe": "OMoE", "mmoe": "MMoE", "cgc": "CGC", "ple": "PLE",
               MATCHED_MODEL: "MMoE (PLE's size)"}
_ALL_MODELS = CENSUS_MODELS + EXTRACTION_MODELS + (MATCHED_MODEL,)
_GATED = ("omoe", "mmoe") + EXTRACTION_MODELS + (MATCHED_MODEL,)
#: How close the matched MMoE's parameter count must come to its PLE's (a share of PLE's).
MATCH_TOLERANCE = 0.05

#: Hyper-parameters used without ``--search``: what the committed run's search chose (``census.json``).
DEFAULT_HPARAMS: dict[str, dict] = {
    "single_task/income": {"lr": 3e-3, "experts": 1, "units": 128},
    "single_task/education": {"lr": 3e-3, "experts": 1, "units": 64},
    "single_task/never_married": {"lr": 3e-3, "experts": 1, "units": 64},
    "shared_bottom/group1": {"lr": 3e-3, "experts": 1, "units": 128},
    "shared_bottom/group2": {"lr": 3e-3, "experts": 1, "units": 128},
    "omoe/group1": {"lr": 3e-3, "experts": 4, "units": 32},
    "omoe/group2": {"lr": 3e-3, "experts": 4, "units": 32},
    "mmoe/group1": {"lr": 3e-3, "experts": 4, "units": 32},
    "mmoe/group2": {"lr": 3e-3, "experts": 4, "units": 16},
}
#: CGC and PLE without ``--search``: what the committed run's search chose (``census_ple.json``).
#: "experts" counts each task's own experts, "shared" the shared ones, per level.
EXTRACTION_HPARAMS: dict[str, dict] = {
    "cgc/group1": {"lr": 3e-3, "experts": 2, "shared": 2, "units": 16},
    "cgc/group2": {"lr": 3e-3, "experts": 2, "shared": 2, "units": 16},
    "ple/group1": {"lr": 3e-3, "experts": 1, "shared": 2, "units": 32, "levels": 2},
    "ple/group2": {"lr": 3e-3, "experts": 1, "shared": 2, "units": 32, "levels": 2},
}


@dataclass(frozen=True)
class CensusExperiment:
    """Settings of one Census run. Frozen and validated once."""

    groups: tuple[int, ...] = (1, 2)
    models: tuple[str, ...] = CENSUS_MODELS
    seeds: int = 3
    first_seed: int = 0
    #: Epochs of every training; with ``patience``, the most epochs (a cap).
    epochs: int = 4
    batch_size: int = 1024
    emb_dim: int = 4
    tower_units: int = 16
    #: Seed of the 1:1 validation/test split of the test file.
    split_seed: int = 0
    #: Seed of the search runs (kept apart from the reported seeds): ``search_seed`` onwards.
    search_seed: int = 10_000
    #: Use only the first rows of the training file (tests and quick looks); None: all.
    max_train_rows: int | None = None
    device: str = "cpu"
    #: How the task losses are weighted (``TrainConfig.task_balancing``, chapter 10): "fixed" (the
    #: plain sum), "uncertainty", "uncertainty_normalized" or "gradnorm"; the learned ones need two
    #: tasks, so no Single-Task.
    task_balancing: str = "fixed"
    #: GradNorm's ``alpha`` and the learning rate of learned task weights (None: the model's),
    #: ``TrainConfig.gradnorm_alpha`` and ``TrainConfig.balance_lr``.
    gradnorm_alpha: float = 1.5
    balance_lr: float | None = None
    #: Stop every training after this many epochs without a better validation AUC of the family's
    #: main task, keeping its best epoch's weights; None: train ``epochs`` epochs (the shipped runs).
    patience: int | None = None
    #: Seeds per setting of the search (``search_seed``, ``search_seed + 1``, ...); their mean decides.
    search_seeds: int = 2
    #: Per family key (see :func:`family`): {"lr", "experts", "units"}; missing keys fall back to
    #: :data:`DEFAULT_HPARAMS`, then to lr 3e-3 and 4 x 32 (one bottom of 128); "mmoe_matched"'s
    #: are computed (:func:`matched_hparams`).
    hparams: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "groups", tuple(int(g) for g in self.groups))
        object.__setattr__(self, "models", tuple(self.models))
        if not self.groups or any(g not in census.GROUPS for g in self.groups):
            raise ValueError(f"groups must be a non-empty subset of {sorted(census.GROUPS)}, got {self.groups}")
        if not self.models or any(m not in _ALL_MODELS for m in self.models):
            raise ValueError(f"models must be a non-empty subset of {list(_ALL_MODELS)}, got {self.models}")
        for name in ("seeds", "epochs", "batch_size", "emb_dim", "tower_units", "search_seeds"):
            _whole(name, getattr(self, name))
        if self.patience is not None:
            _whole("patience", self.patience)
        if self.task_balancing not in BALANCING:
            raise ValueError(f"task_balancing must be one of {BALANCING}, got {self.task_balancing!r}")
        if self.task_balancing != "fixed" and "single_task" in self.models:
            raise ValueError(f"task_balancing={self.task_balancing!r} weighs two tasks; Single-Task trains one")
        if not _number(self.gradnorm_alpha) or self.gradnorm_alpha < 0:
            raise ValueError(f"gradnorm_alpha must be a non-negative number, got {self.gradnorm_alpha!r}")
        if self.balance_lr is not None and not (_number(self.balance_lr) and self.balance_lr > 0):
            raise ValueError(f"balance_lr must be None or a positive number, got {self.balance_lr!r}")
        if self.max_train_rows is not None and self.max_train_rows < 10:
            raise ValueError(f"max_train_rows must be None or >= 10, got {self.max_train_rows}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def search_seed_list(self) -> list[int]:
        return list(range(self.search_seed, self.search_seed + self.search_seeds))

    def families(self) -> list[str]:
        """The independent trainings per seed: one per (model, group), one per label for Single-Task."""
        out = []
        for m in self.models:
            if m == "single_task":
                tasks = sorted({t for g in self.groups for t in census.GROUPS[g]}, key=census.TASKS.index)
                out += [family(m, task=t) for t in tasks]
            else:
                out += [family(m, group=g) for g in self.groups]
        return out

    def hparams_of(self, key: str) -> dict:
        if key.startswith(MATCHED_MODEL):
            return {**matched_hparams(self, int(key.rpartition("group")[2])), **self.hparams.get(key, {})}
        if key.startswith(EXTRACTION_MODELS):
            base = {"lr": 3e-3, "experts": 1, "shared": 2, "units": 32, **levels_of(key)}
            return {**base, **EXTRACTION_HPARAMS.get(key, {}), **self.hparams.get(key, {})}
        moe = key.startswith(("omoe", "mmoe"))
        base = {"lr": 3e-3, "experts": 4 if moe else 1, "units": 32 if moe else 128}
        return {**base, **DEFAULT_HPARAMS.get(key, {}), **self.hparams.get(key, {})}

    def to_dict(self) -> dict:
        return asdict(self)


def _whole(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {v!r}")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def family(model: str, group: int | None = None, task: str | None = None) -> str:
    """Key of one training: ``"mmoe/group1"`` or ``"single_task/income"``."""
    return f"{model}/{task}" if model == "single_task" else f"{model}/group{group}"


def levels_of(key: str) -> dict:
    """PLE's depth, part of its hyper-parameters: two levels, as in Tang et al.'s experiments."""
    return {"levels": 2} if key.startswith("ple") else {}


def tasks_of(key: str) -> tuple[str, ...]:
    """The tasks one family trains, its main task first: ``("income", "never_married")``."""
    model, _, rest = key.partition("/")
    return (rest,) if model == "single_task" else census.GROUPS[int(rest.removeprefix("group"))]


def _features(exp: CensusExperiment) -> tuple:
    """The encoder's feature specs without the data: the vocabularies only size the embedding
    table, which the counts leave out."""
    return (tuple(SparseFeature(c, 2, exp.emb_dim) for c in census.SPARSE)
            + tuple(DenseFeature(c, 1) for c in census.DENSE))


def family_params(key: str, exp: CensusExperiment, hp: dict) -> int:
    """Parameters outside the embedding table of family ``key`` with hyper-parameters ``hp``."""
    kind, mc = _model_config(key, exp, hp, 0, _features(exp))
    return build_model(kind, mc).num_parameters(include_embedding=False)


def matched_hparams(exp: CensusExperiment, group: int) -> dict:
    """The parameter-matched MMoE of ``group``: as many experts as the group's PLE has per level
    (``T * experts + shared``), MMoE's learning rate of that group, and the expert width whose
    parameter count (outside the embedding table) comes closest to PLE's, which must be within
    :data:`MATCH_TOLERANCE`. Records both counts and the PLE it matches."""
    ple_key = family("ple", group=group)
    ple = exp.hparams_of(ple_key)
    target = family_params(ple_key, exp, ple)
    experts = len(census.GROUPS[group]) * int(ple["experts"]) + int(ple["shared"])
    key = family(MATCHED_MODEL, group=group)
    count = lambda units: family_params(key, exp, {"lr": 1e-3, "experts": experts, "units": units})
    low, high = 1, 4096  # the count grows with the width: bisect
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) < target else (low, mid)
    units = min((low, high), key=lambda u: abs(count(u) - target))
    params = count(units)
    if abs(params - target) > MATCH_TOLERANCE * target:
        raise ValueError(f"no MMoE of {experts} experts comes within {MATCH_TOLERANCE:.0%} of {ple_key}'s "
                         f"{target} parameters (closest: {units} units, {params})")
    lr = exp.hparams.get(family("mmoe", group=group), DEFAULT_HPARAMS[family("mmoe", group=group)])["lr"]
    return {"lr": float(lr), "experts": experts, "units": units, "matched_to": ple_key, "params": params,
            "target_params": target}


@dataclass
class CensusData:
    """Encoded splits: features and the three labels of each, plus the fitted encoder."""

    encoder: FeatureEncoder
    x: dict
    y: dict  # split -> DataFrame of the three label columns
    rows: dict


def prepare(train: pd.DataFrame, test: pd.DataFrame,
            exp: CensusExperiment) -> CensusData:
    """Labels, the validation/test split and one :class:`FeatureEncoder` fit on the
    training rows."""
    if exp.max_train_rows is not None:
        train = train.iloc[: exp.max_train_rows]
    train, test = census.add_tasks(train), census.add_tasks(test)
    valid, test = census.split_validation(test, exp.split_seed)
    encoder = FeatureEncoder(census.SPARSE, census.DENSE,
                             emb_dim=exp.emb_dim).fit(train)
    splits = {"train": train, "valid": valid, "test": test}
    return CensusData(encoder, {k: encoder.transform(v) for k, v in splits.items()},
                      {k: v[list(census.TASKS)].reset_index(drop=True)
                       for k, v in splits.items()},
                      {k: len(v) for k, v in splits.items()})


def _model_config(key: str, exp: CensusExperiment, hp: dict, seed: int, features) -> tuple[str, ModelConfig]:
    model = key.partition("/")[0]
    tasks = tasks_of(key)
    # CGC and PLE: "experts" counts each task's own experts, "shared" the shared ones, per level
    sizes = (dict(num_task_experts=int(hp["experts"]), num_shared_experts=int(hp["shared"]),
                  num_levels=int(hp.get("levels", 1))) if model in EXTRACTION_MODELS
             else dict(num_experts=int(hp["experts"])))
    mc = ModelConfig(features, task_names=tasks, task_types=("binary",) * len(tasks),
                     expert_hidden=(int(hp["units"]),), gate_hidden=(), tower_hidden=(exp.tower_units,),
                     init_std=None, seed=seed, **sizes)
    kind = {"single_task": "shared_bottom", MATCHED_MODEL: "mmoe"}.get(model, model)
    return kind, mc


def _configs(key: str, exp: CensusExperiment, hp: dict, seed: int, data: CensusData):
    kind, mc = _model_config(key, exp, hp, seed, data.encoder.features)
    stop = (EarlyStopping(metric="auc", tasks=(mc.task_names[0],), patience=exp.patience, restore="best")
            if exp.patience is not None else None)
    tc = TrainConfig(epochs=exp.epochs, batch_size=exp.batch_size, optimizer="adam", lr=float(hp["lr"]),
                     embedding_l2=0.0, seed=seed, device=exp.device, progress=False,
                     task_balancing=exp.task_balancing, gradnorm_alpha=exp.gradnorm_alpha,
                     balance_lr=exp.balance_lr, early_stopping=stop)
    return kind, mc, tc


def train_one(key: str, exp: CensusExperiment, hp: dict, seed: int, data: CensusData, with_history: bool = False):
    """Family ``key`` trained with hyper-parameters ``hp`` and ``seed``. Returns ``(model, history,
    metrics, seconds)``: ``metrics`` maps "valid" and "test" to :func:`evaluate`'s per-task AUC and
    log loss. The history records the validation metrics after every epoch with ``with_history``
    or ``exp.patience`` (which stops on them); with ``patience`` the model ends at the best epoch
    of the main task (``history.best_epochs``)."""
    kind, mc, tc = _configs(key, exp, hp, seed, data)
    tasks = list(mc.task_names)
    model = build_model(kind, mc)
    started = time.perf_counter()
    watch = with_history or exp.patience is not None
    valid = (data.x["valid"], data.y["valid"][tasks].to_numpy(np.float32)) if watch else None
    history = fit(model, (data.x["train"], data.y["train"][tasks].to_numpy(np.float32)), tc, valid=valid)
    metrics = {s: evaluate(model, (data.x[s], data.y[s][tasks].to_numpy(np.float32)), device=exp.device)
               for s in ("valid", "test")}
    return model, history, metrics, time.perf_counter() - started
