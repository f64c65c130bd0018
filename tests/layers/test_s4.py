"""S4: the Cauchy kernel is the impulse response of the O(N r) DPLR recurrence, the dense
realisation matches the step, every measure (rank 1 and 2) runs (arXiv 2111.00396)."""

from __future__ import annotations

import pytest
import torch

from rnnx.layers import S4
from rnnx.layers.s4 import half_to_real, real_to_half
from rnnx.ops.conv import dplr_bilinear_kernel
from rnnx.ssm.hippo import Measure, nplr
from tests.conftest import assert_close

f64 = torch.float64


def _layer(**kw):
    torch.manual_seed(0)
    return S4(3, **{"d_state": 8, **kw}).double().eval()


def test_cauchy_kernel_is_the_impulse_response_of_the_dplr_step():
    layer = _layer(channels=2)
    step = torch.exp(layer.log_dt)
    Lambda, P, B, C = layer.ssm()
    dA, _ = layer.dense(step)
    L = 16
    Cr = torch.cat([2 * C.real, -2 * C.imag], -1)
    Ct_r = Cr - Cr @ torch.linalg.matrix_power(dA, L)
    C_tilde = torch.complex(Ct_r[..., :4], -Ct_r[..., 4:]) / 2
    K = dplr_bilinear_kernel(C_tilde, Lambda, P, P, B, step, L)
    stepper = layer.stepper(step)
    x = torch.zeros(3, 4, dtype=torch.complex128)
    for t in range(L):
        u = torch.full((3,), 1.0 if t == 0 else 0.0, dtype=f64)
        x = stepper(x, u)
        assert_close(2 * torch.einsum("hmn,hn->hm", C, x).real, K[..., t], rtol=1e-12)


def test_dense_realisation_matches_the_step():
    layer = _layer()
    step = torch.exp(layer.log_dt)
    dA, dB = layer.dense(step)
    x = torch.randn(2, 3, 4, dtype=torch.complex128)
    u = torch.randn(2, 3, dtype=f64)
    out = layer.stepper(step)(x, u)
    ref = (dA @ half_to_real(x).unsqueeze(-1)).squeeze(-1) + dB * u.unsqueeze(-1)
    assert_close(out, real_to_half(ref), rtol=1e-12)


def test_initialisation_is_the_nplr_of_hippo():
    layer = S4(2, d_state=8, measure="legs")
    d = nplr("legs", 8)
    Lambda, P, B, _ = layer.ssm()
    assert_close(Lambda[0].to(torch.complex128), d.Lambda, rtol=1e-6)
    assert_close(P[1].to(torch.complex128), d.P, rtol=1e-6)
    assert_close(B[0].to(torch.complex128), d.B, rtol=1e-6)
    for p in (layer.log_dt, layer.log_A_real, layer.A_imag, layer.P, layer.B):
        assert p._optim == {"lr": 1e-3, "weight_decay": 0.0}


@pytest.mark.parametrize("measure", list(Measure))
def test_every_measure_runs_in_all_modes(measure):
    layer = _layer(measure=measure)
    assert layer.rank == (2 if measure is Measure.LEGT else 1)
    x = torch.randn(2, 21, 3, dtype=f64)
    s0 = 0.1 * torch.randn(2, 3, 4, dtype=torch.complex128)
    outs = {}
    with torch.no_grad():
        for mode in layer.modes:
            with layer.using_mode(mode):
                outs[mode] = layer(x, s0)
    for mode in ("conv", "scan"):
        assert_close(outs[mode][0], outs["recurrent"][0], rtol=1e-10, what=mode)
        assert_close(outs[mode][1], outs["recurrent"][1], rtol=1e-10, what=mode)


def test_extra_rank_is_zero_initialised():
    layer = S4(2, d_state=6, rank=3)
    assert layer.P.shape == (2, 3, 3, 2) and torch.all(layer.P[:, 1:] == 0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"d_state": 7}, r"d_state: expected an even number"),
        ({"measure": "legt", "rank": 1}, r"rank: the legt measure needs rank >= 2"),
        ({"channels": 0}, r"channels: expected an int >= 1"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        S4(4, **kw)
