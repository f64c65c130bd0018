"""Discretisation: ZOH, bilinear and GBT for diagonal, dense and DPLR A, with the step
per feature or per time step (LSSL arXiv 2110.13985, S4 arXiv 2111.00396)."""

from __future__ import annotations

import pytest
import torch

from rnnx.ssm.discretize import (
    DPLRStep,
    bilinear_diagonal,
    discretize_diagonal,
    dplr_matvec,
    dplr_solve,
    gbt_dense,
    gbt_diagonal,
    gbt_dplr_step,
    zoh_dense,
    zoh_diagonal,
)
from rnnx.ssm.hippo import hippo_legs, nplr
from tests.conftest import assert_close

f64, c128 = torch.float64, torch.complex128


def _gbt_reference(A, B, dt, alpha):
    """Ā = (I - αΔA)^{-1}(I + (1-α)ΔA), B̄ = (I - αΔA)^{-1} ΔB by explicit inverses."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    inv = torch.linalg.inv(eye - alpha * dt * A)
    return inv @ (eye + (1 - alpha) * dt * A), inv @ (dt * B)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_gbt_dense_matches_the_formula(alpha):
    A, B = hippo_legs(6)
    dA, dB = gbt_dense(A, B, torch.tensor(0.07, dtype=f64), alpha)
    rA, rB = _gbt_reference(A, B, 0.07, alpha)
    assert_close(dA, rA, rtol=1e-12)
    assert_close(dB, rB, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_gbt_diagonal_matches_dense(alpha):
    A = torch.complex(-torch.rand(5, dtype=f64), torch.randn(5, dtype=f64))
    dA, dB = gbt_diagonal(A, torch.tensor(0.3, dtype=f64), alpha)
    rA, rB = _gbt_reference(torch.diag(A), torch.ones(5, dtype=c128), 0.3, alpha)
    assert_close(dA, rA.diagonal(), rtol=1e-12)
    assert_close(dB, rB, rtol=1e-12)
    if alpha == 0.5:
        b = bilinear_diagonal(A, torch.tensor(0.3, dtype=f64))
        assert_close(b[0], dA, rtol=0) and assert_close(b[1], dB, rtol=0)


def test_zoh_dense_matches_exponential_and_integral():
    A, B = hippo_legs(4)
    dA, dB = zoh_dense(A, B, 0.2)
    assert_close(dA, torch.linalg.matrix_exp(0.2 * A), rtol=1e-12)
    s = torch.linspace(0, 0.2, 20001, dtype=f64)
    integral = torch.trapezoid(torch.linalg.matrix_exp(s[:, None, None] * A) @ B, s, dim=0)
    assert_close(dB, integral, rtol=1e-8)


def test_zoh_dense_on_a_diagonal_matches_zoh_diagonal():
    A = -torch.rand(4, dtype=f64) - 0.1
    dA, dB = zoh_dense(torch.diag(A), torch.ones(4, dtype=f64), 0.3)
    rA, rB = zoh_diagonal(A, torch.tensor(0.3, dtype=f64))
    assert_close(dA.diagonal(), rA, rtol=1e-12)
    assert_close(dB, rB, rtol=1e-12)
    assert_close(discretize_diagonal(A, torch.tensor(0.3, dtype=f64), "zoh")[0], rA, rtol=0)


@pytest.mark.parametrize("fn", [zoh_dense, gbt_dense], ids=["zoh", "gbt"])
def test_dense_steps_per_feature_and_per_time_step(fn):
    """dt broadcasts against A's batch: (H,) per feature, (B, L, H) per time step."""
    A, B = hippo_legs(3)
    dt = 0.01 + torch.rand(2, 5, 4, dtype=f64)  # (batch, length, features)
    dA, dB = fn(A, B, dt)
    assert dA.shape == (2, 5, 4, 3, 3) and dB.shape == (2, 5, 4, 3)
    one_A, one_B = fn(A, B, dt[1, 3, 2])
    assert_close(dA[1, 3, 2], one_A, rtol=1e-13)
    assert_close(dB[1, 3, 2], one_B, rtol=1e-13)


def _dplr_system(N=6, r=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    Lambda = torch.complex(
        -torch.rand(N, generator=g, dtype=f64), torch.randn(N, generator=g, dtype=f64)
    )
    P = torch.randn(r, N, generator=g, dtype=c128)
    Q = torch.randn(r, N, generator=g, dtype=c128)
    B = torch.randn(N, generator=g, dtype=c128)
    return Lambda, P, Q, B


def test_dplr_matvec_and_solve_match_dense():
    Lambda, P, Q, _B = _dplr_system()
    A = torch.diag(Lambda) - P.T @ Q.conj()
    x = torch.randn(3, 6, dtype=c128)
    assert_close(dplr_matvec(Lambda, P, Q, x), x @ A.T, rtol=1e-12)
    d = 1 + torch.rand(6, dtype=f64) + 0j
    c = torch.tensor(0.4, dtype=f64)
    y = torch.randn(3, 6, dtype=c128)
    M = torch.diag(d) + c * P.T @ Q.conj()
    assert_close(dplr_solve(d, P, Q, c, y), torch.linalg.solve(M, y.T).T, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_dplr_step_matches_dense_gbt(alpha):
    Lambda, P, Q, B = _dplr_system()
    A = torch.diag(Lambda) - P.T @ Q.conj()
    dt = torch.tensor([[0.05], [0.2]], dtype=f64)  # two steps, one per batch row
    dA, dB = gbt_dense(A, B, dt[:, 0], alpha)
    x = torch.randn(2, 6, dtype=c128)
    u = torch.randn(2, dtype=f64)
    out = gbt_dplr_step(Lambda, P, Q, B, dt, x, u, alpha=alpha)
    ref = (dA @ x.unsqueeze(-1)).squeeze(-1) + dB * u.unsqueeze(-1)
    assert_close(out, ref, rtol=1e-12)


def test_conjugate_symmetric_dplr_step_is_the_real_system():
    """With conj_sym the half vector x stands for [x, conj(x)] of a real system of size
    2N; the step must equal the bilinear step of that real system (HiPPO-LegS here)."""
    d = nplr("legs", 8)
    dt = torch.tensor([0.1], dtype=f64)
    step = DPLRStep(d.Lambda, d.P, d.P, d.B, dt, conj_sym=True)
    A, B = d.dense()  # the real A, B in the original coordinates: x_real = 2 Re(V x)
    dA, dB = gbt_dense(A, B, dt[0], 0.5)
    x = torch.randn(4, dtype=c128)
    u = torch.tensor(0.7, dtype=f64)
    half = step(x, u)
    real_in = 2 * (d.V @ x).real
    assert_close(2 * (d.V @ half).real, dA @ real_in + dB * u, rtol=1e-12)


def test_bad_alpha():
    with pytest.raises(ValueError, match=r"alpha: expected a value in \[0, 1\], got 1.5"):
        gbt_dense(torch.eye(2), torch.ones(2), 0.1, 1.5)
    with pytest.raises(ValueError, match=r"discretization: expected one of"):
        discretize_diagonal(torch.ones(2), torch.ones(1), "euler")
