"""HiPPO matrices against their closed forms, the NPLR decomposition, S4D inits, and
LegS as online function approximation (HiPPO arXiv 2008.07669, LSSL arXiv 2110.13985)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre

from rnnx.ops.conv import krylov_state
from rnnx.ssm.discretize import bilinear_dense
from rnnx.ssm.hippo import (
    Measure,
    S4DInit,
    as_measure,
    hippo,
    hippo_legs,
    nplr,
    rank_correction,
    s4d_init,
    s4d_inv,
    s4d_legs,
    s4d_lin,
    s4d_real,
)
from tests.conftest import assert_close

r3, r5, r7 = math.sqrt(3), math.sqrt(5), math.sqrt(7)
r15, r21, r35 = math.sqrt(15), math.sqrt(21), math.sqrt(35)
TWO_PI = 2 * math.pi

# The closed forms, written out entry by entry (sign convention x' = A x + B u).
CLOSED_FORMS = {
    Measure.LEGS: (
        -torch.tensor(
            [[1, 0, 0, 0], [r3, 2, 0, 0], [r5, r15, 3, 0], [r7, r21, r35, 4]],
            dtype=torch.float64,
        ),
        torch.tensor([1, r3, r5, r7], dtype=torch.float64),
    ),
    Measure.LEGT: (
        torch.tensor(
            [
                [-1, r3, -r5, r7],
                [-r3, -3, r15, -r21],
                [-r5, -r15, -5, r35],
                [-r7, -r21, -r35, -7],
            ],
            dtype=torch.float64,
        ),
        torch.tensor([1, r3, r5, r7], dtype=torch.float64),
    ),
    Measure.LAGT: (
        -torch.tensor(
            [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float64
        ),
        torch.ones(4, dtype=torch.float64),
    ),
    Measure.FOURIER: (
        torch.tensor(
            [[-1, 0, -1, 0], [0, 0, 0, 0], [-1, 0, -1, TWO_PI], [0, 0, -TWO_PI, 0]],
            dtype=torch.float64,
        ),
        torch.tensor([1, 0, 1, 0], dtype=torch.float64),
    ),
}


@pytest.mark.parametrize("measure", list(Measure))
def test_matrices_match_closed_forms(measure):
    A, B = hippo(measure, 4)
    A_ref, B_ref = CLOSED_FORMS[measure]
    assert_close(A, A_ref, rtol=1e-14, atol=1e-14, what=f"{measure} A")
    assert_close(B, B_ref, rtol=1e-14, atol=1e-14, what=f"{measure} B")


@pytest.mark.parametrize("measure", list(Measure))
@pytest.mark.parametrize("N", [2, 8, 64])
def test_rank_correction_makes_a_normal_matrix(measure, N):
    A, _ = hippo(measure, N)
    P = rank_correction(measure, N)
    S = A + P.T @ P
    assert_close(S @ S.T, S.T @ S, rtol=1e-12, what="S S^T = S^T S")
    c = torch.diagonal(S)
    assert_close(c, c.mean().expand_as(c), rtol=1e-12, what="constant diagonal")


@pytest.mark.parametrize("measure", list(Measure))
@pytest.mark.parametrize("N", [2, 8, 64])
def test_nplr_reconstructs_the_matrices(measure, N):
    d = nplr(measure, N)
    assert d.Lambda.shape == (N // 2,) and d.V.shape == (N, N // 2) and d.B.shape == (N // 2,)
    V = torch.cat([d.V, d.V.conj()], -1)
    eye = torch.eye(N, dtype=torch.complex128)
    assert_close(V.conj().T @ V, eye, rtol=1e-12, what="V_full unitary")
    A, B = hippo(measure, N)
    A2, B2 = d.dense()
    assert_close(A2, A, rtol=1e-12, what=f"{measure} A from NPLR")
    assert_close(B2, B, rtol=1e-12, what=f"{measure} B from NPLR")
    assert torch.all(d.Lambda.imag >= 0) and torch.all(torch.diff(d.Lambda.imag) >= 0)


def test_nplr_real_parts():
    assert_close(
        nplr("legs", 16).Lambda.real, torch.full((8,), -0.5, dtype=torch.float64), rtol=1e-12
    )
    assert_close(
        nplr("lagt", 16).Lambda.real, torch.full((8,), -0.5, dtype=torch.float64), rtol=1e-12
    )
    assert float(nplr("legt", 16).Lambda.real.abs().max()) < 1e-12


def _legs_state_at_one(f, N: int, steps: int = 4000, t0: float = 1e-4) -> torch.Tensor:
    """Integrate the LegS ODE c' = (A c + B f(t)) / t from t0 to 1.

    In log-time τ = log t it is time-invariant, dc/dτ = A c + B f(e^τ), so the bilinear
    steps are one LTI recurrence: c(1) = Ā^K c(t0) + Σ_k Ā^{K-1-k} B̄ f_k.
    """
    A, B = hippo_legs(N)
    tau = np.linspace(math.log(t0), 0.0, steps + 1)
    dA, dB = bilinear_dense(A, B, torch.tensor(tau[1] - tau[0], dtype=torch.float64))
    f_mid = torch.tensor(f(np.exp((tau[1:] + tau[:-1]) / 2)))
    c0 = torch.zeros(N, dtype=torch.float64)
    c0[0] = f(t0 / 2)  # the history up to t0 is a constant: only the 0th coefficient
    return krylov_state(dA, dB, f_mid) + torch.linalg.matrix_power(dA, steps) @ c0


def test_legs_state_approximates_the_history_better_as_n_grows():
    """Online function approximation: at t = 1 the LegS state holds the Legendre
    coefficients of f on [0, 1]: f(x) ≈ Σ_n c_n sqrt(2n+1) P_n(2x - 1)."""

    def f(x):
        return np.sin(6 * x) + x * np.cos(3 * x)

    x = np.linspace(0, 1, 401)
    errors = []
    for N in (2, 4, 8, 16):
        c = _legs_state_at_one(f, N).numpy()
        rec = legendre.legval(2 * x - 1, c * np.sqrt(2 * np.arange(N) + 1))
        errors.append(float(np.sqrt(np.mean((rec - f(x)) ** 2))))
    assert all(b < 0.2 * a for a, b in itertools.pairwise(errors)), errors
    assert errors[0] > 0.1 and errors[-1] < 1e-4, errors


def test_s4d_initialisations():
    re, im = s4d_lin(4)
    assert torch.equal(re, torch.full((4,), -0.5))
    assert_close(im, math.pi * torch.arange(4.0), rtol=0)
    re, im = s4d_inv(4, dtype=torch.float64)
    n = torch.arange(4, dtype=torch.float64)
    assert_close(im, 8 / math.pi * (8 / (2 * n + 1) - 1), rtol=1e-14)
    assert torch.equal(re, torch.full((4,), -0.5, dtype=torch.float64))
    re, im = s4d_legs(4, dtype=torch.float64)
    lam = nplr(Measure.LEGS, 8).Lambda
    assert_close(torch.complex(re, im), lam, rtol=1e-14)
    re, im = s4d_real(3)
    assert torch.equal(re, torch.tensor([-1.0, -2.0, -3.0])) and torch.equal(im, torch.zeros(3))
    for kind in S4DInit:
        re, im = s4d_init(kind, 5)
        assert re.shape == im.shape == (5,) and torch.all(re < 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"measure: expected one of \['legs'"):
        as_measure("legx")
    with pytest.raises(ValueError, match=r"init: expected one of \['lin'"):
        s4d_init("linear", 4)
    with pytest.raises(ValueError, match=r"N: expected an even state size"):
        nplr("legs", 5)
    with pytest.raises(ValueError, match=r"N: the Fourier measure needs an even N"):
        hippo("fourier", 3)
    with pytest.raises(ValueError, match=r"N: expected an int >= 1, got 0"):
        hippo("legs", 0)
