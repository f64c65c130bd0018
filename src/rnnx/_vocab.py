"""The one vocabulary of modes and backends, shared by every layer and op (docs/contract.md).

A *mode* names an algorithm (what is computed, step by step or in parallel); a *backend*
names an implementation of it (which code computes it). The layer registry refuses a
mode or backend outside these words, so a name means one thing everywhere.

Old spellings keep working for one release: :func:`old_mode` and :func:`op_backend` map
them to the new words with one :class:`DeprecationWarning` naming the new spelling.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from types import FrameType

__all__ = [
    "BACKENDS",
    "MODES",
    "OLD_BACKENDS",
    "OLD_MODES",
    "REFERENCE",
    "deprecated",
    "op_backend",
]

#: Modes: algorithms.
MODES: dict[str, str] = {
    "recurrent": "the step-by-step recurrence, one time step after the other",
    "scan": "a parallel (associative) scan of a linear recurrence",
    "chunk": "the chunked (blockwise parallel) form: matrix products inside chunks of "
    "time, a recurrence of the state across chunks",
    "conv": "a convolution with the layer's kernel (time-invariant systems)",
    "newton": "a parallel Newton solve of a nonlinear recurrence, one scan per iteration",
    "wavefront": "a recurrence over a grid (of frames) solved one anti-diagonal (plane "
    "t + i + j) after the other, every cell of it at once",
}

#: Backends: implementations (``"triton"`` and ``"cuda"`` are reserved for GPU kernels).
BACKENDS: dict[str, str] = {
    "auto": "picks per device and dtype (native kernels where they run, else torch)",
    "native": "rnnx's C++ kernels (CPU float32/float64)",
    "torch": "plain PyTorch, any device",
    "cudnn": "torch's fused RNN op (cuDNN on CUDA); classic RNNs only",
    "triton": "Triton kernels (reserved)",
    "cuda": "CUDA kernels (reserved)",
}

#: Old mode names -> the mode they are now (a layer may map one to a mode and a backend:
#: :attr:`rnnx.layers.RecurrentLayer.mode_aliases`).
OLD_MODES: dict[str, str] = {"sequential": "recurrent", "chunked": "chunk", "fused": "recurrent"}

#: Old backend names -> the backend they are now. An op's old ``"reference"`` backend runs
#: its step-by-step oracle, now the function ``<op>_reference`` (see :func:`op_backend`).
OLD_BACKENDS: dict[str, str] = {"reference": "torch", "chunked": "torch", "chunk": "torch"}

#: The private backend value an op's ``*_reference`` function passes to run the oracle.
REFERENCE = "_reference"


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside rnnx and torch (``nn.Module``'s
    ``__setattr__`` runs a layer's property setters), counted from the caller of
    :func:`warnings.warn` in :func:`deprecated`: the warning then names the user's line,
    however many rnnx frames (decorators, helpers) lie between."""
    import torch

    ours = tuple(
        os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep
        for m in (torch, sys.modules["rnnx"])
    )
    frame: FrameType | None = sys._getframe(2)  # the caller of deprecated()
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(ours):
        frame = frame.f_back
        level += 1
    return level


def deprecated(what: str, old: str, new: str) -> None:
    """One :class:`DeprecationWarning`: ``what`` ``old`` is now spelled ``new``; it points
    at the first line outside rnnx (the user's call)."""
    warnings.warn(
        f"{what} {old!r} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=_caller_stacklevel(),
    )


def op_backend(backend: object, backends: Sequence[str], *, reference: str | None = None) -> str:
    """The backend an op runs for the ``backend`` argument it was given.

    ``backend`` in ``backends`` (the op's implementations) is returned as it is;
    :data:`REFERENCE` too (the op's ``*_reference`` function). An old name is mapped with
    one :class:`DeprecationWarning`: ``"chunked"``/``"chunk"`` -> ``"torch"``;
    ``"reference"`` -> :data:`REFERENCE` when the op has a reference function, named by
    ``reference`` (e.g. ``"scan_reference()"``; the old backend ran that oracle), else
    ``"torch"`` (the op's PyTorch code is the loop). Anything else raises ``ValueError``
    naming ``backends``.
    """
    if isinstance(backend, str):
        if backend in backends or backend == REFERENCE:
            return backend
        new = OLD_BACKENDS.get(backend)
        if backend == "reference" and reference is not None:
            deprecated("backend", backend, f"{reference} (the step-by-step oracle)")
            return REFERENCE
        if new is not None and new in backends:
            deprecated("backend", backend, f"backend={new!r}")
            return new
    raise ValueError(f"backend: expected one of {tuple(backends)}, got {backend!r}")
