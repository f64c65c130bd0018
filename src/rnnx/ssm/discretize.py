"""Discretisation of x' = A x + B u with a step Δ: x_k = Ā x_{k-1} + B̄ u_k.

* Zero-order hold (the input held constant over each step):
  Ā = exp(ΔA), B̄ = (ΔA)^{-1}(exp(ΔA) - I) ΔB; exact for piecewise-constant inputs
  (S4D, arXiv 2206.11893, Section 3).
* Generalised bilinear transform (GBT) with α in [0, 1] (LSSL, arXiv 2110.13985,
  Section 2.2; Zhang et al. 2007):
  Ā = (I - αΔA)^{-1}(I + (1-α)ΔA), B̄ = (I - αΔA)^{-1} ΔB. α = 0 is forward Euler,
  α = 1 backward Euler, α = 1/2 the bilinear (Tustin) transform, which S4 uses.

For three structures of A:

* diagonal (complex or real; elementwise, B = 1 so that B̄ multiplies any B),
* dense ``(..., N, N)`` (LSSL),
* diagonal plus low rank A = diag(Λ) - P Q^* (S4, arXiv 2111.00396, Section 3.3), where
  one GBT step costs O(N r) by the Woodbury identity instead of O(N^2).

Steps ``dt`` broadcast against the batch dimensions of A, so one step per feature,
per sequence or per time step (irregular sampling) is a matter of shape.

DPLR with ``conj_sym=True``: the vectors hold one of each conjugate pair of a real
system of size 2N (``x_full = [x, conj(x)]``, likewise Λ, P, Q, B); an inner product
over the full vector is then ``Q^* x + Q^T conj(x) = 2 Re(Q^* x)``.
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor

__all__ = [
    "DPLRStep",
    "Discretization",
    "bilinear_dense",
    "bilinear_diagonal",
    "discretize_diagonal",
    "dplr_matvec",
    "dplr_solve",
    "gbt_dense",
    "gbt_diagonal",
    "gbt_dplr_step",
    "zoh_dense",
    "zoh_diagonal",
]


class Discretization(enum.StrEnum):
    """How a continuous-time SSM becomes a recurrence."""

    ZOH = "zoh"
    """Zero-order hold: exact for inputs held constant over each step."""
    BILINEAR = "bilinear"
    """Bilinear (Tustin) transform, GBT with α = 1/2."""


def as_discretization(value: Discretization | str) -> Discretization:
    try:
        return Discretization(value)
    except ValueError:
        raise ValueError(
            f"discretization: expected one of {[m.value for m in Discretization]}, got {value!r}"
        ) from None


def _check_alpha(alpha: float) -> float:
    if not (0.0 <= float(alpha) <= 1.0):
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    return float(alpha)


# --------------------------------------------------------------------------- diagonal


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


def gbt_diagonal(A: Tensor, dt: Tensor, alpha: float = 0.5) -> tuple[Tensor, Tensor]:
    """GBT for a diagonal A: ``dA = (1 + (1-α) dt A) / (1 - α dt A)``,
    ``dB = dt / (1 - α dt A)`` (B = 1), elementwise; shapes as :func:`zoh_diagonal`."""
    alpha = _check_alpha(alpha)
    dtA = dt * A
    denom = 1 - alpha * dtA
    return (1 + (1 - alpha) * dtA) / denom, dt / denom


def bilinear_diagonal(A: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """The bilinear transform (GBT with α = 1/2) for a diagonal A."""
    return gbt_diagonal(A, dt, 0.5)


def discretize_diagonal(
    A: Tensor, dt: Tensor, method: Discretization | str = Discretization.ZOH
) -> tuple[Tensor, Tensor]:
    """:func:`zoh_diagonal` or :func:`bilinear_diagonal` by ``method``."""
    if as_discretization(method) is Discretization.ZOH:
        return zoh_diagonal(A, dt)
    return bilinear_diagonal(A, dt)


# --------------------------------------------------------------------------- dense


def _dense_dt(A: Tensor, dt: Tensor | float) -> Tensor:
    dt = torch.as_tensor(dt, dtype=A.dtype, device=A.device)
    return dt[..., None, None]


def zoh_dense(A: Tensor, B: Tensor, dt: Tensor | float) -> tuple[Tensor, Tensor]:
    """Zero-order hold for a dense A, by one matrix exponential of the block matrix
    ``[[A, B], [0, 0]] dt`` (Van Loan), which holds exp(ΔA) and ∫_0^Δ exp(As) ds B.

    Args:
        A: ``(..., N, N)``; B: ``(..., N)``; dt: broadcastable to ``A.shape[:-2]``.

    Returns:
        ``(dA (..., N, N), dB (..., N))`` over the broadcast batch shape.
    """
    dt = _dense_dt(A, dt)
    batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-1], dt.shape[:-2])
    N = A.shape[-1]
    M = torch.zeros((*batch, N + 1, N + 1), dtype=A.dtype, device=A.device)
    M[..., :N, :N] = A
    M[..., :N, N] = B
    E = torch.linalg.matrix_exp(M * dt)
    return E[..., :N, :N], E[..., :N, N]


def gbt_dense(
    A: Tensor, B: Tensor, dt: Tensor | float, alpha: float = 0.5
) -> tuple[Tensor, Tensor]:
    """GBT for a dense A: ``Ā = (I - αΔA)^{-1}(I + (1-α)ΔA)``, ``B̄ = (I - αΔA)^{-1}ΔB``.

    Args:
        A: ``(..., N, N)``; B: ``(..., N)``; dt: broadcastable to ``A.shape[:-2]``;
        alpha: in [0, 1].

    Returns:
        ``(dA (..., N, N), dB (..., N))`` by one LU solve per matrix.
    """
    alpha = _check_alpha(alpha)
    dt = _dense_dt(A, dt)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    dtA = dt * A
    lhs = eye - alpha * dtA
    rhs = torch.cat([eye + (1 - alpha) * dtA, (dt[..., 0] * B).unsqueeze(-1)], -1)
    batch = torch.broadcast_shapes(lhs.shape[:-2], rhs.shape[:-2])
    out = torch.linalg.solve(
        lhs.expand(*batch, *lhs.shape[-2:]), rhs.expand(*batch, *rhs.shape[-2:])
    )
    return out[..., :-1], out[..., -1]


def bilinear_dense(A: Tensor, B: Tensor, dt: Tensor | float) -> tuple[Tensor, Tensor]:
    """The bilinear transform (GBT with α = 1/2) for a dense A."""
    return gbt_dense(A, B, dt, 0.5)


# --------------------------------------------------------------------------- DPLR


def _inner(Q: Tensor, v: Tensor, conj_sym: bool) -> Tensor:
    """Q^* v for each row of Q (..., r, N) and v (..., N) -> (..., r)."""
    s = torch.einsum("...rn,...n->...r", Q.conj(), v)
    return 2 * s.real if conj_sym else s


def dplr_matvec(Lambda: Tensor, P: Tensor, Q: Tensor, x: Tensor, *, conj_sym: bool = False):
    """A x for A = diag(Λ) - P Q^* (Σ over the rank), in O(N r).

    Args:
        Lambda: ``(..., N)``; P, Q: ``(..., r, N)``; x: ``(..., N)``; all broadcastable.
        conj_sym: the vectors hold one of each conjugate pair (see the module doc).
    """
    s = _inner(Q, x, conj_sym)
    return Lambda * x - torch.einsum("...rn,...r->...n", P, s.to(P.dtype))


def dplr_solve(
    d: Tensor, P: Tensor, Q: Tensor, c: Tensor, y: Tensor, *, conj_sym: bool = False
) -> Tensor:
    """Solve ``(diag(d) + c P Q^*) x = y`` by the Woodbury identity, in O(N r^2 + r^3):

        x = D^{-1} y - c D^{-1} P (I + c Q^* D^{-1} P)^{-1} Q^* D^{-1} y.

    Args:
        d: ``(..., N)`` nonzero; P, Q: ``(..., r, N)``; c: broadcastable to
            ``d[..., :1]`` (real); y: ``(..., N)``.
    """
    Dy = y / d
    DP = P / d.unsqueeze(-2)  # (..., r, N)
    M = torch.einsum("...in,...jn->...ij", Q.conj(), DP)  # Q_i^* D^{-1} P_j
    s = torch.einsum("...in,...n->...i", Q.conj(), Dy)
    if conj_sym:
        M, s = 2 * M.real, 2 * s.real
    r = P.shape[-2]
    cr = c.unsqueeze(-1) if torch.is_tensor(c) else c  # (..., 1, 1) against M
    eye = torch.eye(r, dtype=M.dtype, device=M.device)
    corr = torch.linalg.solve(eye + cr * M, s.unsqueeze(-1)).squeeze(-1)  # (..., r)
    return Dy - c * torch.einsum("...rn,...r->...n", DP, corr.to(DP.dtype))


class DPLRStep:
    """One GBT step of a DPLR system, x_next = Ā x + B̄ u, in O(N r) (S4's recurrence):

        x_next = (I - αΔA)^{-1} [(I + (1-α)ΔA) x + ΔB u],  A = diag(Λ) - P Q^*,

    with I - αΔA = diag(1 - αΔΛ) + αΔ P Q^* inverted by the Woodbury identity. What
    does not depend on x (the diagonal, D^{-1}P and the r x r inverse) is computed once
    here, so a call costs O(N r).

    Args:
        Lambda: ``(..., N)``; P, Q: ``(..., r, N)``; B: ``(..., N)``;
        dt: broadcastable to ``Lambda[..., :1]`` (real); alpha: in [0, 1];
        conj_sym: see the module doc.

    Call with ``x (..., N)`` and ``u`` broadcastable to ``x[..., 0]``.
    """

    def __init__(
        self,
        Lambda: Tensor,
        P: Tensor,
        Q: Tensor,
        B: Tensor,
        dt: Tensor,
        *,
        alpha: float = 0.5,
        conj_sym: bool = False,
    ) -> None:
        alpha = _check_alpha(alpha)
        self.Lambda, self.P, self.Q, self.conj_sym = Lambda, P, Q, conj_sym
        self.fwd = (1 - alpha) * dt
        self.dtB = dt * B
        self.d = 1 - alpha * dt * Lambda
        self.c = alpha * dt
        self.DP = P / self.d.unsqueeze(-2)
        M = torch.einsum("...in,...jn->...ij", Q.conj(), self.DP)
        if conj_sym:
            M = 2 * M.real
        eye = torch.eye(P.shape[-2], dtype=M.dtype, device=M.device)
        self.W = torch.linalg.inv(eye + self.c.unsqueeze(-1) * M)  # (..., r, r)

    def __call__(self, x: Tensor, u: Tensor) -> Tensor:
        rhs = x + self.fwd * dplr_matvec(self.Lambda, self.P, self.Q, x, conj_sym=self.conj_sym)
        y = (rhs + self.dtB * u.unsqueeze(-1)) / self.d
        s = _inner(self.Q, y, self.conj_sym)
        corr = (self.W @ s.unsqueeze(-1)).squeeze(-1)
        return y - self.c * torch.einsum("...rn,...r->...n", self.DP, corr.to(self.DP.dtype))


def gbt_dplr_step(
    Lambda: Tensor,
    P: Tensor,
    Q: Tensor,
    B: Tensor,
    dt: Tensor,
    x: Tensor,
    u: Tensor,
    *,
    alpha: float = 0.5,
    conj_sym: bool = False,
) -> Tensor:
    """One GBT step of a DPLR system (see :class:`DPLRStep`), for a single call."""
    return DPLRStep(Lambda, P, Q, B, dt, alpha=alpha, conj_sym=conj_sym)(x, u)
