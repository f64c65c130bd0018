"""Every layer gives the same result with 1 and 2 threads (no races in parallel kernels)."""

from __future__ import annotations

import pytest
import torch

import rnnx.layers as layers
from rnnx._tree import leaves
from tests.conftest import assert_close


@pytest.fixture
def threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_two_threads_match_one(name, threads):
    torch.manual_seed(0)
    cls = layers.get(name)
    layer = cls(32, **cls.tiny_config()).eval()
    x = torch.randn(4, 96, 32, requires_grad=True)
    results = []
    for n in (1, 2):
        torch.set_num_threads(n)
        y, s = layer(x)
        (gx,) = torch.autograd.grad(y.square().sum(), x)
        results.append((y.detach(), [t.detach() for t in leaves(s)], gx))
    (y1, s1, g1), (y2, s2, g2) = results
    assert_close(y2, y1, rtol=1e-4, what="outputs")
    for a, b in zip(s2, s1):
        assert_close(a, b, rtol=1e-4, what="final state")
    assert_close(g2, g1, rtol=1e-4, what="input gradient")
