"""Declare a recurrent cell and its Jacobian structure; get a layer that trains in parallel.

A user writes the cell f(h_prev, x_t) -> h_t as a method of a :class:`CellLayer`
subclass (its parameters are the module's: ``self`` plays the role of ``params``) and
declares the structure of df/dh_prev. The layer then runs on the rnnx contract in two
modes that compute the same function:

* ``"recurrent"``: a loop over time (the reference, and the decoding path of
  :meth:`step`);
* ``"newton"``: the whole trajectory at once by Newton's method, each iteration one
  linear scan (:func:`rnnx.ops.newton_solve`; ParaRNN, Danieli et al. 2025,
  arXiv 2510.21450), gradients by the adjoint scan. ``backend`` names the
  implementation of those scans (``"native"``, ``"torch"`` or ``"auto"``).

.. code-block:: python

    class MinimalGRU(CellLayer):              # h_t = lerp(h, tanh(c + a * h), sigmoid(z))
        structure = Diagonal()                # each feature depends on its own past only

        def __init__(self, d_model: int, **kw):
            super().__init__(d_model, **kw)
            self.proj = nn.Linear(d_model, 2 * d_model)       # time-parallel part
            self.a = nn.Parameter(torch.full((d_model,), 0.5))

        def inputs(self, x):                  # (B, T, d_model) -> what cell() gets per step
            return self.proj(x)

        def cell(self, h, u):                 # f(h_prev, x_t, params = self)
            z, c = u.chunk(2, dim=-1)
            return torch.lerp(h, torch.tanh(c + self.a * h), torch.sigmoid(z))

``cell`` must act independently on every leading index (it is called on ``(batch, n)``
states and on whole trajectories ``(batch, length, n)``) and be differentiable with
:mod:`torch.func` (no in-place ops on its inputs, no ``.item()``).
:meth:`CellLayer.check_structure` compares the declared structure with the cell's
Jacobian from :func:`torch.func.jacrev`; a wrong declaration gives wrong Newton steps,
so check it once (the test suite does for every registered cell).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from rnnx._checks import length_mask, require_positive_int
from rnnx.layers.base import RecurrentLayer, State
from rnnx.ops.newton import (
    Init,
    NewtonInfo,
    check_structure,
    newton_solve,
    sequential_solve,
)
from rnnx.ops.structure import BlockDiagonal, Dense, Diagonal, Structure

__all__ = ["BlockDiagonal", "CellLayer", "Dense", "Diagonal"]


def _identity(jac: Tensor, structure: Structure) -> Tensor:
    """The identity Jacobian, broadcastable to ``jac`` in the storage of ``structure``."""
    if isinstance(structure, Diagonal):
        return torch.ones((), dtype=jac.dtype, device=jac.device)
    return torch.eye(jac.shape[-1], dtype=jac.dtype, device=jac.device)


class CellLayer(RecurrentLayer):
    """Base class of layers defined by one recurrent cell and its Jacobian structure.

    Subclasses set :attr:`structure`, implement :meth:`cell` and optionally
    :meth:`inputs` (the part that does not depend on the state, computed for all steps
    at once) and :meth:`readout` (state trajectory to outputs).

    Args:
        d_model: input features.
        state_size: features n of the state (default: d_model).
        mode: ``"recurrent"`` or ``"newton"`` (default :attr:`default_mode`).
        backend: ``"auto"`` (default), ``"native"`` or ``"torch"``: the implementation
            of the scans of mode ``"newton"`` (:func:`rnnx.ops.scan`).

    Newton settings are instance attributes (change them any time):
    ``newton_max_iter`` (8), ``newton_tol`` (None: float32 1e-5, float64 1e-10),
    ``newton_init`` (``"one_step"``), ``newton_omega`` (1.0) and ``newton_fallback``
    (True: on non-convergence warn and use the sequential solve). After a forward in
    ``"newton"`` mode, :attr:`newton_info` holds the iterations and residuals.

    State: ``(batch, state_size)``, float32 (float64 with float64 parameters).
    """

    modes: ClassVar[tuple[str, ...]] = ("recurrent", "newton")
    default_mode: ClassVar[str] = "newton"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    backends: ClassVar[tuple[str, ...]] = ("auto", "native", "torch")
    family: ClassVar[str] = "parallel nonlinear RNN"
    paper: ClassVar[str] = "arXiv 2510.21450"
    #: The structure of df/dh_prev: ``Diagonal()``, ``BlockDiagonal(k)`` or ``Dense()``.
    structure: ClassVar[Structure] = Dense()

    def __init__(
        self,
        d_model: int,
        *,
        state_size: int | None = None,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        self.state_size = (
            d_model if state_size is None else require_positive_int("state_size", state_size)
        )
        self.newton_max_iter: int = 8
        self.newton_tol: float | None = None
        self.newton_init: Init = "one_step"
        self.newton_omega: float = 1.0
        self.newton_fallback: bool = True
        #: What the last ``"newton"`` forward did (None before the first one).
        self.newton_info: NewtonInfo | None = None

    # ------------------------------------------------------------------ the user's part

    def cell(self, h: Tensor, u: Any) -> Tensor:
        """f(h_prev, x_t): the next state ``(..., state_size)`` from the previous state
        ``h`` ``(..., state_size)`` and this step's slice of :meth:`inputs`."""
        raise NotImplementedError

    def inputs(self, x: Tensor) -> Any:
        """The state-independent part, for all steps at once: ``x`` ``(batch, length,
        d_model)`` (in the state dtype) to a tensor or tuple of tensors ``(batch,
        length, ...)``. Default: ``x`` itself."""
        return x

    def readout(self, h: Tensor, x: Tensor) -> Tensor:
        """Outputs ``(batch, length, d_output)`` from the states ``(batch, length,
        state_size)`` (and the inputs). Default: the states."""
        return h

    # ------------------------------------------------------------------ contract

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Zeros ``(batch_size, state_size)``."""
        return torch.zeros(
            batch_size,
            self.state_size,
            device=device if device is not None else self._device(),
            dtype=dtype if dtype is not None else self.state_dtype(),
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, state_size={self.state_size}, "
            f"structure={self.structure}, mode={self.mode!r}" + self._backend_repr()
        )

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        dtype = self.state_dtype()
        xs = x.to(dtype)
        h0 = state.to(dtype)
        u = self.inputs(xs)
        fast = self._newton_cell(h0) if mode == "newton" else None
        cell, value_and_jacobian = fast if fast is not None else (self.cell, None)
        step, jac_fn = cell, value_and_jacobian
        if lengths is not None:
            # Padded steps are the identity map (Jacobian I, any structure), so the
            # final state is the last one and garbage never enters the state.
            keep = length_mask(lengths, x.shape[1]).unsqueeze(-1)
            u = (u, keep)

            def step(h: Tensor, uk: Any) -> Tensor:
                return torch.where(uk[1], cell(h, uk[0]), h)

            if value_and_jacobian is not None:

                def jac_fn(h: Tensor, uk: Any) -> tuple[Tensor, Tensor]:
                    val, jac = value_and_jacobian(h, uk[0])
                    k = uk[1].reshape(*uk[1].shape, *([1] * (jac.dim() - h.dim())))
                    return torch.where(uk[1], val, h), torch.where(
                        k, jac, _identity(jac, self.structure)
                    )

        h = self._solve(step, u, h0, mode, jac_fn)
        return self.readout(h, xs).to(x.dtype), h[:, -1].clone()

    def native_available(self) -> bool:
        """Whether the native scan kernel (of mode ``"newton"``) builds and loads here."""
        from rnnx.ops.scan import native_available

        return native_available()

    def _newton_cell(self, h0: Tensor) -> tuple[Any, Any] | None:
        """A faster ``(cell, value_and_jacobian)`` pair for mode ``"newton"`` on tensors
        like ``h0``, or None to use :meth:`cell` with torch.func Jacobians. Layers with
        native kernels override this (dispatching on device and dtype only)."""
        return None

    def _solve(self, step, u: Any, h0: Tensor, mode: str, jac_fn=None) -> Tensor:
        if mode == "newton":
            h, info = newton_solve(
                step,
                u,
                h0,
                self.structure,
                max_iter=self.newton_max_iter,
                tol=self.newton_tol,
                omega=self.newton_omega,
                init=self.newton_init,
                fallback=self.newton_fallback,
                jacobian_fn=jac_fn,
                backend=self.backend,
            )
            self.newton_info = info
            return h
        if mode == "recurrent":
            return sequential_solve(step, u, h0)
        raise ValueError(f"mode: {type(self).__name__} has no mode {mode!r}")

    # ------------------------------------------------------------------ checks

    def check_structure(self, batch_size: int = 3, *, seed: int = 0, atol: float = 0.0) -> None:
        """Raise :class:`rnnx.ops.newton.StructureError` unless :meth:`cell`'s Jacobian
        df/dh_prev has the declared :attr:`structure`, at random states and inputs
        (compared with :func:`torch.func.jacrev`)."""
        g = torch.Generator().manual_seed(seed)
        dtype = self.state_dtype()
        device = self._device()
        x = torch.randn(batch_size, 1, self.d_model, generator=g, dtype=dtype).to(device)
        h = torch.randn(batch_size, self.state_size, generator=g, dtype=dtype).to(device)
        with torch.no_grad():
            u = self.inputs(x)
        u_t = torch.utils._pytree.tree_map(lambda t: t[:, 0], u)
        check_structure(
            self.cell, 0.5 * h, u_t, self.structure, atol=atol, what=f"{type(self).__name__}.cell"
        )
