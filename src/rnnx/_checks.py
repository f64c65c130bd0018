"""Input validation shared by every op and layer.

Errors name the argument, what was expected and what was given, so that a user sees
``x: expected a 3-D tensor (batch, length, 16), got shape (4, 16)`` rather than a
broadcasting failure deep inside an op.

Finite checks (NaN / inf in inputs and states) cost a pass over the data, so they are
off by default and switched on with :func:`set_checks`, the :func:`checks` context
manager or the environment variable ``RNNX_CHECK_FINITE=1``. Value checks of ``lengths``
and ``dt`` run on CPU tensors in eager mode, and everywhere under :func:`checks`
(:func:`value_checks_enabled`): never a host synchronisation on an accelerator, never a
data-dependent branch in a ``torch.compile`` graph, unless asked for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import overload

import torch
from torch import Tensor


class RnnxWarning(UserWarning):
    """Base class of the warnings rnnx emits (fallbacks, non-convergence)."""


_FINITE = os.environ.get("RNNX_CHECK_FINITE", "0") not in ("", "0", "false", "False")


def set_checks(*, finite: bool) -> None:
    """Switch the NaN/inf checks of layer inputs, states and steps on or off globally."""
    global _FINITE
    _FINITE = bool(finite)


def finite_checks_enabled() -> bool:
    """Whether layers currently check their inputs and states for NaN/inf."""
    return _FINITE


@contextlib.contextmanager
def checks(*, finite: bool = True) -> Iterator[None]:
    """Context manager: ``with rnnx.checks(finite=True): layer(x)``."""
    global _FINITE
    old = _FINITE
    _FINITE = bool(finite)
    try:
        yield
    finally:
        _FINITE = old


def value_checks_enabled(t: Tensor) -> bool:
    """Whether to validate the *values* of ``t`` (lengths in range, step sizes > 0).

    Reading values back is a host synchronisation on an accelerator and cannot be traced
    by ``torch.compile``. So: always under :func:`checks` (then a compiled graph breaks
    there, as asked); otherwise only for CPU tensors in eager mode, where the read costs
    a few microseconds, and never while ``torch.compile`` traces (the graph gets no
    data-dependent branch; out-of-range lengths then act as clamped to [0, length]).
    """
    if _FINITE:
        return True
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def fmt_shape(shape: Sequence[int] | torch.Size) -> str:
    """``(4, 16)`` for a shape; used in every error message."""
    dims = [str(int(s)) for s in shape]
    return "(" + dims[0] + ",)" if len(dims) == 1 else "(" + ", ".join(dims) + ")"


def require_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def require_float(name: str, t: Tensor, *, allow_complex: bool = False) -> None:
    ok = t.is_floating_point() or (allow_complex and t.is_complex())
    if not ok:
        kinds = "a floating-point or complex" if allow_complex else "a floating-point"
        raise TypeError(f"{name}: expected {kinds} tensor, got dtype {t.dtype}")


def require_finite(name: str, t: Tensor) -> None:
    """Raise if ``t`` holds NaN or inf (only call this when checks are on)."""
    if not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(f"{name}: expected finite values, found {n_nan} NaN and {n_inf} inf")


def require_positive_int(name: str, value: object, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name}: expected an int {bound}, got {value}")
    return value


def require_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_sequence_input(name: str, x: object, d_model: int) -> Tensor:
    """Validate a batch-first sequence ``(batch, length, d_model)`` of floats."""
    x = require_tensor(name, x)
    expected = f"a 3-D tensor (batch, length, {d_model})"
    if x.dim() != 3:
        raise ValueError(f"{name}: expected {expected}, got shape {fmt_shape(x.shape)}")
    if x.shape[-1] != d_model:
        raise ValueError(
            f"{name}: expected {expected}; its last dimension is {x.shape[-1]}, "
            f"not d_model={d_model} (shape {fmt_shape(x.shape)})"
        )
    if x.shape[1] == 0:
        raise ValueError(
            f"{name}: expected a sequence of length >= 1, got length 0 (shape {fmt_shape(x.shape)})"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name}: expected a batch of size >= 1, got shape {fmt_shape(x.shape)}")
    require_float(name, x)
    if _FINITE:
        require_finite(name, x)
    return x


def check_video_input(name: str, x: object, channels: int) -> Tensor:
    """Validate a batch-first sequence of frames ``(batch, time, channels, height, width)``."""
    x = require_tensor(name, x)
    expected = f"a 5-D tensor (batch, time, {channels}, height, width)"
    if x.dim() != 5:
        raise ValueError(f"{name}: expected {expected}, got shape {fmt_shape(x.shape)}")
    if x.shape[2] != channels:
        raise ValueError(
            f"{name}: expected {expected}; its channel dimension (dim 2) is {x.shape[2]}, "
            f"not d_model={channels} (shape {fmt_shape(x.shape)})"
        )
    if x.shape[1] == 0:
        raise ValueError(
            f"{name}: expected a sequence of >= 1 frames, got 0 (shape {fmt_shape(x.shape)})"
        )
    if x.shape[0] == 0 or x.shape[3] == 0 or x.shape[4] == 0:
        raise ValueError(
            f"{name}: expected batch, height and width >= 1, got shape {fmt_shape(x.shape)}"
        )
    require_float(name, x)
    if _FINITE:
        require_finite(name, x)
    return x


def check_lengths(lengths: object, batch: int, length: int, device: torch.device) -> Tensor | None:
    """Validate ``lengths``: integers in [0, length], one per batch element.

    Returns an int64 tensor on ``device`` or None. Accepts a tensor, list or tuple.
    """
    if lengths is None:
        return None
    if isinstance(lengths, list | tuple):
        lengths = torch.as_tensor(lengths)
    lengths = require_tensor("lengths", lengths)
    if lengths.dtype.is_floating_point or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer tensor, got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"lengths: expected shape ({batch},) (one length per sequence), "
            f"got shape {fmt_shape(lengths.shape)}"
        )
    if value_checks_enabled(lengths):
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 0 or hi > length:
            raise ValueError(
                f"lengths: expected values in [0, {length}] (the padded length), "
                f"got min {lo}, max {hi}"
            )
    return lengths.to(device=device, dtype=torch.long)


@overload
def length_mask(lengths: Tensor, length: int) -> Tensor: ...
@overload
def length_mask(lengths: None, length: int) -> None: ...
def length_mask(lengths: Tensor | None, length: int) -> Tensor | None:
    """The padding mask: boolean ``(batch, length)``, True at real steps (position
    ``t < lengths[b]``), False at padding; None when there are no ``lengths``.

    The one spelling of the mask in rnnx (layers, ops and models use it); on the
    device of ``lengths`` (:func:`check_lengths` puts them on the input's).
    """
    if lengths is None:
        return None
    return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]
