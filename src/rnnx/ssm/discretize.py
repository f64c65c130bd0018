"""Discretisation of x' = A x + B u with a step Δ: x_k = Ā x_{k-1} + B̄ u_k.

Zero-order hold (the input held constant over each step) gives
Ā = exp(ΔA) and B̄ = (ΔA)^{-1} (exp(ΔA) - I) ΔB, exact for piecewise-constant inputs
(S4D, arXiv 2206.11893, Section 3). For a diagonal A both are elementwise.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["zoh_diagonal"]


def zoh_diagonal(A: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-order hold for a diagonal (complex) A: ``(dA, dB)`` with B = 1.

    Args:
        A: the diagonal of A, ``(..., N)``, complex with negative real part.
        dt: step sizes broadcastable to ``A[..., :1]`` (e.g. ``(H, 1)`` per feature).

    Returns:
        ``dA = exp(dt A)`` and ``dB = (exp(dt A) - 1) / A``, both of the broadcast shape;
        multiply ``dB`` by B for a general input matrix.
    """
    dtA = dt * A
    dA = dtA.exp()
    dB = (dA - 1) / A
    return dA, dB
