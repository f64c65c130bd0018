from __future__ import annotations

import pytest
import torch

from rnnx.ops.short_conv import causal_conv1d, causal_conv1d_reference
from tests.conftest import assert_close


@pytest.mark.parametrize("K", [1, 2, 4])
def test_matches_reference_with_state_and_grads(K):
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, K, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, K - 1, 3, dtype=torch.float64, requires_grad=True)
    outs = [f(x, w, b, s) for f in (causal_conv1d, causal_conv1d_reference)]
    for got, ref in zip(outs[0], outs[1]):
        assert_close(got, ref, rtol=1e-12)
    gw = torch.randn(2, 9, 3, dtype=torch.float64)
    gs = torch.randn(2, K - 1, 3, dtype=torch.float64)
    grads = [
        torch.autograd.grad((y * gw).sum() + (st * gs).sum(), [x, w, b, s], allow_unused=True)
        for y, st in outs
    ]
    for g1, g2, wrt in zip(*grads, [x, w, b, s]):
        zero = torch.zeros_like(wrt)  # unused inputs (the empty state at K=1) get no grad
        assert_close(zero if g1 is None else g1, zero if g2 is None else g2, rtol=1e-12)


@pytest.mark.parametrize("split", [1, 2, 5])
def test_pieces_with_carried_state_equal_one(split):
    x = torch.randn(2, 8, 3, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64)
    y, s = causal_conv1d(x, w)
    y1, s1 = causal_conv1d(x[:, :split], w)
    y2, s2 = causal_conv1d(x[:, split:], w, state=s1)
    assert_close(torch.cat([y1, y2], 1), y, rtol=1e-12)
    assert_close(s2, s, rtol=0)


def test_lengths_take_the_state_before_padding():
    x = torch.randn(2, 8, 3, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64)
    s0 = torch.randn(2, 3, 3, dtype=torch.float64)
    _, s = causal_conv1d(x, w, state=s0, lengths=torch.tensor([8, 2]))
    _, s_short = causal_conv1d(x[1:, :2], w, state=s0[1:])
    assert_close(s[1], s_short[0], rtol=0)
    _, s_ref = causal_conv1d_reference(x, w, state=s0, lengths=torch.tensor([8, 2]))
    assert_close(s, s_ref, rtol=0)


def test_errors():
    with pytest.raises(ValueError, match=r"weight: expected \(3, kernel_size\)"):
        causal_conv1d(torch.randn(2, 5, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"state: expected shape \(2, 1, 3\)"):
        causal_conv1d(torch.randn(2, 5, 3), torch.randn(3, 2), state=torch.randn(2, 2, 3))
