"""LRU: the exponential parameterisation is stable, the ring initialisation, γ
normalisation, and the zero-order-hold reading of dt (arXiv 2303.06349)."""

from __future__ import annotations

import math

import pytest
import torch

from rnnx.layers import LRU
from tests.conftest import assert_close


def test_ring_initialisation_and_gamma_normalisation():
    torch.manual_seed(0)
    layer = LRU(4, d_state=512, r_min=0.4, r_max=0.9, max_phase=math.pi / 4)
    lam = torch.exp(layer.log_lambda().detach().to(torch.complex128))
    mod = lam.abs()
    assert float(mod.min()) >= 0.4 - 1e-6 and float(mod.max()) <= 0.9 + 1e-6
    # |λ|^2 is uniform on [r_min^2, r_max^2]: its mean is the midpoint
    assert abs(float((mod**2).mean()) - (0.16 + 0.81) / 2) < 0.03
    assert float(lam.angle().min()) >= 0 and float(lam.angle().max()) <= math.pi / 4 + 1e-6
    gamma = torch.exp(layer.gamma_log.double())
    assert_close(gamma, torch.sqrt(1 - mod**2), rtol=1e-5)


def test_the_exponential_parameterisation_is_always_stable():
    layer = LRU(2, d_state=64)
    with torch.no_grad():
        layer.nu_log.normal_(0, 5)
        layer.theta_log.normal_(0, 5)
    assert float(torch.exp(layer.log_lambda().detach()).abs().max()) < 1


def test_gamma_keeps_the_state_variance_of_white_noise_at_one():
    """With γ = sqrt(1-|λ|^2) and B̄ = γ B, a mode driven by unit white noise through
    unit-norm input weights has stationary variance 1 whatever |λ| is (the paper's point)."""
    torch.manual_seed(0)
    layer = LRU(1, d_state=3, r_min=0.5, r_max=0.99).double()
    with torch.no_grad():
        layer.B.zero_()
        layer.B[:, 0, 0] = 1.0  # B = 1 for every mode
        layer.theta_log.fill_(-20.0)  # real λ
    u = torch.randn(1024, 600, 1, dtype=torch.float64)  # |λ|^1200 < 1e-5: stationary
    with torch.no_grad():
        _, s = layer(u)
    var = s.abs().square().mean(0)
    # 1024 samples: the estimate's relative standard error is sqrt(2/1024) = 0.044
    assert_close(var, torch.ones(3, dtype=torch.float64), rtol=0.15, atol=0.15)


def test_dt_one_is_exactly_the_discrete_lru():
    torch.manual_seed(0)
    layer = LRU(3, d_state=5).double()
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    with torch.no_grad():
        assert_close(layer(x, dt=1.0)[0], layer(x)[0], rtol=1e-14)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"r_min": 0.9, "r_max": 0.5}, r"r_min, r_max: expected 0 <= r_min < r_max <= 1"),
        ({"max_phase": 7.0}, r"max_phase: expected a value in \(0, 2π\]"),
        ({"d_state": 0}, r"d_state: expected an int >= 1"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        LRU(4, **kw)
