"""rnnx.ops.newton: Newton's method over time against the sequential loop.

Outputs, final state and every gradient (x, h0, parameters) against
:func:`sequential_solve` for each declared structure; ``gradcheck`` in float64;
tolerance, damping, initial guesses, the non-convergence warning and fallback;
:func:`check_structure` against ``torch.func.jacrev``; bad input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnx.ops.newton import (
    NewtonWarning,
    StructureError,
    check_structure,
    jacobian,
    newton_solve,
    sequential_solve,
)
from rnnx.ops.structure import BlockDiagonal, Dense, Diagonal
from tests.conftest import assert_close

N = 6


class DiagCell(nn.Module):
    """Elementwise gated cell: diagonal Jacobian."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(0.5 * torch.randn(N))
        self.w = nn.Parameter(torch.randn(N, 3) / 2)

    def forward(self, h, x):
        u = x @ self.w.t()
        z = torch.sigmoid(u + self.a * h)
        return (1 - z) * h + z * torch.tanh(u - self.a * h)


class BlockCell(nn.Module):
    """Pairs (2i, 2i+1) mix through a 2x2 rotation-like map: 2x2 blocks."""

    def __init__(self):
        super().__init__()
        self.m = nn.Parameter(0.4 * torch.randn(N // 2, 2, 2))
        self.w = nn.Parameter(torch.randn(N, 3) / 2)

    def forward(self, h, x):
        hb = h.unflatten(-1, (N // 2, 2))
        mixed = (self.m @ hb.unsqueeze(-1)).squeeze(-1).flatten(-2)
        return torch.tanh(mixed + x @ self.w.t())


class DenseCell(nn.Module):
    """Elman RNN: dense Jacobian."""

    def __init__(self):
        super().__init__()
        self.u = nn.Parameter(torch.randn(N, N) / (2 * N**0.5))
        self.w = nn.Parameter(torch.randn(N, 3) / 2)

    def forward(self, h, x):
        return torch.tanh(h @ self.u.t() + x @ self.w.t())


CELLS = [
    pytest.param(DiagCell, Diagonal(), id="diagonal"),
    pytest.param(BlockCell, BlockDiagonal(2), id="block2"),
    pytest.param(DenseCell, Dense(), id="dense"),
]


def _data(B=3, T=17, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, 3, generator=g, dtype=dtype)
    h0 = 0.5 * torch.randn(B, N, generator=g, dtype=dtype)
    return x, h0


def _run(solver, cell, x, h0):
    x = x.clone().requires_grad_()
    h0 = h0.clone().requires_grad_()
    h = solver(x, h0)
    g = torch.Generator().manual_seed(5)
    w = torch.randn(h.shape, generator=g, dtype=h.dtype)
    loss = (h * w).sum() + h[:, -1].pow(2).sum()
    params = list(cell.parameters())
    grads = torch.autograd.grad(loss, [x, h0, *params])
    return h.detach(), grads


@pytest.mark.parametrize(("cls", "structure"), CELLS)
def test_newton_matches_sequential_outputs_and_all_gradients(cls, structure):
    torch.manual_seed(0)
    cell = cls().double()
    x, h0 = _data()
    h_ref, g_ref = _run(lambda x, h0: sequential_solve(cell, x, h0), cell, x, h0)
    infos = []

    def newton(x, h0):
        h, info = newton_solve(cell, x, h0, structure, tol=1e-13, max_iter=20)
        infos.append(info)
        return h

    h, g = _run(newton, cell, x, h0)
    assert infos[0].converged and not infos[0].fell_back
    assert_close(h, h_ref, rtol=1e-10, what="states")
    for name, a, b in zip(["x", "h0", "param0", "param1"], g, g_ref):
        assert_close(a, b, rtol=1e-9, what=f"gradient of {name}")


@pytest.mark.parametrize(("cls", "structure"), CELLS)
def test_gradcheck_float64(cls, structure):
    torch.manual_seed(1)
    cell = cls().double()
    x, h0 = _data(B=2, T=5)
    params = list(cell.parameters())

    def fn(x, h0, *ps):
        with torch.nn.utils.stateless._reparametrize_module(
            cell, {n: p for (n, _), p in zip(cell.named_parameters(), ps)}
        ):
            h, _ = newton_solve(cell, x, h0, structure, tol=1e-14, max_iter=30)
        return h

    inputs = [
        x.requires_grad_(),
        h0.requires_grad_(),
        *[p.detach().requires_grad_() for p in params],
    ]
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-7)


@pytest.mark.parametrize(("cls", "structure"), CELLS)
def test_jacobian_matches_jacrev(cls, structure):
    torch.manual_seed(2)
    cell = cls().double()
    x, h0 = _data(B=4)
    check_structure(cell, h0, x[:, 0], structure)  # raises if anything is off
    val, jac = jacobian(cell, h0, x[:, 0], structure)
    assert_close(val, cell(h0, x[:, 0]), rtol=1e-14, what="value")
    full = torch.func.vmap(torch.func.jacrev(lambda h, xx: cell(h, xx)))(h0, x[:, 0])
    if isinstance(structure, Diagonal):
        assert_close(jac, torch.diagonal(full, dim1=-2, dim2=-1), rtol=1e-14, what="diagonal")
    elif isinstance(structure, BlockDiagonal):
        assert_close(jac[:, 1], full[:, 2:4, 2:4], rtol=1e-14, what="block 1")
    else:
        assert_close(jac, full, rtol=1e-14, what="dense")


def test_check_structure_rejects_a_wrong_declaration():
    torch.manual_seed(3)
    x, h0 = _data()
    with pytest.raises(StructureError, match=r"declares .*Diagonal\(\).* entry \(row"):
        check_structure(DenseCell().double(), h0, x[:, 0], Diagonal())
    with pytest.raises(StructureError, match=r"BlockDiagonal\(2\)"):
        check_structure(DenseCell().double(), h0, x[:, 0], BlockDiagonal(2))
    with pytest.raises(StructureError, match=r"Diagonal\(\)"):
        check_structure(BlockCell().double(), h0, x[:, 0], Diagonal())
    check_structure(DiagCell().double(), h0, x[:, 0], BlockDiagonal(2))  # wider is fine
    check_structure(BlockCell().double(), h0, x[:, 0], Dense())


def test_final_state_and_initial_state_are_honoured():
    torch.manual_seed(4)
    cell = DiagCell().double()
    x, h0 = _data(T=20)
    with torch.no_grad():
        h, _ = newton_solve(cell, x, h0, Diagonal())
        h1, _ = newton_solve(cell, x[:, :9], h0, Diagonal())
        h2, _ = newton_solve(cell, x[:, 9:], h1[:, -1], Diagonal())
    assert_close(torch.cat([h1, h2], 1), h, rtol=1e-9, what="two pieces")
    with torch.no_grad():
        hz, _ = newton_solve(cell, x, None, Diagonal(), state_size=N)
        hr = sequential_solve(cell, x, torch.zeros(3, N, dtype=torch.float64))
    assert_close(hz, hr, rtol=1e-9, what="h0=None means zeros")


def test_tolerance_stops_early_and_info_records_residuals():
    torch.manual_seed(5)
    cell = DiagCell().double()
    x, h0 = _data(T=40)
    with torch.no_grad():
        _, tight = newton_solve(cell, x, h0, Diagonal(), tol=1e-12, max_iter=30)
        _, loose = newton_solve(cell, x, h0, Diagonal(), tol=1e-2, max_iter=30)
    assert tight.converged and loose.converged
    assert loose.iterations < tight.iterations
    assert len(tight.residuals) == tight.iterations + 1
    assert tight.residual <= 1e-12 < tight.residuals[-2]
    assert loose.residual <= 1e-2 < loose.residuals[-2]
    # Newton converges quadratically near the solution
    assert tight.residuals[-1] < tight.residuals[-2] ** 1.5
    with torch.no_grad():
        _, exact = newton_solve(
            cell, x, h0, Diagonal(), init=lambda x, h0: sequential_solve(cell, x, h0)
        )
    assert exact.iterations == 0 and exact.converged


def test_inits_and_damping_reach_the_same_solution():
    torch.manual_seed(6)
    cell = BlockCell().double()
    x, h0 = _data(T=30)
    with torch.no_grad():
        ref = sequential_solve(cell, x, h0)
        iters = {}
        for init in ("zeros", "one_step"):
            for omega in (1.0, 0.7):
                h, info = newton_solve(
                    cell, x, h0, BlockDiagonal(2), init=init, omega=omega, max_iter=60
                )
                assert_close(h, ref, rtol=1e-9, what=f"init={init}, omega={omega}")
                iters[init, omega] = info.iterations
    assert iters["one_step", 0.7] > iters["one_step", 1.0]  # damping slows Newton down


def test_pytree_inputs():
    torch.manual_seed(7)
    cell = DiagCell().double()
    x, h0 = _data()

    def step(h, xs):
        a, b = xs
        return cell(h, a + b)

    xs = (x, torch.ones_like(x))
    with torch.no_grad():
        h, info = newton_solve(step, xs, h0, Diagonal())
        ref = sequential_solve(cell, x + 1, h0)
    assert info.converged
    assert_close(h, ref, rtol=1e-9, what="tuple inputs")


def logistic(h, x):
    """The logistic map at r = 3.9 (chaotic): Newton needs ~T iterations."""
    return 3.9 * h * (1 - h) + 0.0 * x


def test_stiff_cell_warns_and_falls_back_to_the_sequential_solve():
    g = torch.Generator().manual_seed(8)
    x = torch.zeros(2, 64, N, dtype=torch.float64)
    h0 = 0.2 + 0.6 * torch.rand(2, N, generator=g, dtype=torch.float64)
    ref = sequential_solve(logistic, x, h0)
    with pytest.warns(NewtonWarning, match=r"no convergence after \d iteration.*falling back"):
        h, info = newton_solve(logistic, x, h0, Diagonal(), max_iter=5)
    # Newton's iterates blow up (the residual turns non-finite) or stall: no convergence
    assert info.fell_back and not info.converged and 1 <= info.iterations <= 5
    assert torch.equal(h, ref)
    with pytest.warns(NewtonWarning, match=r"returning the last iterate"):
        h_last, info = newton_solve(logistic, x, h0, Diagonal(), max_iter=5, fallback=False)
    assert not info.fell_back and not torch.allclose(h_last, ref)


def test_fallback_keeps_gradients():
    x = torch.zeros(1, 40, N, dtype=torch.float64)
    h0 = torch.full((1, N), 0.3, dtype=torch.float64, requires_grad=True)
    with pytest.warns(NewtonWarning):
        h, _ = newton_solve(logistic, x, h0, Diagonal(), max_iter=2)
    (g,) = torch.autograd.grad(h[:, 5].sum(), h0)
    (g_ref,) = torch.autograd.grad(sequential_solve(logistic, x, h0)[:, 5].sum(), h0)
    assert_close(g, g_ref, rtol=1e-12, what="gradient after fallback")


def test_no_graph_without_grad():
    cell = DiagCell().double()
    x, h0 = _data()
    with torch.no_grad():
        h, _ = newton_solve(cell, x, h0, Diagonal())
    assert h.grad_fn is None


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"h0": torch.zeros(2, N)}, ValueError, r"h0: expected shape \(3, n\), got \(2, 6\)"),
        ({"h0": None}, ValueError, r"state_size: expected an int when h0 is None"),
        ({"omega": 2.5}, ValueError, r"omega: expected a number in \(0, 2\)"),
        ({"init": "ones"}, ValueError, r"init: expected 'zeros', 'one_step' or a callable"),
        ({"max_iter": -1}, ValueError, r"max_iter: expected an int >= 0"),
        ({"structure": "blocky"}, ValueError, r"structure: expected Diagonal\(\)"),
        ({"structure": BlockDiagonal(4)}, ValueError, r"state size 6 is not a multiple"),
        ({"init": lambda x, h0: torch.zeros(1)}, ValueError, r"init: expected a tensor of shape"),
    ],
)
def test_bad_input(kwargs, err, match):
    cell = DiagCell().double()
    x, h0 = _data()
    args = {"h0": h0, "structure": Diagonal(), **kwargs}
    with pytest.raises(err, match=match):
        newton_solve(cell, x, args.pop("h0"), args.pop("structure"), **args)


