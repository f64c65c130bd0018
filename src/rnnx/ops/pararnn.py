"""ParaGRU's and ParaLSTM's cells on the native CPU kernels (ParaRNN, arXiv 2510.21450).

The readable definitions of the cells are the layers' :meth:`~rnnx.layers.ParaGRU.cell`
methods (:mod:`rnnx.layers.pararnn`); this module runs them with the kernels of
``rnnx/_native/pararnn.cpp``, each a PyTorch operator (:mod:`rnnx._native.ops`):

* :func:`sequence` (``torch.ops.rnnx.pararnn``): the whole sequential recurrence, forward
  and backward (BPTT) in native code; each (batch, feature) runs its own loop since the
  recurrence is elementwise (the layers' mode ``"recurrent"`` on backend ``"native"``);
* :func:`cell` (``torch.ops.rnnx.pararnn_cell``): the cell at every leading index at
  once, differentiable by its native vector-Jacobian product (``rnnx::pararnn_cell_vjp``):
  Newton's evaluations of f and its one batched VJP;
* :func:`cell_and_jacobian` (``torch.ops.rnnx.pararnn_cell_jacobian``): the cell and its
  Jacobian d f / d h (diagonal for the GRU, 2x2 blocks over each feature's (c, h) for the
  LSTM), without autograd: the linear system of each Newton step.

Shapes, with H features: ``u = W x + b`` is ``(..., 3H)`` (gate blocks), ``a`` the
diagonal recurrent weights ``(3, H)``, ``p`` the LSTM's peepholes ``(2, H)`` (None for the
GRU); states are ``(..., H)`` (GRU) or ``(..., H, 2)`` pairs (c, h) (LSTM; the layers'
flat ``(..., 2H)`` interleaves them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnx import _native
from rnnx._native import ops as native_ops

__all__ = ["KINDS", "cell", "cell_and_jacobian", "fused_available", "sequence"]

KINDS: tuple[str, ...] = ("gru", "lstm")
_DTYPES = (torch.float32, torch.float64)


def fused_available(x: Tensor) -> bool:
    """Whether the native kernels run for tensors like ``x`` (CPU, float32/float64, kernel
    built); otherwise the layers run their Python loop. Depends on nothing else."""
    return x.device.type == "cpu" and x.dtype in _DTYPES and _native.available("pararnn")


def sequence(
    kind: str, u: Tensor, a: Tensor, p: Tensor | None, s0: Tensor, lengths: Tensor | None
) -> Tensor:
    """Every state of the recurrence: ``(B, L, H)`` (GRU) or ``(B, L, H, 2)`` (LSTM).

    Args:
        kind: ``"gru"`` or ``"lstm"``.
        u: ``(B, L, 3H)`` input projections; a: ``(3, H)``; p: ``(2, H)`` or None.
        s0: the initial state ``(B, H)`` or ``(B, H, 2)``.
        lengths: ``(B,)`` int64 or None; steps ``t >= lengths[b]`` keep the state.
    """
    return native_ops.call("pararnn", kind, u, a, p, s0, lengths)


def cell(kind: str, h: Tensor, u: Tensor, a: Tensor, p: Tensor | None) -> Tensor:
    """The cell at every leading index: ``h`` ``(..., H)`` or ``(..., 2H)`` (flat (c, h)
    pairs) and ``u`` ``(..., 3H)`` to the next state, shaped like ``h``."""
    return native_ops.call("pararnn_cell", kind, h, u, a, p)


def cell_and_jacobian(
    kind: str, h: Tensor, u: Tensor, a: Tensor, p: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The cell and its Jacobian d f / d h at every leading index, without autograd:
    ``J`` is ``(..., H)`` (diagonal, GRU) or ``(..., H, 2, 2)`` (row = output (c, h),
    column = input (c, h), LSTM)."""
    with torch.no_grad():
        return native_ops.call("pararnn_cell_jacobian", kind, h, u, a, p)
