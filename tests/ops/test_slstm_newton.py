"""rnnx.ops.slstm_newton: sLSTM by quasi-Newton iterations against the sequential loop.

The hand-written unit Jacobian against torch.func.jacrev; outputs, final state (h, c, n,
m) and every gradient (inputs, recurrent weights, the initial state's four parts, a zero
normaliser included) against :func:`rnnx.ops.rnn.rnn_sequence_reference`, with padding
and in reverse; gradcheck in float64; float32 at the default tolerance; the fallback.
"""

from __future__ import annotations

import math

import pytest
import torch

from rnnx.ops.newton import NewtonWarning
from rnnx.ops.rnn import rnn_sequence_reference
from rnnx.ops.slstm_newton import slstm_cell_reparam, slstm_newton, slstm_unit_jacobian
from tests.conftest import assert_close

H, NH, B, T = 8, 2, 3, 19


def _weights(dtype=torch.float64, scale=1.0, seed=0, heads=NH):
    g = torch.Generator().manual_seed(seed)
    w = (torch.rand(4 * H, H // heads, generator=g, dtype=dtype) * 2 - 1) * scale / math.sqrt(H)
    gx = torch.randn(B, T, 4 * H, generator=g, dtype=dtype)
    gx[..., H : 2 * H] += torch.linspace(3, 6, H, dtype=dtype)  # the layer's forget bias
    return gx, w


def _state(dtype=torch.float64, zero=False, seed=1, heads=NH):
    if zero:
        return tuple(torch.zeros(B, H, dtype=dtype) for _ in range(4))
    gx, w = _weights(dtype, seed=seed, heads=heads)
    z = torch.zeros(B, H, dtype=dtype)
    _, s = rnn_sequence_reference("slstm", gx[:, :5], w, (z, z, z, z), num_heads=heads)
    return s


def test_unit_jacobian_is_the_diagonal_blocks_of_jacrev():
    gx, w = _weights()
    s = torch.randn(B, 3 * H, dtype=torch.float64)
    s[:, 2::3] = s[:, 2::3] * 3  # nu of any sign and size
    val, jac = slstm_unit_jacobian(s, gx[:, 0], w, NH)
    assert_close(val, slstm_cell_reparam(s, gx[:, 0], w, NH), rtol=1e-14, what="value")
    full = torch.func.vmap(torch.func.jacrev(lambda si, gi: slstm_cell_reparam(si, gi, w, NH)))(
        s, gx[:, 0]
    )  # (B, 3H, 3H)
    blocks = full.unflatten(1, (H, 3)).unflatten(3, (H, 3))  # (B, H, 3, H, 3)
    diag = torch.stack([blocks[:, j, :, j, :] for j in range(H)], 1)
    assert_close(jac, diag, rtol=1e-12, what="unit Jacobian")


def _grads(fn, gx, w, s0):
    gx = gx.clone().requires_grad_()
    w = w.clone().requires_grad_()
    s0 = tuple(t.clone().requires_grad_() for t in s0)
    y, final = fn(gx, w, s0)
    g = torch.Generator().manual_seed(7)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    for t in final:
        loss = loss + (t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
    return y, final, torch.autograd.grad(loss, [gx, w, *s0])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("zero_state", [False, True], ids=["state", "zero-state"])
def test_matches_the_sequential_loop(reverse, padded, zero_state):
    gx, w = _weights()
    s0 = _state(zero=zero_state)
    lengths = torch.tensor([T, 0, 7]) if padded else None
    infos = []

    def newton(gx, w, s0):
        y, final, info = slstm_newton(
            gx, w, s0, lengths=lengths, reverse=reverse, num_heads=NH, tol=1e-12, max_iter=T
        )
        infos.append(info)
        return y, final

    def seq(gx, w, s0):
        return rnn_sequence_reference(
            "slstm", gx, w, s0, lengths=lengths, reverse=reverse, num_heads=NH
        )

    y, final, g = _grads(newton, gx, w, s0)
    y_ref, final_ref, g_ref = _grads(seq, gx, w, s0)
    assert infos[0].converged and not infos[0].fell_back
    assert_close(y, y_ref, rtol=1e-9, what="outputs")
    for name, a, b in zip("hcnm", final, final_ref, strict=True):
        assert_close(a, b, rtol=1e-9, what=f"final {name}")
    names = ["gx", "weight_hh", "h0", "c0", "n0", "m0"]
    for name, a, b in zip(names, g, g_ref, strict=True):
        assert_close(a, b, rtol=1e-8, what=f"gradient of {name}")


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    gx = torch.randn(2, 5, 4 * 4, generator=g, dtype=torch.float64)
    w = torch.randn(4 * 4, 2, generator=g, dtype=torch.float64) / 2
    s0 = (
        torch.randn(2, 4, generator=g, dtype=torch.float64) / 2,
        torch.randn(2, 4, generator=g, dtype=torch.float64),
        torch.rand(2, 4, generator=g, dtype=torch.float64) + 0.5,
        torch.randn(2, 4, generator=g, dtype=torch.float64),
    )

    def fn(gx, w, h, c, n, m):
        y, final, _ = slstm_newton(gx, w, (h, c, n, m), num_heads=2, tol=1e-14, max_iter=10)
        return (y, *final)

    inputs = [t.clone().requires_grad_() for t in (gx, w, *s0)]
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-7)


def test_float32_at_the_default_tolerance():
    gx, w = _weights(torch.float32, heads=1)
    s0 = _state(torch.float32, zero=True)
    y, final, info = slstm_newton(gx, w, s0, num_heads=1)
    y_ref, final_ref = rnn_sequence_reference("slstm", gx, w, s0, num_heads=1)
    assert info.converged and info.iterations <= 16
    assert_close(y, y_ref, rtol=1e-4, what="outputs")
    for name, a, b in zip("hcnm", final, final_ref, strict=True):
        assert_close(a, b, rtol=1e-4, what=f"final {name}")


def test_one_step_runs_no_iteration():
    gx, w = _weights()
    s0 = _state()
    y, final, info = slstm_newton(gx[:, :1], w, s0, num_heads=NH)
    y_ref, final_ref = rnn_sequence_reference("slstm", gx[:, :1], w, s0, num_heads=NH)
    assert info is None
    assert_close(y, y_ref, rtol=1e-14, what="outputs")
    for a, b in zip(final, final_ref, strict=True):
        assert_close(a, b, rtol=1e-14, what="final state")


def test_no_convergence_falls_back_with_a_warning():
    gx, w = _weights(scale=10.0)  # strong coupling between units: slow convergence
    s0 = _state(zero=True)
    with pytest.warns(NewtonWarning, match="falling back to the sequential solve"):
        y, _, info = slstm_newton(gx, w, s0, num_heads=NH, max_iter=2)
    assert info.fell_back and not info.converged
    y_ref, _ = rnn_sequence_reference("slstm", gx, w, s0, num_heads=NH)
    assert_close(y, y_ref, rtol=1e-12, what="outputs after the fallback")
