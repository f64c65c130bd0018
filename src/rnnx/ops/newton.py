"""Parallel-in-time solve of a nonlinear recurrence h_t = f(h_{t-1}, x_t) by Newton's method.

ParaRNN (Danieli, Rodriguez, Sarabia, Suau, Zappella 2025, arXiv 2510.21450), building on
DEER (Lim et al. 2023, arXiv 2309.12252), treats the whole trajectory h_1..h_T as the
unknown of one nonlinear system

    F_t(h) = h_t - f(h_{t-1}, x_t) = 0,    t = 1..T,  h_0 given,

and solves it with Newton's method. The Jacobian of F is block bidiagonal (identity on
the diagonal, -J_t = -df/dh at (h_{t-1}, x_t) below it), so one Newton step is the
*linear* time-varying recurrence

    dh_t = J_t dh_{t-1} + r_t,    r_t = f(h_{t-1}, x_t) - h_t,   dh_0 = 0,

solved over all t at once by :func:`rnnx.ops.scan`. When the cell's Jacobian is diagonal
or block-diagonal with small blocks (declared with :mod:`rnnx.ops.structure`), each
scan costs O(T n) or O(T n k); a handful of iterations converge for gated cells.

Jacobians come from the cell itself with :mod:`torch.func`: one evaluation of f and one
vector-Jacobian product with a vector of ones for ``Diagonal()`` (for a diagonal matrix
J^T 1 is the diagonal), ``k`` products for ``BlockDiagonal(k)`` (cotangent j selects
component j of every block, so its pullback is row j of every block), and ``n`` (the
rows of the full Jacobian, :func:`torch.func.jacrev` batched over the trajectory) for
``Dense()``. The same evaluation gives r, so one call per iteration yields r and J.
Reverse mode rather than forward mode: torch's forward-mode AD compiles its
decompositions on first use (seconds per process).

Backward is the adjoint of the solved system, with no Newton iteration: with
g_t = dL/dh_t,

    lambda_t = g_t + J_{t+1}^T lambda_{t+1}      (one reverse scan, transposed Jacobians)

then one batched vector-Jacobian product of f over all steps with cotangent lambda gives
the gradients of the parameters, of x and (through step 1) of h_0. Implemented by
evaluating ``y = f(shift(h*), x)`` once under autograd with the trajectory h* detached
and mapping the incoming gradient g to lambda on the way back; so cells may close over
``nn.Parameter`` s and every gradient reaches them.

:func:`sequential_solve` is the reference: the loop over time, differentiated by plain
autograd (iterating over ``unbind(1)`` and stacking once: linear-cost backward).

Quasi-Newton (``exact_jacobian=False``). When the exact Jacobian has no structure a scan
can afford (a dense recurrent matrix, as in sLSTM), ``jacobian_fn`` may return an
approximation J~ in a cheaper structure (e.g. the part of J inside each unit). Each
iteration solves dh_t = J~_t dh_{t-1} + r_t: still one scan, still exact at the fixed
point (the residual r is always the exact f(h_{t-1}, x_t) - h_t), but convergence is
linear instead of quadratic. Since h_0 is exact, iteration k makes the first k steps exact
whatever J~ is, so at most T iterations are ever needed; how many it takes in practice
depends on how much of J the approximation leaves out (see :mod:`rnnx.ops.slstm_newton`).
The adjoint then cannot use J~: backward solves lambda = g + S^T J^T lambda (S the shift)
with the exact vector-Jacobian products of f (one batched VJP per iteration), each
correction one reverse scan with J~^T, to the same tolerance (relative to max|g|). If that
iteration does not converge within ``max_iter``, the adjoint falls back to the exact
reverse sweep (one VJP of f per step) and warns.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from rnnx._amp import fp32_under_autocast
from rnnx._checks import RnnxWarning, fmt_shape, require_positive_int, require_tensor
from rnnx._tree import flatten, unflatten
from rnnx.ops.scan import scan
from rnnx.ops.structure import BlockDiagonal, Dense, Diagonal, Structure, as_structure

__all__ = [
    "NewtonInfo",
    "NewtonWarning",
    "StructureError",
    "check_structure",
    "default_tol",
    "jacobian",
    "newton_solve",
    "sequential_solve",
]

StepFn = Callable[[Tensor, Any], Tensor]
Init = Literal["zeros", "one_step"] | Callable[[Any, Tensor], Tensor]


class NewtonWarning(RnnxWarning):
    """Newton's method did not reach its tolerance (the result fell back, or is inexact)."""


