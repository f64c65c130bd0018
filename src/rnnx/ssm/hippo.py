"""HiPPO transition matrices, their normal-plus-low-rank form, and S4D initialisations.

A HiPPO matrix (Gu et al. 2020, "HiPPO: Recurrent Memory with Optimal Polynomial
Projections", arXiv 2008.07669) is the A, B of an ODE x' = A x + B u whose state holds
the coefficients of the input's history projected onto an orthogonal basis. The
Linear State-Space Layer (LSSL, arXiv 2110.13985) uses them as time-invariant SSMs;
S4 (arXiv 2111.00396) writes them as normal plus low rank,

    A = V Λ V^* - P P^T,     V unitary, Λ diagonal,

so that in the eigenbasis of the normal part A is diagonal plus low rank (DPLR); S4D
(arXiv 2206.11893) keeps only Λ. Every matrix here is in the sign convention
x' = A x + B u (A has eigenvalues in the left half-plane), indices n, k = 0..N-1:

* LegS (scaled Legendre): A_nk = -sqrt(2n+1) sqrt(2k+1) if n > k, -(n+1) if n = k,
  0 if n < k; B_n = sqrt(2n+1). Rank-1 correction P_n = sqrt(n + 1/2).
* LegT (translated Legendre, window θ = 1): A_nk = -sqrt(2n+1) sqrt(2k+1) if n >= k,
  -(-1)^(n-k) sqrt(2n+1) sqrt(2k+1) if n < k; B_n = sqrt(2n+1). Rank 2: sqrt(2n+1) on
  the odd and on the even indices.
* LagT (translated Laguerre): A_nk = -1 if n >= k, 0 otherwise; B_n = 1. Rank 1:
  P_n = sqrt(1/2).
* Fourier (FouT, "How to Train Your HiPPO", arXiv 2206.12037): state pairs
  (2j, 2j+1) are the cosine and sine of frequency j; A = 2π J - E, where
  J_{2j,2j+1} = j, J_{2j+1,2j} = -j and E_nk = 1 if n, k are both even (the
  measure's boundary correction), B_n = 1 for even n, 0 for odd n. Rank 1: P_n = 1 on
  even indices (E = P P^T).

For every measure A + P^T P = c I + K with K skew-symmetric, so the normal part is
diagonalised stably by a Hermitian eigensolver (no general ``eig`` of a non-normal
matrix, whose eigenvectors are exponentially ill-conditioned for LegS).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnx._checks import require_positive_int

__all__ = [
    "NPLR",
    "Measure",
    "S4DInit",
    "as_measure",
    "hippo",
    "hippo_fourier",
    "hippo_lagt",
    "hippo_legs",
    "hippo_legt",
    "nplr",
    "rank_correction",
    "s4d_init",
    "s4d_inv",
    "s4d_legs",
    "s4d_lin",
    "s4d_real",
]


class Measure(enum.StrEnum):
    """The measure (basis) of a HiPPO matrix."""

    LEGS = "legs"
    """Scaled Legendre: the whole history, uniformly weighted (LSSL/S4 default)."""
    LEGT = "legt"
    """Translated Legendre: a sliding window of length 1."""
    LAGT = "lagt"
    """Translated Laguerre: exponentially decaying weight on the past."""
    FOURIER = "fourier"
    """Translated Fourier (FouT): a sliding window in a Fourier basis."""


def as_measure(value: Measure | str) -> Measure:
    """A :class:`Measure` from itself or its name (``"legs"``, ...)."""
    try:
        return Measure(value)
    except ValueError:
        raise ValueError(
            f"measure: expected one of {[m.value for m in Measure]}, got {value!r}"
        ) from None


def _n(N: int) -> int:
    return require_positive_int("N", N)


def hippo_legs(N: int, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """HiPPO-LegS ``(A (N, N), B (N,))`` (HiPPO arXiv 2008.07669, Theorem 2)."""
    q = torch.arange(_n(N), dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    A = -torch.tril(r[:, None] * r[None, :], diagonal=-1) - torch.diag(q + 1)
    return A.to(dtype), r.to(dtype)


def hippo_legt(N: int, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """HiPPO-LegT ``(A, B)`` with window θ = 1 (HiPPO arXiv 2008.07669, Theorem 1)."""
    q = torch.arange(_n(N), dtype=torch.float64)
    r = torch.sqrt(2 * q + 1)
    n, k = q[:, None], q[None, :]
    sign = torch.where(n >= k, torch.ones(()), (-1.0) ** (n - k))
    A = -r[:, None] * sign * r[None, :]
    return A.to(dtype), r.to(dtype)


def hippo_lagt(N: int, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """HiPPO-LagT ``(A, B)``: A = -(lower triangle of ones), B = 1 (arXiv 2008.07669)."""
    A = -torch.tril(torch.ones(_n(N), N, dtype=torch.float64))
    return A.to(dtype), torch.ones(N, dtype=dtype)


def hippo_fourier(N: int, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """HiPPO-FouT ``(A, B)`` (arXiv 2206.12037); N must be even (cosine/sine pairs)."""
    _n(N)
    if N % 2:
        raise ValueError(f"N: the Fourier measure needs an even N (cos/sin pairs), got {N}")
    J = torch.zeros(N, N, dtype=torch.float64)
    j = torch.arange(N // 2, dtype=torch.float64)
    J[2 * j.long(), 2 * j.long() + 1] = j
    J[2 * j.long() + 1, 2 * j.long()] = -j
    even = (torch.arange(N) % 2 == 0).to(torch.float64)
    A = 2 * math.pi * J - even[:, None] * even[None, :]
    return A.to(dtype), even.to(dtype)


def hippo(
    measure: Measure | str, N: int, *, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """``(A (N, N), B (N,))`` of the HiPPO matrix of ``measure``."""
    fn = {
        Measure.LEGS: hippo_legs,
        Measure.LEGT: hippo_legt,
        Measure.LAGT: hippo_lagt,
        Measure.FOURIER: hippo_fourier,
    }[as_measure(measure)]
    return fn(N, dtype=dtype)


def rank_correction(measure: Measure | str, N: int, *, dtype=torch.float64) -> Tensor:
    """``P (rank, N)`` such that ``A + P^T P`` is normal (constant diagonal + skew)."""
    m = as_measure(measure)
    q = torch.arange(_n(N), dtype=torch.float64)
    if m is Measure.LEGS:
        P = torch.sqrt(q + 0.5)[None]
    elif m is Measure.LEGT:
        r = torch.sqrt(2 * q + 1)
        odd = (torch.arange(N) % 2 == 1).to(torch.float64)
        P = torch.stack([r * odd, r * (1 - odd)])
    elif m is Measure.LAGT:
        P = torch.full((1, N), math.sqrt(0.5), dtype=torch.float64)
    else:
        P = (torch.arange(N) % 2 == 0).to(torch.float64)[None]
    return P.to(dtype)


@dataclass(frozen=True)
class NPLR:
    """A HiPPO matrix as normal plus low rank, keeping one of each conjugate pair.

    With ``V_full = [V, conj(V)]`` (unitary, N x N) and ``Λ_full = [Λ, conj(Λ)]``,

        A = V_full (diag(Λ_full) - p_full p_full^*) V_full^*,   B = V_full b_full,

    where ``p_full = [P, conj(P)]`` and ``b_full = [B, conj(B)]``. A real state x maps
    to ``V^* x`` (N/2 complex numbers) and back by ``x = 2 Re(V (V^* x))``.

    Fields: ``Lambda (N/2,)``, ``P (rank, N/2)``, ``B (N/2,)`` complex and
    ``V (N, N/2)`` complex.
    """

    Lambda: Tensor
    P: Tensor
    B: Tensor
    V: Tensor

    def dense(self) -> tuple[Tensor, Tensor]:
        """Rebuild the real ``(A, B)`` from the decomposition (a check)."""
        V = torch.cat([self.V, self.V.conj()], -1)
        lam = torch.cat([self.Lambda, self.Lambda.conj()], -1)
        p = torch.cat([self.P, self.P.conj()], -1)
        inner = torch.diag(lam) - p.transpose(-1, -2) @ p.conj()
        A = V @ inner @ V.conj().transpose(-1, -2)
        b = V @ torch.cat([self.B, self.B.conj()], -1)
        return A.real, b.real


def nplr(measure: Measure | str, N: int, *, dtype: torch.dtype = torch.complex128) -> NPLR:
    """The normal-plus-low-rank decomposition of a HiPPO matrix (S4, arXiv 2111.00396).

    N must be even. Computed in float64: the skew part K of ``A + P^T P = c I + K`` is
    diagonalised by ``eigh(-i K)`` (Hermitian), whose eigenvectors are orthonormal;
    the eigenvalues c ± iω come in conjugate pairs and the one with ω > 0 is kept
    (a zero eigenvalue, which the Fourier measure has, is paired from a real basis of
    the null space). Eigenvalues are sorted by increasing ω.
    """
    _n(N)
    if N % 2:
        raise ValueError(f"N: expected an even state size (conjugate pairs), got {N}")
    A, B = hippo(measure, N)
    P = rank_correction(measure, N)
    S = A + P.T @ P
    c = float(torch.diagonal(S).mean())
    K = S - c * torch.eye(N, dtype=torch.float64)
    if float((K + K.T).abs().max()) > 1e-9 * max(1.0, float(K.abs().max())):
        raise AssertionError(f"{measure}: A + P^T P is not constant-diagonal plus skew")
    w, U = torch.linalg.eigh(-1j * K.to(torch.complex128))  # K = U diag(i w) U^*
    tol = 1e-9 * max(1.0, float(w.abs().max()))
    pos = w > tol
    zero = w.abs() <= tol
    n_zero = int(zero.sum())
    V_pos = U[:, pos]
    omega = w[pos]
    if n_zero:
        # The null space of K is spanned by real vectors; pair them as (a ± i b)/sqrt(2).
        basis = torch.linalg.svd(K)[2][-n_zero:].T  # real orthonormal (N, n_zero)
        pairs = (basis[:, 0::2] + 1j * basis[:, 1::2]) / math.sqrt(2)
        V_pos = torch.cat([pairs.to(torch.complex128), V_pos], -1)
        omega = torch.cat([torch.zeros(n_zero // 2, dtype=w.dtype), omega])
    if V_pos.shape[-1] != N // 2:
        raise AssertionError(f"{measure}: eigenvalues did not come in conjugate pairs")
    Lambda = torch.complex(torch.full_like(omega, c), omega)
    Vh = V_pos.conj().T
    out = NPLR(
        Lambda=Lambda,
        P=(P.to(torch.complex128) @ Vh.T),
        B=Vh @ B.to(torch.complex128),
        V=V_pos,
    )
    return NPLR(*(t.to(dtype) for t in (out.Lambda, out.P, out.B, out.V)))


# --------------------------------------------------------------------------- S4D inits


class S4DInit(enum.StrEnum):
    """Diagonal initialisations of S4D (arXiv 2206.11893, Section 4)."""

    LIN = "lin"
    """S4D-Lin: A_n = -1/2 + i π n."""
    INV = "inv"
    """S4D-Inv: A_n = -1/2 + i (N/π) (N/(2n+1) - 1)."""
    LEGS = "legs"
    """S4D-LegS: the diagonal Λ of the NPLR form of HiPPO-LegS."""
    REAL = "real"
    """S4D-Real: A_n = -(n+1)."""


def s4d_lin(n_half: int, *, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """S4D-Lin: ``(real, imag)`` parts of A_n = -1/2 + i π n for n < n_half."""
    require_positive_int("n_half", n_half)
    real = torch.full((n_half,), -0.5, dtype=dtype)
    imag = math.pi * torch.arange(n_half, dtype=dtype)
    return real, imag


def s4d_inv(n_half: int, *, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """S4D-Inv: A_n = -1/2 + i (N/π)(N/(2n+1) - 1) with N = 2 n_half."""
    require_positive_int("n_half", n_half)
    N = 2 * n_half
    n = torch.arange(n_half, dtype=torch.float64)
    imag = N / math.pi * (N / (2 * n + 1) - 1)
    return torch.full((n_half,), -0.5, dtype=dtype), imag.to(dtype)


def s4d_legs(n_half: int, *, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """S4D-LegS: Λ of :func:`nplr` for LegS with N = 2 n_half (real parts -1/2)."""
    lam = nplr(Measure.LEGS, 2 * require_positive_int("n_half", n_half)).Lambda
    return lam.real.to(dtype), lam.imag.to(dtype)


def s4d_real(n_half: int, *, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """S4D-Real: A_n = -(n+1), no imaginary part."""
    require_positive_int("n_half", n_half)
    return -(torch.arange(n_half, dtype=dtype) + 1), torch.zeros(n_half, dtype=dtype)


def s4d_init(
    init: S4DInit | str, n_half: int, *, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """``(real, imag)`` of the diagonal A of an S4D initialisation."""
    try:
        kind = S4DInit(init)
    except ValueError:
        raise ValueError(
            f"init: expected one of {[m.value for m in S4DInit]}, got {init!r}"
        ) from None
    fn = {
        S4DInit.LIN: s4d_lin,
        S4DInit.INV: s4d_inv,
        S4DInit.LEGS: s4d_legs,
        S4DInit.REAL: s4d_real,
    }[kind]
    return fn(n_half, dtype=dtype)