def test_step_fn_returning_the_wrong_shape_is_named():
    x, h0 = _data()
    with pytest.raises(ValueError, match=r"step_fn: expected it to return the next state of shape"):
        newton_solve(lambda h, x: h[..., :2], x, h0, Diagonal())


# --------------------------------------------------------------------------- quasi-Newton


def _diagonal_of(cell):
    """A quasi-Newton Jacobian for a dense cell: the diagonal of the exact one."""

    def value_and_diag(h, x):
        val, jac = jacobian(cell, h, x, Dense())
        return val, torch.diagonal(jac, dim1=-2, dim2=-1)

    return value_and_diag


def test_quasi_newton_matches_sequential_outputs_and_all_gradients():
    torch.manual_seed(0)
    cell = DenseCell().double()
    x, h0 = _data()
    h_ref, g_ref = _run(lambda x, h0: sequential_solve(cell, x, h0), cell, x, h0)
    infos = []

    def quasi(x, h0):
        h, info = newton_solve(
            cell,
            x,
            h0,
            Diagonal(),
            tol=1e-13,
            max_iter=40,
            jacobian_fn=_diagonal_of(cell),
            exact_jacobian=False,
        )
        infos.append(info)
        return h

    h, g = _run(quasi, cell, x, h0)
    info = infos[0]
    assert info.converged and not info.fell_back
    # linear convergence: more iterations than Newton's, at most T
    assert 2 < info.iterations <= x.shape[1]
    assert info.adjoint_iterations is not None and not info.adjoint_fell_back
    assert info.adjoint_residuals[-1] <= 1e-13
    assert_close(h, h_ref, rtol=1e-10, what="states")
    for name, a, b in zip(["x", "h0", "param0", "param1"], g, g_ref):
        assert_close(a, b, rtol=1e-9, what=f"gradient of {name}")