class StructureError(ValueError):
    """A cell's declared Jacobian structure does not match its actual Jacobian."""


@dataclass
class NewtonInfo:
    """What :func:`newton_solve` did.

    Attributes:
        iterations: Newton updates applied (0 if the initial guess already met ``tol``).
        residuals: max |f(h_{t-1}, x_t) - h_t| over the batch and all steps, for the
            initial guess and after each update (``iterations + 1`` values).
        converged: whether the last residual is <= ``tol`` (and finite).
        fell_back: whether the result is the sequential solve (non-convergence with
            ``fallback=True``).
        tol: the tolerance that was applied.
        adjoint_iterations: quasi-Newton only (``exact_jacobian=False``), after a
            backward pass: the corrections of the adjoint iteration (None before).
        adjoint_residuals: the adjoint's max |g + S^T J^T lambda - lambda| per iterate,
            relative to max(1, max|g|).
        adjoint_fell_back: whether backward used the sequential adjoint sweep.
    """

    iterations: int = 0
    residuals: list[float] = field(default_factory=list)
    converged: bool = False
    fell_back: bool = False
    tol: float = 0.0
    adjoint_iterations: int | None = None
    adjoint_residuals: list[float] = field(default_factory=list)
    adjoint_fell_back: bool = False

    @property
    def residual(self) -> float:
        """The last residual norm (nan if none was computed)."""
        return self.residuals[-1] if self.residuals else math.nan


def default_tol(dtype: torch.dtype) -> float:
    """The default absolute tolerance on the residual for states of order one:
    ``1e-5`` for float32 (about 100 ulps at 1), ``1e-10`` for float64."""
    return 1e-10 if dtype == torch.float64 else 1e-5


# --------------------------------------------------------------------------- helpers


def _time_leaves(x: Any) -> tuple[list[Tensor], Any]:
    leaves, spec = flatten(x)
    if not leaves:
        raise TypeError("x: expected a tensor or a tuple/list/dict of tensors, got no tensors")
    for i, t in enumerate(leaves):
        require_tensor(f"x (leaf {i})" if len(leaves) > 1 else "x", t)
        if t.dim() < 2:
            raise ValueError(
                f"x: expected tensors of shape (batch, length, ...), got shape {fmt_shape(t.shape)}"
            )
    B, T = leaves[0].shape[:2]
    for t in leaves[1:]:
        if tuple(t.shape[:2]) != (B, T):
            raise ValueError(
                f"x: every leaf must share (batch, length) = ({B}, {T}), got {fmt_shape(t.shape)}"
            )
    return leaves, spec


def _shift(h: Tensor, h0: Tensor) -> Tensor:
    """The previous states (h_0, h_1, ..., h_{T-1}) of a trajectory h (B, T, n)."""
    return torch.cat([h0.unsqueeze(1), h[:, :-1]], 1)


