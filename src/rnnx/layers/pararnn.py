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

Modes (all compute the same function; the test matrix checks it):

* ``"sequential"``: the cell in a Python loop over time (the reference);
* ``"fused"`` (default, and :meth:`step`): the same loop in one native CPU kernel
  (:mod:`rnnx._native`, ``pararnn.cpp``), forward and backward; each (batch, feature)
  runs its own loop since the recurrence is elementwise. Other devices, or a missing
  compiler, run the Python loop;
* ``"newton"``: Newton's method over the whole sequence (:func:`rnnx.ops.newton_solve`),
  each iteration one :func:`rnnx.ops.scan`; gradients by the adjoint scan. On CPU the
  cell, its Jacobian and its vector-Jacobian product at all (batch, step) at once are
  native kernels (one pass each); elsewhere :meth:`cell` with torch.func Jacobians.

``mode="auto"`` (the default) runs ``"fused"`` on the CPU (one native pass over time is
faster there than Newton's few scans) and ``"newton"`` on CUDA (where the fused loop
would be a Python loop, a kernel launch per step and gate): :attr:`auto_modes`, resolved
from the parameters' device, so ``layer.to("cuda")`` switches and ``layer.mode`` says
what runs.

Initialisation as in the paper's code: recurrent vectors ~ N(0, (2 / sqrt(5 H))^2),
input weights Xavier-uniform, biases zero except the first gate's (update gate z of
ParaGRU, forget gate f of ParaLSTM): -linspace(0, 1, H).
"""

from __future__ import annotations

import ctypes
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx import _native
from rnnx._checks import require_positive_int
from rnnx.layers.base import register
from rnnx.layers.cell import CellLayer
from rnnx.ops.structure import BlockDiagonal, Diagonal

__all__ = ["ParaGRU", "ParaLSTM", "fused_available"]

_SFX = {torch.float32: "f32", torch.float64: "f64"}
_P, _I, _N = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_configured: list[ctypes.CDLL] = []  # the library whose signatures are set


def _lib() -> ctypes.CDLL | None:
    lib = _native.load("pararnn")
    # Compare the library object itself: _native.reset() makes load() return a new one.
    if lib is not None and not (_configured and _configured[0] is lib):
        for sfx in _SFX.values():
            getattr(lib, f"rnnx_paragru_fwd_{sfx}").argtypes = [_P] * 5 + [_I] * 3 + [_N]
            getattr(lib, f"rnnx_paragru_bwd_{sfx}").argtypes = [_P] * 9 + [_I] * 3 + [_N]
            getattr(lib, f"rnnx_paralstm_fwd_{sfx}").argtypes = [_P] * 6 + [_I] * 3 + [_N]
            getattr(lib, f"rnnx_paralstm_bwd_{sfx}").argtypes = [_P] * 11 + [_I] * 3 + [_N]
            getattr(lib, f"rnnx_paragru_cell_{sfx}").argtypes = [_P] * 5 + [_I] * 2 + [_N]
            getattr(lib, f"rnnx_paragru_cell_vjp_{sfx}").argtypes = [_P] * 7 + [_I] * 2 + [_N]
            getattr(lib, f"rnnx_paralstm_cell_{sfx}").argtypes = [_P] * 6 + [_I] * 2 + [_N]
            getattr(lib, f"rnnx_paralstm_cell_vjp_{sfx}").argtypes = [_P] * 9 + [_I] * 2 + [_N]
            for kind in ("gru", "lstm"):
                for d in ("fwd", "bwd", "cell", "cell_vjp"):
                    getattr(lib, f"rnnx_para{kind}_{d}_{sfx}").restype = None
        _configured[:] = [lib]
    return lib


def fused_available(x: Tensor) -> bool:
    """Whether mode ``"fused"`` runs the native kernel for tensors like ``x`` (CPU,
    float32/float64, kernel built); otherwise it runs the Python loop."""
    return x.device.type == "cpu" and x.dtype in _SFX and _lib() is not None


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _FusedCell(torch.autograd.Function):
    """The whole sequential recurrence of one cell kind in the native kernel."""

    @staticmethod
    def forward(ctx, kind, u, a, p, s0, lengths):  # type: ignore[override]
        lib = _lib()
        sfx = _SFX[u.dtype]
        B, L, H3 = u.shape
        H = H3 // 3
        u, a, s0 = u.contiguous(), a.contiguous(), s0.contiguous()
        threads = torch.get_num_threads()
        if kind == "gru":
            s = u.new_empty(B, L, H)
            getattr(lib, f"rnnx_paragru_fwd_{sfx}")(
                u.data_ptr(), a.data_ptr(), s0.data_ptr(), _ptr(lengths), s.data_ptr(),
                B, L, H, threads,
            )  # fmt: skip
        else:
            p = p.contiguous()
            s = u.new_empty(B, L, H, 2)
            getattr(lib, f"rnnx_paralstm_fwd_{sfx}")(
                u.data_ptr(), a.data_ptr(), p.data_ptr(), s0.data_ptr(), _ptr(lengths),
                s.data_ptr(), B, L, H, threads,
            )  # fmt: skip
        ctx.kind = kind
        ctx.save_for_backward(u, a, p, s0, lengths, s)
        return s

    @staticmethod
    def backward(ctx, gs):  # type: ignore[override]
        u, a, p, s0, lengths, s = ctx.saved_tensors
        lib = _lib()
        sfx = _SFX[u.dtype]
        B, L, H3 = u.shape
        H = H3 // 3
        gs = gs.contiguous()
        du = torch.empty_like(u)
        ga = torch.empty_like(a)
        gs0 = torch.empty_like(s0)
        gp = None
        threads = torch.get_num_threads()
        if ctx.kind == "gru":
            getattr(lib, f"rnnx_paragru_bwd_{sfx}")(
                u.data_ptr(), a.data_ptr(), s0.data_ptr(), _ptr(lengths), s.data_ptr(),
                gs.data_ptr(), du.data_ptr(), ga.data_ptr(), gs0.data_ptr(), B, L, H, threads,
            )  # fmt: skip
        else:
            gp = torch.empty_like(p)
            getattr(lib, f"rnnx_paralstm_bwd_{sfx}")(
                u.data_ptr(), a.data_ptr(), p.data_ptr(), s0.data_ptr(), _ptr(lengths),
                s.data_ptr(), gs.data_ptr(), du.data_ptr(), ga.data_ptr(), gp.data_ptr(),
                gs0.data_ptr(), B, L, H, threads,
            )  # fmt: skip
        return None, du, ga, gp, gs0, None


def _rows(t: Tensor, width: int) -> Tensor:
    """``t`` as contiguous rows ``(M, width)``: every leading index is one row."""
    return t.reshape(-1, width).contiguous()


def _cell_native(kind: str, hp: Tensor, u: Tensor, a: Tensor, p: Tensor | None, jac: bool):
    """The cell at every leading index of ``hp`` (and, if ``jac``, its Jacobian)."""
    lib = _lib()
    sfx = _SFX[u.dtype]
    H = u.shape[-1] // 3
    n = hp.shape[-1]
    h_rows, u_rows = _rows(hp, n), _rows(u, 3 * H)
    M = h_rows.shape[0]
    out = torch.empty_like(h_rows)
    threads = torch.get_num_threads()
    if kind == "gru":
        J = torch.empty_like(h_rows) if jac else None
        getattr(lib, f"rnnx_paragru_cell_{sfx}")(
            u_rows.data_ptr(), a.data_ptr(), h_rows.data_ptr(), out.data_ptr(), _ptr(J),
            M, H, threads,
        )  # fmt: skip
        J = None if J is None else J.view(hp.shape)
    else:
        J = h_rows.new_empty(M, H, 2, 2) if jac else None
        getattr(lib, f"rnnx_paralstm_cell_{sfx}")(
            u_rows.data_ptr(), a.data_ptr(), p.data_ptr(), h_rows.data_ptr(), out.data_ptr(),
            _ptr(J), M, H, threads,
        )  # fmt: skip
        J = None if J is None else J.view(*hp.shape[:-1], H, 2, 2)
    return out.view(hp.shape), J


class _PointCell(torch.autograd.Function):
    """The cell applied independently at every leading index (all steps at once), with
    its native vector-Jacobian product: Newton's f evaluations and its one batched VJP."""

    @staticmethod
    def forward(ctx, kind, hp, u, a, p):  # type: ignore[override]
        a = a.contiguous()
        p = None if p is None else p.contiguous()
        out, _ = _cell_native(kind, hp, u, a, p, jac=False)
        ctx.kind = kind
        ctx.shapes = (hp.shape, u.shape)
        ctx.save_for_backward(hp, u, a, p)
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        hp, u, a, p = ctx.saved_tensors
        lib = _lib()
        sfx = _SFX[u.dtype]
        H = u.shape[-1] // 3
        n = hp.shape[-1]
        h_rows, u_rows, g_rows = _rows(hp, n), _rows(u, 3 * H), _rows(g, n)
        M = h_rows.shape[0]
        du = torch.empty_like(u_rows)
        dhp = torch.empty_like(h_rows)
        ga = torch.empty_like(a)
        gp = None
        threads = torch.get_num_threads()
        if ctx.kind == "gru":
            getattr(lib, f"rnnx_paragru_cell_vjp_{sfx}")(
                u_rows.data_ptr(), a.data_ptr(), h_rows.data_ptr(), g_rows.data_ptr(),
                du.data_ptr(), ga.data_ptr(), dhp.data_ptr(), M, H, threads,
            )  # fmt: skip
        else:
            gp = torch.empty_like(p)
            getattr(lib, f"rnnx_paralstm_cell_vjp_{sfx}")(
                u_rows.data_ptr(), a.data_ptr(), p.data_ptr(), h_rows.data_ptr(),
                g_rows.data_ptr(), du.data_ptr(), ga.data_ptr(), gp.data_ptr(), dhp.data_ptr(),
                M, H, threads,
            )  # fmt: skip
        return None, dhp.view(hp.shape), du.view(u.shape), ga, gp


