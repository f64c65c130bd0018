"""S4D: the kernel is the impulse response of the recurrence; discretisation; init."""

from __future__ import annotations

import math

import pytest
import torch

from rnnx.layers import S4D
from rnnx.ops.conv import causal_conv_fft, vandermonde_kernel
from rnnx.ssm.discretize import zoh_diagonal
from rnnx.ssm.hippo import S4DInit, s4d_init, s4d_lin
from tests.conftest import assert_close


def test_vandermonde_kernel_is_the_impulse_response():
    torch.manual_seed(0)
    layer = S4D(3, d_state=6).double()
    A, C = layer._A(), layer._C()
    dA, dB = zoh_diagonal(A, torch.exp(layer.log_dt).unsqueeze(-1))
    k = vandermonde_kernel(C * dB, torch.log(dA), 17)
    s = torch.zeros(3, 3, dtype=torch.complex128)
    for t in range(17):
        s = dA * s + dB * (1.0 if t == 0 else 0.0)
        assert_close(2 * (s * C).sum(-1).real, k[:, t], rtol=1e-12)


def test_zoh_matches_matrix_exponential():
    A = torch.complex(-torch.rand(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
    dt = torch.tensor(0.3, dtype=torch.float64)
    dA, dB = zoh_diagonal(A, dt)
    assert_close(dA, torch.linalg.matrix_exp(torch.diag(dt * A)).diagonal(), rtol=1e-12)
    # B̄ = ∫_0^Δ exp(A s) ds, by quadrature
    s = torch.linspace(0, 0.3, 20001, dtype=torch.float64)
    integral = torch.trapezoid(torch.exp(A[:, None] * s), s, dim=-1)
    assert_close(dB, integral, rtol=1e-8)


def test_causal_conv_fft_matches_direct_sum():
    u = torch.randn(2, 9, 3, dtype=torch.float64)
    k = torch.randn(3, 9, dtype=torch.float64)
    y = causal_conv_fft(u, k)
    direct = torch.zeros_like(u)
    for t in range(9):
        for s in range(t + 1):
            direct[:, t] += k[:, t - s] * u[:, s]
    assert_close(y, direct, rtol=1e-12)


def test_s4d_lin_initialisation():
    re, im = s4d_lin(4)
    assert torch.equal(re, torch.full((4,), -0.5))
    assert_close(im, math.pi * torch.arange(4.0), rtol=0)
    layer = S4D(2, d_state=8)
    assert_close(layer._A().real, torch.full((2, 4), -0.5), rtol=1e-6)


def test_log_dt_initial_range():
    layer = S4D(1000, d_state=2, dt_min=1e-3, dt_max=1e-1)
    dt = layer.log_dt.exp()
    assert dt.min() >= 1e-3 and dt.max() <= 1e-1


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"d_state": 5}, "d_state: expected an even number"),
        ({"dt_min": 0.5, "dt_max": 0.1}, "dt_min, dt_max"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        S4D(4, **kw)


@pytest.mark.parametrize("init", list(S4DInit))
def test_initialisations_set_a(init):
    layer = S4D(2, d_state=8, init=init)
    re, im = s4d_init(init, 4)
    assert_close(layer._A().real.detach(), re.expand(2, 4), rtol=1e-6)
    assert_close(layer._A().imag.detach(), im.expand(2, 4), rtol=1e-6)
    assert layer.init is S4DInit(init)


def test_default_is_s4d_lin_and_unidirectional():
    layer = S4D(3)
    assert layer.init is S4DInit.LIN and not layer.bidirectional
    assert not hasattr(layer, "C_rev")


def test_bad_init():
    with pytest.raises(ValueError, match=r"init: expected one of \['lin', 'inv', 'legs', 'real'\]"):
        S4D(4, init="hippo")


def test_loads_checkpoints_that_name_the_projection_out_proj():
    """S4D's GLU projection was ``out_proj`` before it used the shared output block."""
    torch.manual_seed(0)
    layer = S4D(3, d_state=4)
    old = {k.replace("output.proj.", "out_proj."): v for k, v in layer.state_dict().items()}
    assert "out_proj.weight" in old
    fresh = S4D(3, d_state=4)
    fresh.load_state_dict(old, strict=True)
    x = torch.randn(2, 5, 3)
    assert torch.equal(fresh(x)[0], layer(x)[0])