def _check_step_output(out: Any, expected: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(f"step_fn: expected it to return a tensor, got {type(out).__name__}")
    if tuple(out.shape) != expected:
        raise ValueError(
            f"step_fn: expected it to return the next state of shape {fmt_shape(expected)} "
            f"(the shape of h_prev), got {fmt_shape(out.shape)}"
        )
    return out.to(dtype)


def jacobian(
    step_fn: StepFn, h_prev: Tensor, x: Any, structure: Structure | str
) -> tuple[Tensor, Tensor]:
    """f(h_prev, x) and its Jacobian df/dh_prev in the storage of ``structure``.

    ``h_prev`` is ``(..., n)``; ``step_fn`` acts independently on every leading index.
    Returns ``(f, J)`` with J ``(..., n)`` for ``Diagonal()``, ``(..., n // k, k, k)``
    for ``BlockDiagonal(k)`` and ``(..., n, n)`` for ``Dense()`` (row i, column j:
    d f_i / d h_j). One evaluation of f and 1, k or n vector-Jacobian products
    (:func:`torch.func.vjp`, vmapped over the k cotangents).
    The Jacobian is exact only if the declared structure is right
    (:func:`check_structure`).
    """
    st = as_structure(structure)
    n = h_prev.shape[-1]

    def f(h: Tensor) -> Tensor:
        return step_fn(h, x)

    # torch.func.vjp's annotation is not overloaded on has_aux (2 values here)
    val, pullback = torch.func.vjp(f, h_prev)  # type: ignore[misc]
    if isinstance(st, Diagonal):
        # For a diagonal J, J^T 1 is its diagonal.
        (jac,) = pullback(torch.ones_like(val))
        return val, jac
    k = n if isinstance(st, Dense) else st.k
    if n % k:
        raise ValueError(f"structure: the state size {n} is not a multiple of the block size {k}")
    # Cotangent j is 1 at component j of every block: since blocks do not mix, its
    # pullback is row j of every block at once.
    sel = torch.arange(n, device=h_prev.device) % k
    basis = (sel == torch.arange(k, device=h_prev.device).unsqueeze(1)).to(val.dtype)
    cotangents = basis.reshape(k, *([1] * (val.dim() - 1)), n).expand(k, *val.shape)
    (rows,) = torch.func.vmap(pullback)(cotangents)
    lead = h_prev.shape[:-1]
    # rows[j, ..., g*k + i] = A[..., g, j, i]
    jac = rows.reshape(k, *lead, n // k, k).movedim(0, -2)
    if isinstance(st, Dense):
        jac = jac.reshape(*lead, n, n)
    return val, jac.contiguous()


def check_structure(
    step_fn: StepFn,
    h_prev: Tensor,
    x: Any,
    structure: Structure | str,
    *,
    atol: float = 0.0,
    what: str = "step_fn",
) -> None:
    """Raise :class:`StructureError` unless df/dh_prev has the declared structure.

    The full Jacobian of every sample is computed with :func:`torch.func.jacrev`
    (``h_prev``: ``(batch, n)``; ``x``: the inputs of one step, leading dimension
    ``batch``) and every entry outside the declared pattern must be <= ``atol`` in
    absolute value. Also checks that :func:`jacobian` (the forward-mode products the
    solver uses) reproduces the declared part. Test with random, generic states and
    inputs: a zero state can hide a coupling.
    """
    st = as_structure(structure)
    h_prev = require_tensor("h_prev", h_prev).detach()
    if h_prev.dim() != 2:
        raise ValueError(f"h_prev: expected shape (batch, n), got {fmt_shape(h_prev.shape)}")
    n = h_prev.shape[-1]
    leaves, spec = flatten(x)
    x_d = unflatten([t.detach() for t in leaves], spec)

    def one(h: Tensor, xs: Any) -> Tensor:
        def f(hh: Tensor) -> Tensor:
            batched = unflatten([t.unsqueeze(0) for t in flatten(xs)[0]], flatten(xs)[1])
            return step_fn(hh.unsqueeze(0), batched).squeeze(0)

        return torch.func.jacrev(f)(h)

    with torch.no_grad():
        full = torch.func.vmap(one)(h_prev, x_d)  # (batch, n, n)
    if isinstance(st, Dense):
        mask = torch.ones(n, n, dtype=torch.bool, device=h_prev.device)
    else:
        k = 1 if isinstance(st, Diagonal) else st.k
        if n % k:
            raise StructureError(
                f"{what}: declares {st} but the state size {n} is not a multiple of {k}"
            )
        idx = torch.arange(n, device=h_prev.device) // k
        mask = idx.unsqueeze(0) == idx.unsqueeze(1)
    outside = full.abs() * (~mask)
    worst = float(outside.max())
    if worst > atol:
        b, i, j = (int(v) for v in torch.nonzero(outside == outside.max())[0])
        raise StructureError(
            f"{what}: declares a Jacobian df/dh_prev of structure {st}, but entry (row {i}, "
            f"column {j}) of sample {b} is {float(full[b, i, j]):.3g}, outside that structure "
            f"(tolerance {atol:g}). Declare a wider structure (e.g. "
            f"{'BlockDiagonal(k)' if isinstance(st, Diagonal) else 'Dense()'}) or fix the cell."
        )
    with torch.no_grad():
        _, jac = jacobian(step_fn, h_prev, x_d, st)
    if isinstance(st, Diagonal):
        dense = torch.diag_embed(jac)
    elif isinstance(st, BlockDiagonal):
        dense = torch.zeros_like(full)
        G, k = n // st.k, st.k
        for g in range(G):
            dense[:, g * k : (g + 1) * k, g * k : (g + 1) * k] = jac[:, g]
    else:
        dense = jac
    err = float((dense - full).abs().max())
    scale = max(1.0, float(full.abs().max()))
    if err > max(atol, 1e-4 * scale):
        raise StructureError(
            f"{what}: the structured Jacobian ({st}) differs from torch.func.jacrev by "
            f"{err:.3g}; the cell is not differentiable in forward mode as declared"
        )


# --------------------------------------------------------------------------- reference


@fp32_under_autocast
def sequential_solve(step_fn: StepFn, x: Any, h0: Tensor) -> Tensor:
    """All states of h_t = step_fn(h_{t-1}, x_t): the loop over time (the reference).

    ``x``: a tensor or a tuple/list/dict of tensors, each ``(batch, length, ...)``;
    ``h0``: ``(batch, n)``. Returns ``(batch, length, n)`` in ``h0``'s dtype; the final
    state is ``h[:, -1]``. Plain autograd, linear-cost backward.
    """
    leaves, spec = _time_leaves(x)
    per_step = [t.unbind(1) for t in leaves]
    h = h0
    hs = []
    for t in range(leaves[0].shape[1]):
        h = _check_step_output(
            step_fn(h, unflatten([p[t] for p in per_step], spec)), tuple(h0.shape), h0.dtype
        )
        hs.append(h)
    return torch.stack(hs, 1)


# --------------------------------------------------------------------------- newton


class _Adjoint(torch.autograd.Function):
    """Identity forward; backward maps the gradient g of the trajectory to the adjoint
    lambda_t = g_t + J_{t+1}^T lambda_{t+1} (one reverse scan)."""

    @staticmethod
    def forward(ctx, y, a_rev, structure, backend):
        ctx.save_for_backward(a_rev)
        ctx.structure, ctx.backend = structure, backend
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        (a_rev,) = ctx.saved_tensors
        with torch.no_grad():
            lam, _ = scan(
                a_rev, g.contiguous(), structure=ctx.structure, reverse=True, backend=ctx.backend
            )
        return lam, None, None, None


class _QuasiAdjointSolver:
    """What the quasi-Newton adjoint needs: f at the solved trajectory (for exact VJPs),
    the preconditioner's structure and the stopping rule."""

    def __init__(self, step_fn, prev, x, structure, backend, tol, max_iter, fallback, info):
        self.step_fn, self.prev, self.x = step_fn, prev, x
        self.structure, self.backend = structure, backend
        self.tol, self.max_iter, self.fallback, self.info = tol, max_iter, fallback, info

    def shifted_jt(self, pullback, lam: Tensor) -> Tensor:
        """(S^T J^T lam)_t = J_{t+1}^T lam_{t+1} (zero at the last step)."""
        (u,) = pullback(lam)
        return torch.cat([u[:, 1:], torch.zeros_like(u[:, :1])], 1)

    def sequential(self, g: Tensor) -> Tensor:
        """The exact adjoint, one step at a time: lam_t = g_t + J_{t+1}^T lam_{t+1}."""
        leaves, spec = flatten(self.x)
        T = g.shape[1]
        lam = [g[:, -1]]
        for t in range(T - 1, 0, -1):
            xt = unflatten([leaf[:, t] for leaf in leaves], spec)
            # torch.func.vjp's annotation is not overloaded on has_aux (2 values here)
            _, pb = torch.func.vjp(lambda h, xt=xt: self.step_fn(h, xt), self.prev[:, t])  # type: ignore[misc]
            lam.append(g[:, t - 1] + pb(lam[-1])[0])
        return torch.stack(lam[::-1], 1)


class _QuasiAdjoint(torch.autograd.Function):
    """Identity forward; backward solves the exact adjoint lambda = g + S^T J^T lambda by
    iterating with the quasi-Newton Jacobian J~ as preconditioner (module docstring)."""

    @staticmethod
    def forward(ctx, y, a_rev, solver):
        ctx.save_for_backward(a_rev)
        ctx.solver = solver
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        (a_rev,) = ctx.saved_tensors
        sv: _QuasiAdjointSolver = ctx.solver
        info = sv.info
        g = g.contiguous()

        def precondition(rhs: Tensor) -> Tensor:
            return scan(a_rev, rhs, structure=sv.structure, reverse=True, backend=sv.backend)[0]

        with torch.no_grad():
            # torch.func.vjp's annotation is not overloaded on has_aux (2 values here)
            _, pullback = torch.func.vjp(lambda h: sv.step_fn(h, sv.x), sv.prev)  # type: ignore[misc]
            scale = max(1.0, float(torch.linalg.vector_norm(g, float("inf"))))
            lam = precondition(g)
            info.adjoint_iterations, info.adjoint_residuals = 0, []
            info.adjoint_fell_back = False
            converged = False
            while True:
                rho = g + sv.shifted_jt(pullback, lam) - lam
                res = float(torch.linalg.vector_norm(rho, float("inf"))) / scale
                info.adjoint_residuals.append(res)
                if res <= sv.tol:
                    converged = True
                    break
                if not math.isfinite(res) or info.adjoint_iterations >= sv.max_iter:
                    break
                lam = lam + precondition(rho)
                info.adjoint_iterations += 1
            if not converged:
                msg = (
                    f"newton_solve (quasi-Newton adjoint): no convergence after "
                    f"{info.adjoint_iterations} iteration(s) (relative residual {res:.3g} > "
                    f"tol {sv.tol:.3g})"
                )
                if sv.fallback:
                    warnings.warn(msg + "; using the sequential adjoint sweep", NewtonWarning, 2)
                    info.adjoint_fell_back = True
                    lam = sv.sequential(g)
                else:
                    msg += "; using the last iterate (fallback=False)"
                    warnings.warn(msg, NewtonWarning, 2)
        return lam, None, None


def _adjoint_coefficients(jac: Tensor, structure: Structure) -> Tensor:
    """A_t = J_{t+1}^T for t < T-1 (the last one multiplies the zero initial state)."""
    nxt = jac[:, 1:]
    if not isinstance(structure, Diagonal):
        nxt = nxt.transpose(-1, -2)
    return torch.cat([nxt, torch.zeros_like(jac[:, :1])], 1)


@fp32_under_autocast
def newton_solve(
    step_fn: StepFn,
    x: Any,
    h0: Tensor | None,
    structure: Structure | str = "diagonal",
    *,
    max_iter: int = 8,
    tol: float | None = None,
    omega: float = 1.0,
    init: Init = "zeros",
    fallback: bool = True,
    state_size: int | None = None,
    backend: str = "auto",
    jacobian_fn: Callable[[Tensor, Any], tuple[Tensor, Tensor]] | None = None,
    exact_jacobian: bool = True,
) -> tuple[Tensor, NewtonInfo]:
    """All states of h_t = step_fn(h_{t-1}, x_t), t = 1..T, by Newton's method in parallel
    over time (ParaRNN, arXiv 2510.21450; DEER, arXiv 2309.12252).

    Args:
        step_fn: the cell f(h_prev, x_t) -> h_t. It must act independently on every
            leading index (it is called with ``(batch, n)`` states and with whole
            trajectories ``(batch, length, n)``) and be differentiable with
            :mod:`torch.func` (no in-place ops on its inputs, no ``.item()``). It may
            close over parameters; their gradients are computed.
        x: the inputs, a tensor or tuple/list/dict of tensors ``(batch, length, ...)``;
            ``step_fn`` receives the same structure, sliced per step or whole.
        h0: the initial state ``(batch, n)``; None means zeros (then ``state_size``
            gives n, and the dtype is float32, or x's dtype if float64).
        structure: the structure of df/dh_prev: ``Diagonal()``, ``BlockDiagonal(k)``
            (blocks of k consecutive components) or ``Dense()``. A wrong declaration
            gives wrong Newton steps: check it once with :func:`check_structure`.
        max_iter: the most Newton updates to apply.
        tol: stop as soon as max |f(h_{t-1}, x_t) - h_t| <= tol (absolute; states of
            order one). Default :func:`default_tol` of the state dtype.
        omega: damping (< 1) or over-relaxation (> 1) of each update, h += omega dh.
        init: the initial trajectory: ``"zeros"``, ``"one_step"`` (h_t = f(h_0, x_t) for
            every t: the states that would follow h_0 in one step), or a callable
            ``init(x, h0) -> (batch, length, n)``.
        fallback: on non-convergence (after ``max_iter`` updates, or a non-finite
            residual) warn with :class:`NewtonWarning` and return the sequential solve;
            with False, warn and return the last Newton iterate.
        backend: the :func:`rnnx.ops.scan` backend of the linear solves.
        jacobian_fn: ``jacobian_fn(h_prev, x) -> (f, J)`` on whole trajectories, J in the
            storage of ``structure`` (as :func:`jacobian` returns it), for cells with a
            hand-written or native Jacobian; default: :func:`jacobian` (torch.func).
            Called without autograd; gradients always go through ``step_fn``.
        exact_jacobian: False when ``jacobian_fn`` returns an approximation of the
            Jacobian (quasi-Newton; see the module docstring): the iteration converges
            linearly (at most T iterations) and the backward pass iterates the exact
            adjoint with VJPs of ``step_fn``, up to ``max_iter`` times.

    Returns:
        ``(h, info)``: every state ``(batch, length, n)`` (the final state is
        ``h[:, -1]``) and a :class:`NewtonInfo`. When converged, ``h`` is
        ``f(shift(h*), x)`` at the solved trajectory h*, differentiable by the adjoint
        method (gradients of x, h0 and every parameter ``step_fn`` uses).
    """
    st = as_structure(structure)
    leaves, spec = _time_leaves(x)
    B, T = leaves[0].shape[:2]
    if T < 1:
        raise ValueError("x: expected a sequence of length >= 1, got length 0")
    if h0 is None:
        if state_size is None:
            raise ValueError("state_size: expected an int when h0 is None, got None")
        n = require_positive_int("state_size", state_size)
        dtype = torch.float64 if leaves[0].dtype == torch.float64 else torch.float32
        h0 = torch.zeros(B, n, dtype=dtype, device=leaves[0].device)
    else:
        h0 = require_tensor("h0", h0)
        if h0.dim() != 2 or h0.shape[0] != B:
            raise ValueError(f"h0: expected shape ({B}, n), got {fmt_shape(h0.shape)}")
        if not h0.is_floating_point():
            raise TypeError(f"h0: expected a floating-point tensor, got dtype {h0.dtype}")
    n = h0.shape[1]
    if isinstance(st, BlockDiagonal) and n % st.k:
        raise ValueError(f"structure: the state size {n} is not a multiple of {st}.k = {st.k}")
    max_iter = require_positive_int("max_iter", max_iter, allow_zero=True)
    if not (isinstance(omega, int | float) and 0 < omega < 2):
        raise ValueError(f"omega: expected a number in (0, 2), got {omega!r}")
    dtype = h0.dtype
    tol = default_tol(dtype) if tol is None else float(tol)
    if not tol >= 0:
        raise ValueError(f"tol: expected a number >= 0, got {tol!r}")
    info = NewtonInfo(tol=tol)
    full = (B, T, n)

    with torch.no_grad():
        xd = unflatten([t.detach() for t in leaves], spec)
        h0d = h0.detach()
        h = _initial_guess(step_fn, xd, h0d, init, full, dtype)
        # The previous states (h_0, h_1, ..., h_{T-1}), rewritten in place each iteration
        # (no fresh allocation per iteration; f's results never alias it past their use).
        prev = torch.empty(full, dtype=dtype, device=h0d.device)
        prev[:, 0] = h0d

        def f_and_jac(traj: Tensor) -> tuple[Tensor, Tensor]:
            prev[:, 1:] = traj[:, :-1]
            if jacobian_fn is not None:
                val, jac = jacobian_fn(prev, xd)
            else:
                val, jac = jacobian(step_fn, prev, xd, st)
            return _check_step_output(val, full, dtype), jac.to(dtype)

        val, jac = f_and_jac(h)
        while True:
            r = val - h
            res = float(torch.linalg.vector_norm(r, float("inf")))
            info.residuals.append(res)
            if res <= tol:
                info.converged = True
                break
            if not math.isfinite(res) or info.iterations >= max_iter:
                break
            dh, _ = scan(jac, r, structure=st, backend=backend)
            h.add_(dh, alpha=omega)
            info.iterations += 1
            val, jac = f_and_jac(h)

    if not info.converged:
        msg = (
            f"newton_solve: no convergence after {info.iterations} iteration(s) "
            f"(residual {info.residual:.3g} > tol {tol:.3g}, structure {st}, length {T})"
        )
        if fallback:
            warnings.warn(msg + "; falling back to the sequential solve", NewtonWarning, 2)
            info.fell_back = True
            return sequential_solve(step_fn, x, h0), info
        warnings.warn(msg + "; returning the last iterate (fallback=False)", NewtonWarning, 2)

    if not torch.is_grad_enabled():
        return val, info
    # One evaluation under autograd at the solution; gradients arriving at y are turned
    # into the adjoint lambda before flowing into f's parameters, x and h0.
    y = step_fn(_shift(h, h0), x)
    y = _check_step_output(y, full, dtype)
    if not y.requires_grad:
        return val, info
    a_rev = _adjoint_coefficients(jac, st)
    if exact_jacobian:
        return _Adjoint.apply(y, a_rev, st, backend), info
    if jacobian_fn is None:
        raise ValueError("exact_jacobian: False needs the approximate jacobian_fn, got None")
    solver = _QuasiAdjointSolver(
        step_fn, _shift(h, h0d), xd, st, backend, tol, max_iter, fallback, info
    )
    return _QuasiAdjoint.apply(y, a_rev, solver), info


def _initial_guess(
    step_fn: StepFn, x: Any, h0: Tensor, init: Init, full: tuple[int, ...], dtype: torch.dtype
) -> Tensor:
    if callable(init):
        guess = init(x, h0)
        if not isinstance(guess, Tensor) or tuple(guess.shape) != full:
            got = fmt_shape(guess.shape) if isinstance(guess, Tensor) else type(guess).__name__
            raise ValueError(f"init: expected a tensor of shape {fmt_shape(full)}, got {got}")
        return guess.to(dtype, copy=True)  # updated in place: never the caller's tensor
    if init == "zeros":
        return torch.zeros(full, dtype=dtype, device=h0.device)
    if init == "one_step":
        prev = h0.unsqueeze(1).expand(full)
        # a copy: the trajectory is updated in place and f may return a view of its input
        return _check_step_output(step_fn(prev, x), full, dtype).clone()
    raise ValueError(f"init: expected 'zeros', 'one_step' or a callable, got {init!r}")
