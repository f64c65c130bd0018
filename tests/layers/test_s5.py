"""S5: conjugate symmetry is exact, the HiPPO-N blocks, discretisations (arXiv 2208.04933)."""

from __future__ import annotations

import pytest
import torch

from rnnx.layers import S5
from rnnx.ssm.hippo import nplr
from tests.conftest import assert_close

f64 = torch.float64


def test_conjugate_symmetry_halves_the_state_and_keeps_the_function():
    """With the same real B, C and steps, storing one of each conjugate pair (y = 2 Re C̃x)
    computes exactly what the full complex system computes (y = Re C̃x)."""
    torch.manual_seed(0)
    half = S5(4, d_state=8, conj_sym=True).double().eval()
    torch.manual_seed(0)
    full = S5(4, d_state=8, conj_sym=False).double().eval()
    with torch.no_grad():
        full.log_dt.copy_(torch.cat([half.log_dt, half.log_dt]))
        full.D.copy_(half.D)
        full.output.load_state_dict(half.output.state_dict())
    assert half.init_state(2).shape == (2, 4) and full.init_state(2).shape == (2, 8)
    x = torch.randn(2, 15, 4, dtype=f64)
    with torch.no_grad():
        for mode in half.modes:
            half.mode = full.mode = mode
            assert_close(half(x)[0], full(x)[0], rtol=1e-10, what=mode)


def test_blocks_repeat_the_hippo_n_eigenvalues():
    layer = S5(3, d_state=16, blocks=4)
    Lambda = layer.ssm()[0].to(torch.complex128)
    block = nplr("legs", 4).Lambda
    assert_close(Lambda, block.repeat(4), rtol=1e-6)
    assert layer.log_dt.shape == (8,) and layer.B.shape == (8, 3, 2) and layer.C.shape == (3, 8, 2)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_modes_agree_for_both_discretizations(discretization):
    torch.manual_seed(0)
    layer = S5(3, d_state=8, discretization=discretization).double().eval()
    x = torch.randn(2, 17, 3, dtype=f64)
    s0 = 0.1 * torch.randn(2, 4, dtype=torch.complex128)
    dt = 0.3 + torch.rand(2, 17, dtype=f64)
    with torch.no_grad():
        y1, s1 = layer(x, s0, dt=dt)
        with layer.using_mode("recurrent"):
            y2, s2 = layer(x, s0, dt=dt)
    assert_close(y1, y2, rtol=1e-10)
    assert_close(s1, s2, rtol=1e-10)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"d_state": 7}, r"d_state: expected an even number"),
        ({"d_state": 8, "blocks": 3}, r"blocks: expected d_state / blocks to be an even integer"),
        ({"discretization": "foh"}, r"discretization: expected one of"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        S5(4, **kw)