def test_quasi_newton_gradcheck_float64():
    torch.manual_seed(1)
    cell = DenseCell().double()
    x, h0 = _data(B=2, T=5)
    params = list(cell.parameters())

    def fn(x, h0, *ps):
        with torch.nn.utils.stateless._reparametrize_module(
            cell, {n: p for (n, _), p in zip(cell.named_parameters(), ps)}
        ):
            h, _ = newton_solve(
                cell,
                x,
                h0,
                Diagonal(),
                tol=1e-14,
                max_iter=30,
                jacobian_fn=_diagonal_of(cell),
                exact_jacobian=False,
            )
        return h

    inputs = [x.requires_grad_(), h0.requires_grad_()]
    inputs += [p.detach().requires_grad_() for p in params]
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-7)


def test_quasi_newton_adjoint_falls_back_to_the_sequential_sweep():
    torch.manual_seed(2)
    cell = DenseCell().double()
    x, h0 = _data(T=9)
    x = x.clone().requires_grad_()
    h, info = newton_solve(
        cell, x, h0, Diagonal(), tol=1e-13, max_iter=30,
        jacobian_fn=_diagonal_of(cell), exact_jacobian=False,
    )  # fmt: skip
    assert info.converged
    # the forward converged; give the backward no iteration at all
    h.grad_fn.solver.max_iter = 0
    with pytest.warns(NewtonWarning, match="sequential adjoint sweep"):
        (gx,) = torch.autograd.grad(h.sum(), [x])
    assert info.adjoint_fell_back
    h_seq = sequential_solve(cell, x, h0)
    (gx_ref,) = torch.autograd.grad(h_seq.sum(), [x])
    assert_close(gx, gx_ref, rtol=1e-10, what="gradient of x")


def test_quasi_newton_needs_its_jacobian():
    cell = DenseCell().double()
    x, h0 = _data(T=4)
    with pytest.raises(ValueError, match="exact_jacobian: False needs the approximate"):
        newton_solve(cell, x.requires_grad_(), h0, Diagonal(), exact_jacobian=False)
