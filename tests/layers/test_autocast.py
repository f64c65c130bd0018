"""Every layer runs under CPU autocast (bf16 mixed precision, as `--precision bf16-mixed`).

Under autocast the projections run in bfloat16; the recurrences and their states must
stay in float32 (native kernels and FFTs have no bf16 path, and a bf16 state would lose
the sequence's memory). The output is compared with the float32 forward at a tolerance
that bf16 projections (8 bits of mantissa) can meet.
"""

from __future__ import annotations

import pytest
import torch

import rnnx.layers as layers
from rnnx._tree import leaves


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_bf16_autocast_forward_backward(name):
    torch.manual_seed(0)
    cls = layers.get(name)
    layer = cls(32, **cls.tiny_config()).eval()
    x = torch.randn(2, 37, 32)
    y32, s32 = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, s = layer(x)
    assert y.shape == y32.shape
    for a, a32 in zip(leaves(s), leaves(s32), strict=True):
        assert a.dtype == a32.dtype, f"state dtype {a.dtype} under autocast, {a32.dtype} without"
    err = (y.float() - y32).norm() / y32.norm().clamp_min(1e-6)
    assert err < 0.1, f"{name}: relative error {err:.3g} under bf16 autocast"
    y.float().square().sum().backward()
    grads = [p.grad for p in layer.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
