"""ParaGRU and ParaLSTM: Newton and the native loop against the Python loop.

The generated matrix (tests/layers/test_contract.py) covers every mode in float64 on
tiny shapes. Here: float32 at lengths up to 4096 (outputs, final state and every
gradient to 1e-5), convergence in at most 3 Newton iterations at the default
initialisation, the fused kernel with ``lengths`` and without a compiler.
"""

from __future__ import annotations

import pytest
import torch

from rnnx import _native
from rnnx.layers.pararnn import ParaGRU, ParaLSTM, fused_available
from rnnx.ops.newton import jacobian
from tests.conftest import assert_close, needs_native

LAYERS = [ParaGRU, ParaLSTM]


def _run(layer, mode, x, s0, lengths=None, backend="auto"):
    x = x.clone().requires_grad_()
    s0 = s0.clone().requires_grad_()
    old, layer.backend = layer.backend, backend
    with layer.using_mode(mode):
        y, s = layer(x, s0, lengths=lengths)
    layer.backend = old
    g = torch.Generator().manual_seed(3)
    loss = (y * torch.randn(y.shape, generator=g)).sum() + (
        s * torch.randn(s.shape, generator=g)
    ).sum()
    params = list(layer.parameters())
    grads = torch.autograd.grad(loss, [x, s0, *params])
    names = ["x", "initial state"] + [n for n, _ in layer.named_parameters()]
    return y.detach(), s.detach(), list(zip(names, grads))


def _compare(a, b, rtol, what):
    y, s, g = a
    y_ref, s_ref, g_ref = b
    assert_close(y, y_ref, rtol=rtol, what=f"{what} outputs")
    assert_close(s, s_ref, rtol=rtol, what=f"{what} final state")
    for (name, ga), (_, gb) in zip(g, g_ref):
        assert_close(ga, gb, rtol=rtol, what=f"{what} gradient of {name}")


def _inputs(layer, B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, layer.d_model, generator=g)
    s0 = 0.5 * torch.randn(B, layer.state_size, generator=g).clamp(-1.5, 1.5)
    return x, s0


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("T", [256, 1024, pytest.param(4096, marks=pytest.mark.slow)])
def test_newton_matches_sequential_float32(cls, T):
    torch.manual_seed(0)
    layer = cls(8)
    x, s0 = _inputs(layer, 2, T)
    ref = _run(layer, "recurrent", x, s0, backend="torch")
    out = _run(layer, "newton", x, s0)
    assert layer.newton_info.converged and not layer.newton_info.fell_back
    _compare(out, ref, 1e-5, f"newton T={T}")


@needs_native("pararnn")
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_fused_matches_sequential_float32_with_lengths(cls):
    torch.manual_seed(1)
    layer = cls(16)
    x, s0 = _inputs(layer, 3, 300)
    assert fused_available(x)
    lengths = torch.tensor([300, 123, 0])
    _compare(
        _run(layer, "recurrent", x, s0, lengths),
        _run(layer, "recurrent", x, s0, lengths, backend="torch"),
        1e-5,
        "fused",
    )


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_converges_in_at_most_three_iterations_at_default_init(cls):
    torch.manual_seed(2)
    layer = cls(128, mode="newton")
    x = torch.randn(4, 1024, 128)
    with torch.no_grad():
        layer(x)
    info = layer.newton_info
    assert info.converged and info.iterations <= 3, info
    assert info.residual <= 1e-5


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_fused_runs_the_python_loop_without_native_kernels(cls, monkeypatch):
    torch.manual_seed(3)
    layer = cls(6)
    x, s0 = _inputs(layer, 2, 9)
    ref = _run(layer, "recurrent", x, s0, backend="torch")
    # as without a compiler (or with RNNX_NATIVE=0): the loader returns no library
    monkeypatch.setattr(_native, "load", lambda name: None)
    assert not fused_available(x)
    out = _run(layer, "recurrent", x, s0)
    _compare(out, ref, 1e-6, "fused without native")


def test_paralstm_state_layout():
    layer = ParaLSTM(5, hidden_size=7)
    y, s = layer(torch.randn(2, 4, 5))
    assert y.shape == (2, 4, 7) and s.shape == (2, 14)
    assert torch.equal(s.view(2, 7, 2)[..., 1], y[:, -1])
    c = s.view(2, 7, 2)[..., 0]
    assert bool((c.abs() < 1).all())  # c is a convex combination of tanh values and c0 = 0


def test_newton_mode_is_deterministic_in_its_iteration_count():
    layer = ParaGRU(16, mode="newton")
    x = torch.randn(2, 64, 16)
    with torch.no_grad():
        layer(x)
        first = layer.newton_info.iterations
        layer(x)
    assert layer.newton_info.iterations == first


@needs_native("pararnn")
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_native_newton_cell_matches_the_cell_and_torch_func(cls, dtype):
    """Mode "newton"'s native cell, VJP and Jacobian against :meth:`cell` + torch.func."""
    torch.manual_seed(4)
    layer = cls(6).to(dtype)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    hp = (0.5 * torch.randn(2, 5, layer.state_size, dtype=dtype)).requires_grad_()
    u = layer.inputs(torch.randn(2, 5, 6, dtype=dtype)).detach().requires_grad_()
    fast = layer._newton_cell(hp)
    assert fast is not None
    cell, value_and_jacobian = fast
    val, jac = value_and_jacobian(hp.detach(), u.detach())
    ref_val, ref_jac = jacobian(layer.cell, hp.detach(), u.detach(), layer.structure)
    assert_close(val, ref_val, rtol=rtol, what="value")
    assert_close(jac, ref_jac, rtol=rtol, what="Jacobian")
    w = torch.randn(val.shape, dtype=dtype)
    wrt = [hp, u, *layer.parameters()]
    got = torch.autograd.grad((cell(hp, u) * w).sum(), wrt, allow_unused=True)
    ref = torch.autograd.grad((layer.cell(hp, u) * w).sum(), wrt, allow_unused=True)
    for i, (a, b) in enumerate(zip(got, ref)):
        if b is None:  # the input projection is not part of the cell
            assert a is None
            continue
        assert_close(a, b, rtol=rtol, what=f"VJP {i}")
