"""In-memory data as tensors: any supported input to ``(EncodedFeatures, labels)``, checked once.

Explained in chapter 7, "Training" (``book/07_training.ipynb``).

:func:`~mmoe_annotated.train.loop.fit`, :func:`~mmoe_annotated.train.inference.predict` and
:func:`~mmoe_annotated.train.inference.evaluate` take a DataFrame (with the fitted encoder) or tensors
already encoded. Either way the whole split becomes two tensors here, with every check a reader
would want before the first step: the encoder the model's own (:meth:`ModelConfig.check_encoder`),
label columns present, numeric, finite, 0/1 for binary tasks, ids inside the vocabularies, as many
label rows as feature rows.

Shape letters: ``M`` rows of a split, ``T`` tasks, ``F`` sparse fields, ``N`` dense width.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..features.encoder import FeatureEncoder
from ..features.inputs import EncodedFeatures
from ..model.mmoe import MultiTaskModel

__all__ = ["as_dataset"]


def _labels(y, model: MultiTaskModel, source: str) -> torch.Tensor:
    names, types = model.config.task_names, model.config.task_types
    try:
        # np.array copies: pandas 3 hands out read-only arrays, which torch warns about.
        y = torch.as_tensor(np.array(y, dtype=np.float32) if not torch.is_tensor(y) else y, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: labels must be numbers, one column per task {list(names)} ({exc})") from exc
    if y.dim() == 1 and len(names) == 1:
        y = y.unsqueeze(1)
    if y.dim() != 2 or y.shape[1] != len(names):
        raise ValueError(f"{source}: labels must have shape (rows, {len(names)}) for tasks {list(names)}, "
                         f"got {tuple(y.shape)}")
    infinite = torch.isinf(y)  # NaN is a missing label (the task mask, chapter 12); infinity is an error
    if infinite.any():
        row, col = (int(v) for v in torch.nonzero(infinite)[0])
        raise ValueError(f"{source}: label of task {names[col]!r} at row {row} is {y[row, col].item()}; "
                         "labels must be finite, or NaN where a task's label is missing")
    for t, (name, kind) in enumerate(zip(names, types)):
        if kind == "binary":
            bad = (y[:, t] != 0) & (y[:, t] != 1) & ~torch.isnan(y[:, t])
            if bad.any():
                row = int(torch.nonzero(bad)[0])
                raise ValueError(f"{source}: binary task {name!r} has label {y[row, t].item()} at row {row}; "
                                 "binary labels must be 0 or 1")
    return y


def as_dataset(data, model: MultiTaskModel, encoder: FeatureEncoder | None = None, *,
               labels: bool = True, source: str = "data") -> tuple[EncodedFeatures, torch.Tensor | None]:
    """Bring any supported input to ``(EncodedFeatures, labels (M, T) or None)``.

    ``data`` is a DataFrame (encoded with ``encoder``; labels from the task-name columns),
    a pair ``(features, labels)``, or, when ``labels=False``, features alone. Features are
    :class:`EncodedFeatures` or a float tensor of dense inputs ``(M, N)``."""
    y = None
    if encoder is not None:  # the model's own encoder, or its IDs index other values' rows
        model.config.check_encoder(encoder)
    if isinstance(data, pd.DataFrame):
        if encoder is None:
            raise ValueError(f"{source} is a DataFrame: pass the fitted encoder= to turn it into features")
        x = encoder.transform(data)
        if labels:
            missing = [t for t in model.config.task_names if t not in data.columns]
            if missing:
                raise ValueError(f"{source} lacks label column(s) {missing} for tasks "
                                 f"{list(model.config.task_names)}")
            frame = data[list(model.config.task_names)]
            for c in frame.columns:
                if not pd.api.types.is_numeric_dtype(frame[c]):
                    raise ValueError(f"{source}: label column {c!r} has dtype {frame[c].dtype}, expected numbers")
            y = _labels(frame.to_numpy(dtype=np.float32, na_value=np.nan), model, source)
    else:
        if labels:
            if not (isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, EncodedFeatures)):
                raise ValueError(f"{source} must be a DataFrame or a pair (features, labels)")
            x, y = data
            y = _labels(y, model, source)
        else:
            x = data
        if torch.is_tensor(x) or isinstance(x, np.ndarray):
            x = EncodedFeatures(None, torch.as_tensor(x, dtype=torch.float32))
        if not isinstance(x, EncodedFeatures):
            raise TypeError(f"{source}: features must be EncodedFeatures or a dense tensor, got {type(x).__name__}")
    model.inputs.check(x.ids, x.dense)
    if y is not None and len(y) != len(x):
        raise ValueError(f"{source}: {len(x)} rows of features but {len(y)} rows of labels")
    return x, y