class _ParaCell(CellLayer):
    """Shared parts of ParaGRU and ParaLSTM: parameters, init, the fused mode."""

    modes: ClassVar[tuple[str, ...]] = ("sequential", "fused", "newton")
    default_mode: ClassVar[str] = "fused"
    auto_modes: ClassVar[dict[str, str]] = {"cuda": "newton"}
    reference_mode: ClassVar[str] = "sequential"
    step_mode: ClassVar[str] = "fused"
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
    ) -> None:
        H = d_model if hidden_size is None else require_positive_int("hidden_size", hidden_size)
        super().__init__(d_model, state_size=self._slots * H, mode=mode)
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
        return f"d_model={self.d_model}, hidden_size={self.hidden_size}, mode={self.mode!r}"

    def inputs(self, x: Tensor) -> Tensor:
        """u = W x + b, ``(batch, length, 3 * hidden_size)``, all steps at once."""
        return F.linear(x, self.weight, self.bias)

    def _peepholes(self) -> Tensor | None:
        return None

    def _newton_cell(self, h0: Tensor):
        """Native cell, VJP and Jacobian for mode ``"newton"`` (CPU, float32/float64):
        the same function as :meth:`cell` (checked by the tests), one pass per call."""
        if not fused_available(h0):
            return None
        kind, dtype = self._kind, h0.dtype

        def params() -> tuple[Tensor, Tensor | None]:
            p = self._peepholes()
            return self.a.to(dtype), None if p is None else p.to(dtype)

        def cell(h: Tensor, u: Tensor) -> Tensor:
            return _PointCell.apply(kind, h, u, *params())

        def value_and_jacobian(h: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
            a, p = params()
            with torch.no_grad():
                return _cell_native(kind, h, u, a.contiguous(), p, jac=True)

        return cell, value_and_jacobian

    def _forward(self, x, state, *, mode, lengths, dt):
        if mode != "fused":
            return super()._forward(x, state, mode=mode, lengths=lengths, dt=dt)
        dtype = self.state_dtype()
        xs = x.to(dtype)
        s0 = state.to(dtype)
        if not fused_available(xs):
            return super()._forward(x, state, mode="sequential", lengths=lengths, dt=dt)
        u = self.inputs(xs).to(dtype)  # under autocast the projection is bf16
        B, L, _ = u.shape
        s0v = s0 if self._slots == 1 else s0.view(B, self.hidden_size, 2)
        lens = None if lengths is None else lengths.to(torch.int64).contiguous()
        p = self._peepholes()
        p = None if p is None else p.to(dtype)
        s = _FusedCell.apply(self._kind, u, self.a.to(dtype), p, s0v, lens)
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
        mode: ``"auto"`` (default: ``"fused"`` on the CPU, ``"newton"`` on CUDA),
            ``"fused"``, ``"sequential"`` or ``"newton"``.

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
        mode: ``"auto"`` (default: ``"fused"`` on the CPU, ``"newton"`` on CUDA),
            ``"fused"``, ``"sequential"`` or ``"newton"``.

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
    ) -> None:
        super().__init__(d_model, hidden_size, bias=bias, mode=mode)
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
