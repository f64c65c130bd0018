"""ParaGRU and ParaLSTM: GRU and LSTM cells with diagonal recurrent weights (ParaRNN).

"ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models"
(Danieli, Rodriguez, Sarabia, Suau, Zappella 2025, arXiv 2510.21450). The recurrent
weights are vectors (elementwise products), so the Jacobian df/dh_prev that Newton's
method needs is diagonal (ParaGRU) or made of 2x2 blocks over each feature's (c, h)
(ParaLSTM), and a trajectory is solved in a few Newton iterations, each one scan.

ParaGRU (gates z, r, c; u = W x + b computed for all steps at once)::

    z = sigmoid(a_z * h + u_z),  r = sigmoid(a_r * h + u_r),  c = tanh(a_c * (h * r) + u_c)
    h' = (1 - z) * h + z * c

ParaLSTM (coupled input-forget gate, peepholes p_f, p_o; state (c, h))::

    f = sigmoid(a_f * h + p_f * c + u_f),  z = tanh(a_z * h + u_z),  c' = f * c + (1 - f) * z
    o = sigmoid(a_o * h + p_o * c' + u_o),  h' = o * tanh(c')

Modes (the same function; the test matrix checks it):

* ``"recurrent"`` (the reference, and :meth:`step`): the step-by-step loop. With backend
  ``"native"`` (what ``"auto"`` picks for CPU float32/float64 when the kernel builds) one
  native CPU kernel runs it (:func:`rnnx.ops.pararnn.sequence`,
  ``torch.ops.rnnx.pararnn``), forward and backward; each (batch, feature) runs its own
  loop since the recurrence is elementwise. With ``"torch"`` (and ``"auto"`` elsewhere)
  the cell runs in a Python loop. (The old modes ``"fused"`` and ``"sequential"`` are
  this mode with backend ``"auto"`` and ``"torch"``.)
* ``"newton"``: Newton's method over the whole sequence (:func:`rnnx.ops.newton_solve`),
  each iteration one :func:`rnnx.ops.scan`; gradients by the adjoint scan. With backend
  ``"native"`` the cell, its Jacobian and its vector-Jacobian product at all (batch,
  step) at once are native kernels (:mod:`rnnx.ops.pararnn`, one pass each), and so are
  the scans; with ``"torch"`` :meth:`cell` with torch.func Jacobians and the PyTorch scan.

``mode="auto"`` (the default) runs ``"recurrent"`` on the CPU (one native pass over time
is faster there than Newton's few scans) and ``"newton"`` on CUDA (where the loop would
be a Python loop, a kernel launch per step and gate): :attr:`auto_modes`, resolved from
the parameters' device, so ``layer.to("cuda")`` switches and ``layer.mode`` says what
runs.

Initialisation as in the paper's code: recurrent vectors ~ N(0, (2 / sqrt(5 H))^2),
input weights Xavier-uniform, biases zero except the first gate's (update gate z of
ParaGRU, forget gate f of ParaLSTM): -linspace(0, 1, H).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx import _native
from rnnx._checks import require_positive_int
from rnnx.layers.base import State, register
from rnnx.layers.cell import CellLayer
from rnnx.ops import pararnn as pararnn_ops
from rnnx.ops.pararnn import fused_available
from rnnx.ops.structure import BlockDiagonal, Diagonal

__all__ = ["ParaGRU", "ParaLSTM", "fused_available"]


class _ParaCell(CellLayer):
    """Shared parts of ParaGRU and ParaLSTM: parameters, init, the native kernels."""

    modes: ClassVar[tuple[str, ...]] = ("recurrent", "newton")
    default_mode: ClassVar[str] = "recurrent"
    auto_modes: ClassVar[dict[str, str]] = {"cuda": "newton"}
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    #: the old modes: "fused" was the native loop where it runs (else the Python loop),
    #: "sequential" the Python loop
    mode_aliases: ClassVar[dict[str, tuple[str, str | None]]] = {
        "fused": ("recurrent", "auto"),
        "sequential": ("recurrent", "torch"),
    }
    paper: ClassVar[str] = "arXiv 2510.21450"
    #: The modes are numerically equal up to Newton's tolerance (1e-10 in float64).
    equivalence_rtol: ClassVar[float] = 1e-7
    _kind: ClassVar[str] = ""
    _slots: ClassVar[int] = 1  # state components per feature

    def __init__(
        self,
        d_model: int,
        hidden_size: int | None = None,
        *,
        bias: bool = True,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        H = d_model if hidden_size is None else require_positive_int("hidden_size", hidden_size)
        super().__init__(d_model, state_size=self._slots * H, mode=mode, backend=backend)
        self.hidden_size = H
        self.d_output = H
        self.weight = nn.Parameter(torch.empty(3 * H, d_model))
        self.bias = nn.Parameter(torch.empty(3 * H)) if bias else None
        self.a = nn.Parameter(torch.empty(3, H))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as the paper's code (see the module docstring)."""
        H, D = self.hidden_size, self.d_model
        with torch.no_grad():
            self.a.normal_(0.0, 2.0 / math.sqrt(5 * H))
            bound = math.sqrt(6.0 / (D + H))
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.zero_()
                self.bias[:H] = -torch.linspace(0.0, 1.0, H)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, hidden_size={self.hidden_size}, mode={self.mode!r}"
            + self._backend_repr()
        )

    def inputs(self, x: Tensor) -> Tensor:
        """u = W x + b, ``(batch, length, 3 * hidden_size)``, all steps at once."""
        return F.linear(x, self.weight, self.bias)

    def _peepholes(self) -> Tensor | None:
        return None

    def native_available(self) -> bool:
        """Whether the native ParaRNN kernels build and load here."""
        return _native.available("pararnn")

    def _use_native(self, x: Tensor) -> bool:
        """Whether the native kernels run for tensors like ``x``: never with backend
        ``"torch"``; with ``"auto"`` where they run (CPU float32/float64, built); with
        ``"native"`` always (an error where they cannot)."""
        if self.backend == "torch":
            return False
        ok = fused_available(x)
        if self.backend == "native" and not ok:
            if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
                raise ValueError(
                    f"backend: 'native' (of {type(self).__name__}) supports CPU "
                    f"float32/float64 tensors, got {x.dtype} on {x.device}"
                )
            raise RuntimeError(
                "backend: 'native' was requested but the native ParaRNN kernels are "
                f"unavailable: {_native.unavailable_reason('pararnn')}"
            )
        return ok

    def _newton_cell(self, h0: Tensor):
        """Native cell, VJP and Jacobian for mode ``"newton"`` (CPU, float32/float64):
        the same function as :meth:`cell` (checked by the tests), one pass per call."""
        if not self._use_native(h0):
            return None
        kind, dtype = self._kind, h0.dtype

        def params() -> tuple[Tensor, Tensor | None]:
            p = self._peepholes()
            return self.a.to(dtype), None if p is None else p.to(dtype)

        def cell(h: Tensor, u: Tensor) -> Tensor:
            return pararnn_ops.cell(kind, h, u, *params())

        def value_and_jacobian(h: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
            return pararnn_ops.cell_and_jacobian(kind, h, u, *params())

        return cell, value_and_jacobian

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
        if mode != "recurrent" or not self._use_native(xs):
            return super()._forward(x, state, mode=mode, lengths=lengths, dt=dt)
        s0 = state.to(dtype)
        u = self.inputs(xs).to(dtype)  # under autocast the projection is bf16
        B, L, _ = u.shape
        s0v = s0 if self._slots == 1 else s0.view(B, self.hidden_size, 2)
        lens = None if lengths is None else lengths.to(torch.int64).contiguous()
        p = self._peepholes()
        p = None if p is None else p.to(dtype)
        s = pararnn_ops.sequence(self._kind, u, self.a.to(dtype), p, s0v, lens)
        h = s.reshape(B, L, self.state_size)
        return self.readout(h, xs).to(x.dtype), h[:, -1].clone()


@register("paragru")
class ParaGRU(_ParaCell):
    """GRU with diagonal recurrent weights (ParaRNN's ParaGRU), trainable in parallel
    over time by Newton's method (Danieli et al. 2025, arXiv 2510.21450).

    Args:
        d_model: input features.
        hidden_size: state and output features (default: d_model).
        bias: whether the input projection has a bias.
        mode: ``"auto"`` (default: ``"recurrent"`` on the CPU, ``"newton"`` on CUDA),
            ``"recurrent"`` or ``"newton"``.
        backend: ``"auto"`` (default: the native kernels for CPU float32/float64 where
            they build), ``"native"`` or ``"torch"``.

    Parameters: ``weight`` ``(3H, d_model)`` and ``bias`` ``(3H,)`` of the input
    projection (gates z, r, c), ``a`` ``(3, H)`` the diagonal recurrent weights.

    State: ``(batch, hidden_size)``. Output: the state at every step.
    """

    structure: ClassVar[Diagonal] = Diagonal()
    _kind: ClassVar[str] = "gru"
    _slots: ClassVar[int] = 1

    def cell(self, h: Tensor, u: Tensor) -> Tensor:
        H = self.hidden_size
        a_z, a_r, a_c = self.a.unbind(0)
        z = torch.sigmoid(a_z * h + u[..., :H])
        r = torch.sigmoid(a_r * h + u[..., H : 2 * H])
        c = torch.tanh(a_c * (h * r) + u[..., 2 * H :])
        return h + z * (c - h)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Zeros ``(batch_size, hidden_size)``."""
        return super().init_state(batch_size, device=device, dtype=dtype)


@register("paralstm")
class ParaLSTM(_ParaCell):
    """LSTM with coupled input-forget gate, peepholes and diagonal recurrent weights
    (ParaRNN's ParaLSTM), trainable in parallel over time by Newton's method with 2x2
    Jacobian blocks over each feature's (c, h) (Danieli et al. 2025, arXiv 2510.21450).

    Args:
        d_model: input features.
        hidden_size: cell and output features H (default: d_model).
        bias: whether the input projection has a bias.
        mode: ``"auto"`` (default: ``"recurrent"`` on the CPU, ``"newton"`` on CUDA),
            ``"recurrent"`` or ``"newton"``.
        backend: ``"auto"`` (default: the native kernels for CPU float32/float64 where
            they build), ``"native"`` or ``"torch"``.

    Parameters: ``weight`` ``(3H, d_model)`` and ``bias`` of the input projection
    (gates f, z, o), ``a`` ``(3, H)`` diagonal recurrent weights (f, z, o),
    ``peephole`` ``(2, H)`` (f from c_prev, o from c).

    State: ``(batch, 2 * hidden_size)``, the pairs (c_j, h_j) interleaved:
    ``state.view(batch, hidden_size, 2)[..., 0]`` is c and ``[..., 1]`` is h.
    Output: h at every step, ``(batch, length, hidden_size)``.
    """

    structure: ClassVar[BlockDiagonal] = BlockDiagonal(2)
    _kind: ClassVar[str] = "lstm"
    _slots: ClassVar[int] = 2

    def __init__(
        self,
        d_model: int,
        hidden_size: int | None = None,
        *,
        bias: bool = True,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, hidden_size, bias=bias, mode=mode, backend=backend)
        self.peephole = nn.Parameter(torch.empty(2, self.hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as the paper's code; peepholes like the recurrent vectors."""
        super().reset_parameters()
        if isinstance(getattr(self, "peephole", None), nn.Parameter):
            with torch.no_grad():
                self.peephole.normal_(0.0, 2.0 / math.sqrt(5 * self.hidden_size))

    def _peepholes(self) -> Tensor:
        return self.peephole

    def cell(self, s: Tensor, u: Tensor) -> Tensor:
        H = self.hidden_size
        s2 = s.unflatten(-1, (H, 2))
        c_prev, h_prev = s2[..., 0], s2[..., 1]
        a_f, a_z, a_o = self.a.unbind(0)
        p_f, p_o = self.peephole.unbind(0)
        f = torch.sigmoid(a_f * h_prev + p_f * c_prev + u[..., :H])
        z = torch.tanh(a_z * h_prev + u[..., H : 2 * H])
        c = f * c_prev + (1 - f) * z
        o = torch.sigmoid(a_o * h_prev + p_o * c + u[..., 2 * H :])
        return torch.stack((c, o * torch.tanh(c)), -1).flatten(-2)

    def readout(self, h: Tensor, x: Tensor) -> Tensor:
        """h of every state: ``(batch, length, hidden_size)``."""
        return h.unflatten(-1, (self.hidden_size, 2))[..., 1]

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Zeros ``(batch_size, 2 * hidden_size)``: (c_j, h_j) pairs interleaved."""
        return super().init_state(batch_size, device=device, dtype=dtype)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {}
