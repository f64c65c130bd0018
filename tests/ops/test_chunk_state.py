"""rnnx.ops.chunk_state.chunk_state_scan against a plain loop: forward, every gradient
(the initial state's included), elementwise / matrix / no decay, both directions."""

from __future__ import annotations

import pytest
import torch

from rnnx.ops.chunk_state import chunk_state_scan
from tests.conftest import assert_close


def _loop(decay, update, initial, matrix=False, reverse=False):
    """The oracle: the recurrence as written, under plain autograd."""
    n = update.shape[1]
    order = range(n - 1, -1, -1) if reverse else range(n)
    state, entering = initial, [None] * n
    for c in order:
        entering[c] = state
        if decay is None:
            state = state + update[:, c]
        elif matrix:
            state = decay[:, c] @ state + update[:, c]
        else:
            state = decay[:, c] * state + update[:, c]
    return torch.stack(entering, 1), state


# (decay shape, update shape, matrix): per-head scalars, per-key vectors, a decay shared by
# the batch (broadcast), block matrices, no decay
CASES = {
    "scalar": ((2, 5, 3, 1, 1), (2, 5, 3, 4, 2), False),
    "vector": ((2, 5, 3, 4, 1), (2, 5, 3, 4, 2), False),
    "broadcast": ((1, 5, 3, 1, 2), (2, 5, 3, 4, 2), False),
    "matrix": ((2, 5, 3, 4, 4), (2, 5, 3, 4, 2), True),
    "none": (None, (2, 5, 3, 4, 2), False),
}


def _inputs(case, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    d_shape, u_shape, matrix = CASES[case]
    decay = None if d_shape is None else torch.rand(d_shape, generator=g, dtype=dtype) * 0.9
    if matrix:
        decay = decay / d_shape[-1]
    update = torch.randn(u_shape, generator=g, dtype=dtype)
    initial = torch.randn((u_shape[0], *u_shape[2:]), generator=g, dtype=dtype)
    return decay, update, initial, matrix


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_loop_with_gradients(case, reverse):
    decay, update, initial, matrix = _inputs(case)
    leaves = [t.requires_grad_() for t in (decay, update, initial) if t is not None]
    got = chunk_state_scan(decay, update, initial, matrix=matrix, reverse=reverse)
    ref = _loop(decay, update, initial, matrix, reverse)
    for a, b, what in zip(got, ref, ("entering", "final")):
        assert_close(a, b, rtol=1e-12, what=what)
    g = torch.Generator().manual_seed(1)
    w = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in ref]
    d_got = torch.autograd.grad(sum((a * b).sum() for a, b in zip(got, w)), leaves)
    d_ref = torch.autograd.grad(sum((a * b).sum() for a, b in zip(ref, w)), leaves)
    for a, b in zip(d_got, d_ref):
        assert_close(a, b, rtol=1e-12, what="gradient")


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", ["scalar", "broadcast", "matrix"])
def test_gradcheck(case, reverse):
    decay, update, initial, matrix = _inputs(case)
    leaves = tuple(t.requires_grad_() for t in (decay, update, initial))
    assert torch.autograd.gradcheck(
        lambda d, u, h: chunk_state_scan(d, u, h, matrix=matrix, reverse=reverse), leaves
    )


def test_only_the_final_state_or_only_the_entering_states_used():
    decay, update, initial, _ = _inputs("scalar")
    for pick in (0, 1):
        leaves = [t.requires_grad_() for t in (decay, update, initial)]
        got = chunk_state_scan(*leaves)[pick].sum()
        ref = _loop(*leaves)[pick].sum()
        for a, b in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(ref, leaves)):
            assert_close(a, b, rtol=1e-12)


def test_complex_gradients_follow_torch_convention():
    g = torch.Generator().manual_seed(2)
    decay = torch.randn(2, 4, 3, generator=g, dtype=torch.complex128) * 0.5
    update = torch.randn(2, 4, 3, generator=g, dtype=torch.complex128)
    initial = torch.randn(2, 3, generator=g, dtype=torch.complex128)
    leaves = (decay.requires_grad_(), update.requires_grad_(), initial.requires_grad_())
    assert torch.autograd.gradcheck(lambda d, u, h: chunk_state_scan(d, u, h), leaves)


def test_no_grad_path_equals_autograd_path():
    decay, update, initial, _ = _inputs("vector")
    with torch.no_grad():
        a = chunk_state_scan(decay, update, initial)
    b = chunk_state_scan(decay.requires_grad_(), update, initial)
    for x, y in zip(a, b):
        assert_close(x, y.detach(), rtol=0)
