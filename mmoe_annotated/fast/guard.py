"""The fast wing's guard: the fused pass runs only where it gives ``model.forward``'s numbers.

Part of the opt-in fast wing (:mod:`mmoe_annotated.fast`); explained in the appendix
"Performance". The fused pass (:mod:`~mmoe_annotated.fast.fused`) computes experts, gates, mixing
and towers again in its own way, so an edit to the taught code (a new activation in
``ACTIVATIONS``, a changed ``Gates.forward``, a ``forward`` replaced on one model's gates, a
forward hook) would leave it computing the old model. The guard judges by numbers, not by code:
before the wing predicts with a model, :func:`agrees` runs ``model.forward`` and the fused pass
on the first :data:`CHECK_ROWS` rows of the input and compares their logits and gates within
:func:`tolerance`, once per model and state of its weights and code. An edit that computes the
same numbers, such as a renamed variable, changes nothing; one that changes them turns the fused
pass off for that model, with one warning.

Shape letters: ``B`` batch, ``F`` sparse fields, ``N`` dense width, ``T`` tasks, ``E`` experts.
"""
from __future__ import annotations

import warnings
import weakref

import torch

from ..model.config import ModelOutput
from ..model.mmoe import MultiTaskModel
from . import fused

__all__ = ["agrees", "tolerance", "CHECK_ROWS"]

#: The rows of the caller's input on which :func:`agrees` compares the fused pass with ``model.forward``.
CHECK_ROWS = 64


def tolerance(dtype: torch.dtype, device: torch.device | str) -> float:
    """The largest difference :func:`agrees` accepts between the fused pass and ``model.forward``,
    as a fraction of the outputs' size (``max(1, largest |output|)``, so logits of any scale and
    gate weights in ``[0, 1]`` are judged alike).

    The two paths multiply the same numbers in a different order (one matrix multiply for every
    first layer, one per expert in the deeper layers, mixing as multiply-adds), so they round
    differently; any edit that changes what the model computes moves the outputs by far more:

    * float64: ``1e-9`` (rounding of about ``1e-16`` per operation);
    * float32, on a CPU or on a GPU that multiplies in full float32: ``1e-4`` (rounding of about
      ``6e-8`` per operation; the two paths differ by ``1e-6`` or less in the tests);
    * float32 on a GPU whose matrix multiplies may use TF32
      (``torch.backends.cuda.matmul.allow_tf32``, or ``torch.get_float32_matmul_precision()`` other
      than ``"highest"``): ``1e-2``. TF32 keeps 10 bits of the mantissa, a rounding of about
      ``5e-4`` per product, and the GPU's libraries choose different kernels (other splits and
      orders of the sums) for the fused pass's shapes than for the module path's, so the two can
      differ by several ``1e-3``;
    * float16 and bfloat16: ``5e-2`` (11 and 8 bits of mantissa, bfloat16's rounding ``4e-3`` per
      operation, over a dozen layers)."""
    if dtype == torch.float64:
        return 1e-9
    if dtype in (torch.float16, torch.bfloat16):
        return 5e-2
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    if torch.device(device).type == "cuda" and tf32:
        return 1e-2
    return 1e-4


# model -> (its state when last checked, the verdict): dropped with the model
_VERDICTS: "weakref.WeakKeyDictionary[MultiTaskModel, tuple[tuple, str | None]]" = weakref.WeakKeyDictionary()


def _ref(function):
    """A reference to a ``forward`` for the state: weak where it can be, so that the record of a
    checked model never keeps the model alive, and so that a new function never passes for a
    freed one that happened to have the same ``id``."""
    if function is None:
        return None
    try:
        return weakref.ref(function)
    except TypeError:  # a built-in that takes no weak reference (it cannot hold the model either)
        return function


def _state(model: MultiTaskModel) -> tuple:
    """What the outputs of ``model`` depend on besides the input: each parameter's and buffer's
    identity, storage, version (every in-place change, an optimizer step included, raises it),
    dtype and device; the training flag; and the code each module runs (its class's ``forward``,
    a ``forward`` set on the instance, its forward hooks)."""
    tensors = tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device)
                    for t in (*model.parameters(), *model.buffers()))
    code = tuple((type(m), _ref(getattr(type(m), "forward", None)), _ref(vars(m).get("forward")),
                  tuple(m._forward_pre_hooks), tuple(m._forward_hooks)) for m in model.modules())
    return model.training, tensors, code


def _difference(got: ModelOutput, want: ModelOutput, tol: float) -> str | None:
    """None when ``got`` is ``want`` within ``tol`` (see :func:`tolerance`), else what differs."""
    for name, a, b in (("logits", got.logits, want.logits), ("gates", got.gates, want.gates)):
        if a.shape != b.shape:
            return f"the fused pass gives {name} of shape {tuple(a.shape)}, model.forward {tuple(b.shape)}"
        finite = torch.isfinite(b)  # broken weights: both paths' NaN and infinities in the same places
        if not torch.equal(finite, torch.isfinite(a)):
            return f"the fused pass and model.forward give non-finite {name} in different places"
        a, b = a[finite].double(), b[finite].double()
        gap = float((a - b).abs().max()) if a.numel() else 0.0
        scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
        if not gap <= tol * scale:
            return (f"the fused pass and model.forward differ by up to {gap:.3g} in the {name} "
                    f"(allowed: {tol * scale:.3g})")
    return None


def _compare(model: MultiTaskModel, ids: torch.Tensor | None, dense: torch.Tensor | None) -> str | None:
    """Run ``model.forward`` and the fused pass on one small batch; None when they agree."""
    with torch.inference_mode():
        want = model(ids, dense)
        try:
            got = fused.forward(model, ids, dense)
        except Exception as error:  # the model's code no longer fits the pass's assumptions
            return f"the fused pass failed on it ({type(error).__name__}: {error})"
    dtype = next(model.parameters()).dtype
    return _difference(got, want, tolerance(dtype, want.logits.device))


def agrees(model: MultiTaskModel, ids: torch.Tensor | None,
           dense: torch.Tensor | None = None) -> str | None:
    """``None`` when the fused pass computes ``model.forward``'s numbers, else why not;
    the callers then run ``model.forward``.

    The first time a model is seen, and again whenever its state changes (its weights,
    its mode, the code of its modules: see :func:`_state`), both run on the first
    :data:`CHECK_ROWS` rows of ``ids`` ``(B, F)`` / ``dense`` ``(B, N)`` and their
    logits ``(B, T)`` and gates ``(B, T, E)`` are compared within :func:`tolerance`. The
    verdict is kept for that state, so the check costs one small batch per state; when
    the two disagree, a :class:`RuntimeWarning` says so once, and the verdict stands for
    as long as the state lasts.

    A check on a few rows can miss an edit that changes other rows only (a branch on the
    batch's size or values): the tests of the taught modules are the guard against
    those."""
    reason = fused.supports(model)
    if reason is not None:
        return reason
    state = _state(model)
    known = _VERDICTS.get(model)
    if known is not None and known[0] == state:
        return known[1]
    rows = slice(0, CHECK_ROWS)
    verdict = _compare(model, None if ids is None else ids[rows],
                       None if dense is None else dense[rows])
    _VERDICTS[model] = (state, verdict)
    if verdict is not None:
        warnings.warn(f"mmoe_annotated.fast: {verdict}; predicting with model.forward "
                      "until the model's weights or code change", RuntimeWarning,
                      stacklevel=4)
    return verdict
