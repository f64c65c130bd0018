"""The one table of rnnx's native kernels: their C signatures and their PyTorch operators.

Every C function of ``rnnx/_native/*.cpp`` is typed here (:data:`SIGNATURES`, applied by
:func:`rnnx._native.load` to each loaded library), and every kernel is a PyTorch operator
``torch.ops.rnnx.<name>`` defined here (:data:`OPS`), each with

* a **CPU implementation** that validates its arguments in Python (a wrong call raises a
  ``ValueError``/``TypeError`` naming the operator and the argument; no pointer reaches C
  before shapes, dtypes, devices and, where they index memory, values are checked), then
  calls the kernel through ctypes;
* a **fake implementation** (shapes, dtypes and strides of the outputs, no data) with the
  same checks, so ``torch.compile``, ``torch.export`` and meta tensors can trace it;
* for the differentiable operators, an **autograd formula** (a ``torch.autograd.Function``
  registered at the ``Autograd`` dispatch key) whose forward calls the ``<name>_fwd``
  variant that also returns what backward needs, and whose backward calls ``<name>_bwd``.

The operators, with the library each is built from::

    rnn              rnn.cpp             Elman/LSTM/GRU/sLSTM time loop   (+ rnn_fwd, rnn_bwd)
    scan             scan.cpp            linear scan, diagonal/block      (+ scan_adjoint)
    selective_scan   selective_scan.cpp  Mamba's S6                       (+ _fwd, _bwd)
    gla_intra        chunk.cpp           GLA intra-chunk matrix           (+ _fwd, _bwd)
    mlstm_intra      chunk.cpp           mLSTM intra-chunk weights        (+ _fwd, _bwd)
    pararnn          pararnn.cpp         ParaGRU/ParaLSTM time loop       (+ pararnn_bwd)
    pararnn_cell     pararnn.cpp         their cell at all steps          (+ pararnn_cell_vjp)
    pararnn_cell_jacobian  pararnn.cpp   the cell and its Jacobian (not differentiable)

The ``_fwd``/``_bwd``/``_vjp``/``_adjoint`` and Jacobian operators are not differentiable
themselves (no double backward): called with inputs that need a gradient they raise.

Why this form (measured on the development machine, torch 2.13; see
docs/design-notes.md): ``torch.library.custom_op`` costs about 20 µs per call and
``torch.library.register_autograd`` about 25 µs with gradients (10 µs without), where a
``Library.define`` operator with a CPU kernel costs about 4 µs. So the operators are
defined with ``Library``; the autograd formula is a hand-written ``Autograd`` kernel
(about 11 µs with gradients); and :func:`call`, which the ops in :mod:`rnnx.ops` use,
dispatches straight below the autograd key when no gradient is needed (about 5 µs:
what a one-token decode step pays per kernel).
"""

from __future__ import annotations

import ctypes
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from rnnx import _native

__all__ = ["OPS", "SIGNATURES", "NativeOp", "call"]

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_REAL = {torch.float32: "f32", torch.float64: "f64"}
_SCAN_DTYPES = {**_REAL, torch.complex64: "c64", torch.complex128: "c128"}

# ============================================================================ signatures


def _signatures() -> dict[str, dict[str, tuple[list[Any], Any]]]:
    sig: dict[str, dict[str, tuple[list[Any], Any]]] = {}
    rnn: dict[str, tuple[list[Any], Any]] = {}
    for fam in ("elman", "lstm", "gru", "slstm"):
        for sfx in _REAL.values():
            n = f"{fam}_{sfx}"
            rnn[f"rnnx_rnn_layout_{n}"] = ([_P], None)
            rnn[f"rnnx_rnn_packed_size_{n}"] = ([_I64, _I64], _I64)
            rnn[f"rnnx_rnn_pack_{n}"] = ([_P, _P, _I64, _I64], None)
            # gx, gx strides | R, bias_hn, state0, lengths | y, y strides | stseq, saved,
            # final | B T H NH | reverse act nthreads policy
            rnn[f"rnnx_rnn_fwd_{n}"] = (
                [_P, _I64, _I64, *[_P] * 4, _P, _I64, _I64, *[_P] * 3, *[_I64] * 4, *[_INT] * 4],
                None,
            )
            # packed R, state0, lengths | y, strides | stseq, saved | dy, strides | dfinal,
            # dgx, drec, their strides | dstate0 | B T H NH | reverse act nthreads policy
            rnn[f"rnnx_rnn_bwd_{n}"] = (
                [
                    *[_P] * 3,
                    _P,
                    _I64,
                    _I64,
                    _P,
                    _P,
                    _P,
                    _I64,
                    _I64,
                    *[_P] * 3,
                    _I64,
                    _I64,
                    _P,
                    *[_I64] * 4,
                    *[_INT] * 4,
                ],
                None,
            )
    sig["rnn"] = rnn
    scan: dict[str, tuple[list[Any], Any]] = {}
    for kind in ("diag", "block"):
        extra = [_I64] if kind == "block" else []
        for sfx in _SCAN_DTYPES.values():
            if kind == "block" and sfx.startswith("c"):
                continue
            # a, strides | x, h0, h | B L D (G K) | reverse nthreads
            scan[f"rnnx_scan_{kind}_fwd_{sfx}"] = (
                [_P, _I64, _I64, _P, _P, _P, _I64, _I64, _I64, *extra, _INT, _INT],
                None,
            )
            # a, strides | g, gF, h, h0, lam | ga, strides | gh0 | B L D (G K) | reverse nth
            scan[f"rnnx_scan_{kind}_adj_{sfx}"] = (
                [_P, _I64, _I64, *[_P] * 5, _P, _I64, _I64, _P, *[_I64] * 3, *extra, _INT, _INT],
                None,
            )
    sig["scan"] = scan
    sscan: dict[str, tuple[list[Any], Any]] = {}
    for sfx in _REAL.values():
        # u delta A B C Dskip z bias | softplus | h0 out hlast ckpt offsets ckpt_off |
        # S D N G K block | negative nthreads
        sscan[f"rnnx_sscan_fwd_{sfx}"] = (
            [_P] * 8 + [_INT] + [_P] * 6 + [_I64] * 6 + [_INT] * 2,
            None,
        )
        # ... | softplus | ckpt gout ghlast gu gdelta gz gA gD gbias gB gC gh0 offsets
        # ckpt_off | S D N G K block | negative nthreads
        sscan[f"rnnx_sscan_bwd_{sfx}"] = (
            [_P] * 8 + [_INT] + [_P] * 14 + [_I64] * 6 + [_INT] * 2,
            None,
        )
        sscan[f"rnnx_sscan_blocks_{sfx}"] = ([_I64] * 3, _I64)
    sig["selective_scan"] = sscan
    chunk: dict[str, tuple[list[Any], Any]] = {}
    for sfx in _REAL.values():
        chunk[f"rnnx_gla_intra_fwd_{sfx}"] = ([_P] * 4 + [_I64] * 3 + [_INT], None)
        chunk[f"rnnx_gla_intra_bwd_{sfx}"] = ([_P] * 6 + [_I64] * 3 + [_INT], None)
        chunk[f"rnnx_mlstm_intra_fwd_{sfx}"] = ([_P] * 8 + [_I64] * 2 + [_INT], None)
        chunk[f"rnnx_mlstm_intra_bwd_{sfx}"] = ([_P] * 12 + [_I64] * 2 + [_INT], None)
    sig["chunk"] = chunk
    para: dict[str, tuple[list[Any], Any]] = {}
    for sfx in _REAL.values():
        para[f"rnnx_paragru_fwd_{sfx}"] = ([_P] * 5 + [_I64] * 3 + [_INT], None)
        para[f"rnnx_paragru_bwd_{sfx}"] = ([_P] * 9 + [_I64] * 3 + [_INT], None)
        para[f"rnnx_paralstm_fwd_{sfx}"] = ([_P] * 6 + [_I64] * 3 + [_INT], None)
        para[f"rnnx_paralstm_bwd_{sfx}"] = ([_P] * 11 + [_I64] * 3 + [_INT], None)
        para[f"rnnx_paragru_cell_{sfx}"] = ([_P] * 5 + [_I64] * 2 + [_INT], None)
        para[f"rnnx_paragru_cell_vjp_{sfx}"] = ([_P] * 7 + [_I64] * 2 + [_INT], None)
        para[f"rnnx_paralstm_cell_{sfx}"] = ([_P] * 6 + [_I64] * 2 + [_INT], None)
        para[f"rnnx_paralstm_cell_vjp_{sfx}"] = ([_P] * 9 + [_I64] * 2 + [_INT], None)
    sig["pararnn"] = para
    return sig


#: ``{library: {C symbol: (argtypes, restype)}}`` for every function the kernels export.
SIGNATURES: dict[str, dict[str, tuple[list[Any], Any]]] = _signatures()

# ============================================================================ machinery


@dataclass(frozen=True)
class NativeOp:
    """One operator ``torch.ops.rnnx.<name>``: its schema, the library whose kernel it
    calls, its CPU and fake implementations and (if differentiable) its autograd formula
    as ``(forward(ctx, *args), backward(ctx, *grads))`` of a ``torch.autograd.Function``."""

    name: str
    library: str
    schema: str
    cpu: Callable[..., Any]
    fake: Callable[..., Any]
    autograd: tuple[Callable[..., Any], Callable[..., Any]] | None = None


#: Every native operator by name (the table).
OPS: dict[str, NativeOp] = {}
_LIB = torch.library.Library("rnnx", "DEF")
_below_autograd = torch._C._AutoDispatchBelowAutograd


def _needs_grad(args: tuple[Any, ...]) -> bool:
    if not torch.is_grad_enabled():
        return False
    return any(isinstance(a, Tensor) and a.requires_grad for a in args)


_OVERLOADS: dict[str, Any] = {}
#: The autograd formula of each differentiable operator, as a torch.autograd.Function.
_FORMULAS: dict[str, type[torch.autograd.Function]] = {}


def _overload(name: str) -> Any:
    """``torch.ops.rnnx.<name>.default``, looked up once (a decode step pays per lookup)."""
    op = _OVERLOADS.get(name)
    if op is None:
        op = _OVERLOADS[name] = getattr(torch.ops.rnnx, name).default
    return op


def _register(op: NativeOp) -> None:
    OPS[op.name] = op
    _LIB.define(op.name + op.schema)
    _LIB.impl(op.name, op.cpu, "CPU")
    torch.library.register_fake(f"rnnx::{op.name}", op.fake, lib=_LIB)
    overload = _overload(op.name)
    if op.autograd is None:

        def kernel(*args: Any) -> Any:
            if _needs_grad(args):
                raise RuntimeError(
                    f"rnnx::{op.name} is not differentiable (it is a forward or backward "
                    "half of a differentiable rnnx operator; double backward is not "
                    "supported): call it without inputs that require grad, or under "
                    "torch.no_grad()"
                )
            with _below_autograd():
                return overload(*args)

    else:
        fn = cast(
            type[torch.autograd.Function],
            type(
                f"{op.name}_autograd",
                (torch.autograd.Function,),
                {"forward": staticmethod(op.autograd[0]), "backward": staticmethod(op.autograd[1])},
            ),
        )
        _FORMULAS[op.name] = fn

        def kernel(*args: Any) -> Any:
            if _needs_grad(args):
                return fn.apply(*args)
            with _below_autograd():
                return overload(*args)

    _LIB.impl(op.name, kernel, "Autograd")


def call(name: str, *args: Any) -> Any:
    """``torch.ops.rnnx.<name>(*args)``, by the cheapest path that is correct.

    Under ``torch.compile`` (and ``torch.export``) it is the plain operator call, which the
    graph records. In eager mode the dispatcher's round trip through the Python kernel at
    the autograd key is skipped: without a gradient to record the call goes straight
    below the autograd key (about 5 µs instead of 11: the per-kernel cost of a decode
    step); with one, it applies the operator's autograd formula (the
    ``torch.autograd.Function`` that the autograd kernel would apply, whose forward calls
    the operator below the autograd key).
    """
    if torch.compiler.is_compiling():
        return _overload(name)(*args)
    if _needs_grad(args):
        formula = _FORMULAS.get(name)
        return formula.apply(*args) if formula is not None else _overload(name)(*args)
    with _below_autograd():
        return _overload(name)(*args)


def _forward_half(name: str, *args: Any) -> Any:
    """The helper operator ``name`` from an autograd formula's forward (which runs
    without autograd): straight below the autograd key."""
    with _below_autograd():
        return _overload(name)(*args)


def _backward_half(name: str, *args: Any) -> Any:
    """The helper operator ``name`` from an autograd formula's backward, through the
    autograd key: under ``create_graph=True`` it raises (no double backward) instead of
    returning gradients that silently miss their own graph."""
    return _overload(name)(*args)


def _lib(op: str, library: str) -> ctypes.CDLL:
    lib = _native.load(library)
    if lib is None:
        raise RuntimeError(
            f"rnnx::{op}: the native kernel '{library}' is unavailable: "
            f"{_native.unavailable_reason(library)}"
        )
    return lib


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None or t.numel() == 0 else t.data_ptr()


def _threads() -> int:
    return torch.get_num_threads()


def _fail(op: str, arg: str, msg: str, exc: type[Exception] = ValueError) -> None:
    raise exc(f"rnnx::{op}: {arg}: {msg}")


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(int(s)) for s in t.shape) + ("," if t.dim() == 1 else "") + ")"


def _check(
    op: str,
    arg: str,
    t: object,
    *,
    dims: int | None = None,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    dtypes: dict[torch.dtype, str] | None = None,
) -> Tensor:
    """A CPU tensor of the given rank/shape/dtype, else a clear error. (About a
    microsecond: a decode step runs a handful per kernel.)"""
    if not isinstance(t, Tensor):
        _fail(op, arg, f"expected a tensor, got {type(t).__name__}", TypeError)
    assert isinstance(t, Tensor)
    if not (t.is_cpu or t.is_meta):  # meta: shapes only, by the fake kernels
        _fail(op, arg, f"expected a CPU tensor, got device {t.device}")
    if dtype is not None and t.dtype != dtype:
        _fail(op, arg, f"expected dtype {dtype}, got {t.dtype}", TypeError)
    if dtypes is not None and t.dtype not in dtypes:
        _fail(op, arg, f"expected one of the dtypes {tuple(dtypes)}, got {t.dtype}", TypeError)
    if dims is not None and t.dim() != dims:
        _fail(op, arg, f"expected {dims} dimensions, got shape {_shape(t)}")
    if shape is not None and t.shape != shape:
        _fail(op, arg, f"expected shape {shape}, got {_shape(t)}")
    return t


def _absent(like: Tensor) -> Tensor:
    """The placeholder for an output that is not computed (schemas have no optional
    returns): an empty tensor."""
    return like.new_empty(0)


def _nothing_or(t: Tensor) -> Tensor | None:
    return None if t.numel() == 0 else t


# ============================================================================ rnn

#: cell -> (kernel family, Elman activation, gates G, states besides h, saved per unit)
RNN_CELLS: dict[str, tuple[str, int, int, int, int]] = {
    "elman_tanh": ("elman", 0, 1, 0, 0),
    "elman_relu": ("elman", 1, 1, 0, 0),
    "lstm": ("lstm", 0, 4, 1, 4),
    "gru": ("gru", 0, 3, 0, 4),
    "slstm": ("slstm", 0, 4, 3, 4),
}
#: How threads share a step in rnn.cpp: -1 the kernel's choice, 0 units, 1 batch rows.
#: Only for measurements; results are identical either way.
RNN_THREAD_POLICY = -1

_RNN_ARGS = (
    "(str cell, Tensor gx, Tensor weight_hh, Tensor? bias_hn, Tensor state0, Tensor? lengths, "
    "int num_heads, bool reverse, bool time_major)"
)


def _rnn_check(op, cell, gx, w, bias_hn, state0, lengths, num_heads):
    spec = RNN_CELLS.get(cell)
    if spec is None:
        _fail(op, "cell", f"expected one of {tuple(RNN_CELLS)}, got {cell!r}")
    assert spec is not None
    _, _, G, NST, _ = spec
    _check(op, "gx", gx, dims=3, dtypes=_REAL)
    B, T, GH = gx.shape
    _check(op, "state0", state0, dims=3, dtype=gx.dtype)
    S, B2, H = state0.shape
    if S != 1 + NST or B2 != B:
        _fail(op, "state0", f"expected shape ({1 + NST}, {B}, H) (states, batch, hidden) for "
              f"cell {cell!r}, got {_shape(state0)}")  # fmt: skip
    if GH != G * H:
        _fail(op, "gx", f"expected last dimension G*H = {G}*{H} for cell {cell!r}, got "
              f"shape {_shape(gx)}")  # fmt: skip
    if isinstance(num_heads, bool) or num_heads < 1 or H % num_heads:
        _fail(op, "num_heads", f"expected a divisor of the hidden size {H}, got {num_heads}")
    _check(op, "weight_hh", w, shape=(G * H, H // num_heads), dtype=gx.dtype)
    if bias_hn is not None:
        if cell != "gru":
            _fail(op, "bias_hn", f"only the 'gru' cell takes it, got cell {cell!r}")
        _check(op, "bias_hn", bias_hn, shape=(H,), dtype=gx.dtype)
    if lengths is not None:
        _check(op, "lengths", lengths, shape=(B,), dtype=torch.int64)
    return spec, B, T, H


def _btf(like: Tensor, B: int, T: int, F: int, time_major: bool) -> Tensor:
    """An empty ``(B, T, F)`` tensor, stored time-major (one step's rows contiguous)
    when ``time_major``."""
    if time_major:
        return like.new_empty(T, B, F).transpose(0, 1)
    return like.new_empty(B, T, F)


def _rnn_outputs(spec, gx, B, T, H, time_major, save):
    _, _, _, NST, NSV = spec
    y = _btf(gx, B, T, H, time_major)
    final = gx.new_empty(1 + NST, B, H)
    stseq = gx.new_empty(T, B, NST, H) if (save and NST) else _absent(gx)
    saved = gx.new_empty(T, B, NSV, H) if (save and NSV) else _absent(gx)
    return y, final, stseq, saved


def _rnn_run(cell, gx, w, bias_hn, state0, lengths, num_heads, reverse, time_major, save):
    op = "rnn_fwd" if save else "rnn"
    spec, B, T, H = _rnn_check(op, cell, gx, w, bias_hn, state0, lengths, num_heads)
    lib = _lib(op, "rnn")
    fam, act = spec[0], spec[1]
    if gx.stride(2) != 1:
        gx = gx.contiguous()
    w, state0 = w.contiguous(), state0.contiguous()
    bias_hn = None if bias_hn is None else bias_hn.contiguous()
    lengths = None if lengths is None else lengths.contiguous()
    y, final, stseq, saved = _rnn_outputs(spec, gx, B, T, H, time_major, save)
    getattr(lib, f"rnnx_rnn_fwd_{fam}_{_REAL[gx.dtype]}")(
        gx.data_ptr(), gx.stride(0), gx.stride(1), w.data_ptr(), _ptr(bias_hn),
        state0.data_ptr(), _ptr(lengths), y.data_ptr(), y.stride(0), y.stride(1),
        _ptr(stseq), _ptr(saved), final.data_ptr(), B, T, H, num_heads, int(reverse), act,
        _threads(), RNN_THREAD_POLICY,
    )  # fmt: skip
    return y, final, stseq, saved


def _rnn_cpu(cell, gx, w, bias_hn, state0, lengths, num_heads, reverse, time_major):
    y, final, _, _ = _rnn_run(
        cell, gx, w, bias_hn, state0, lengths, num_heads, reverse, time_major, False
    )
    return y, final


def _rnn_fake(cell, gx, w, bias_hn, state0, lengths, num_heads, reverse, time_major):
    spec, B, T, H = _rnn_check("rnn", cell, gx, w, bias_hn, state0, lengths, num_heads)
    return _rnn_outputs(spec, gx, B, T, H, time_major, False)[:2]


def _rnn_fwd_cpu(cell, gx, w, bias_hn, state0, lengths, num_heads, reverse, time_major):
    return _rnn_run(cell, gx, w, bias_hn, state0, lengths, num_heads, reverse, time_major, True)


def _rnn_fwd_fake(cell, gx, w, bias_hn, state0, lengths, num_heads, reverse, time_major):
    spec, B, T, H = _rnn_check("rnn_fwd", cell, gx, w, bias_hn, state0, lengths, num_heads)
    return _rnn_outputs(spec, gx, B, T, H, time_major, True)


def _rnn_bwd_check(cell, w, state0, lengths, y, stseq, saved, dy, dfinal, num_heads):
    op = "rnn_bwd"
    spec = RNN_CELLS.get(cell)
    if spec is None:
        _fail(op, "cell", f"expected one of {tuple(RNN_CELLS)}, got {cell!r}")
    assert spec is not None
    _, _, G, NST, NSV = spec
    _check(op, "y", y, dims=3, dtypes=_REAL)
    B, T, H = y.shape
    _check(op, "state0", state0, shape=(1 + NST, B, H), dtype=y.dtype)
    if isinstance(num_heads, bool) or num_heads < 1 or H % num_heads:
        _fail(op, "num_heads", f"expected a divisor of the hidden size {H}, got {num_heads}")
    _check(op, "weight_hh", w, shape=(G * H, H // num_heads), dtype=y.dtype)
    _check(op, "stseq", stseq, shape=(T, B, NST, H) if NST else (0,), dtype=y.dtype)
    _check(op, "saved", saved, shape=(T, B, NSV, H) if NSV else (0,), dtype=y.dtype)
    if lengths is not None:
        _check(op, "lengths", lengths, shape=(B,), dtype=torch.int64)
    if dy is not None:
        _check(op, "dy", dy, shape=(B, T, H), dtype=y.dtype)
    if dfinal is not None:
        _check(op, "dfinal", dfinal, shape=(1 + NST, B, H), dtype=y.dtype)
    return spec, B, T, H


def _rnn_bwd_outputs(cell, y, B, T, H, G, S, time_major):
    dgx = _btf(y, B, T, G * H, time_major)
    drec = _btf(y, B, T, G * H, time_major) if cell == "gru" else _absent(y)
    return dgx, drec, y.new_empty(S, B, H)


def _rnn_bwd_cpu(cell, w, state0, lengths, y, stseq, saved, dy, dfinal, num_heads, reverse,
                 time_major):  # fmt: skip
    spec, B, T, H = _rnn_bwd_check(cell, w, state0, lengths, y, stseq, saved, dy, dfinal, num_heads)
    lib = _lib("rnn_bwd", "rnn")
    fam, act, G = spec[0], spec[1], spec[2]
    name = f"{fam}_{_REAL[y.dtype]}"
    w, state0 = w.contiguous(), state0.contiguous()
    lengths = None if lengths is None else lengths.contiguous()
    packed = w.new_empty(getattr(lib, f"rnnx_rnn_packed_size_{name}")(H, num_heads))
    getattr(lib, f"rnnx_rnn_pack_{name}")(w.data_ptr(), packed.data_ptr(), H, num_heads)
    if dy is not None and dy.stride(2) != 1:
        dy = dy.contiguous()
    dfinal = None if dfinal is None else dfinal.contiguous()
    if y.stride(2) != 1:
        y = y.contiguous()
    stseq, saved = stseq.contiguous(), saved.contiguous()
    dgx, drec, dstate0 = _rnn_bwd_outputs(cell, y, B, T, H, G, state0.shape[0], time_major)
    getattr(lib, f"rnnx_rnn_bwd_{name}")(
        packed.data_ptr(), state0.data_ptr(), _ptr(lengths), y.data_ptr(), y.stride(0),
        y.stride(1), _ptr(stseq), _ptr(saved), _ptr(dy), 0 if dy is None else dy.stride(0),
        0 if dy is None else dy.stride(1), _ptr(dfinal), dgx.data_ptr(), _ptr(drec),
        dgx.stride(0), dgx.stride(1), dstate0.data_ptr(), B, T, H, num_heads, int(reverse),
        act, _threads(), RNN_THREAD_POLICY,
    )  # fmt: skip
    return dgx, drec, dstate0


def _rnn_bwd_fake(cell, w, state0, lengths, y, stseq, saved, dy, dfinal, num_heads, reverse,
                  time_major):  # fmt: skip
    spec, B, T, H = _rnn_bwd_check(cell, w, state0, lengths, y, stseq, saved, dy, dfinal, num_heads)
    return _rnn_bwd_outputs(cell, y, B, T, H, spec[2], state0.shape[0], time_major)


def _rnn_forward(ctx, cell, gx, w, bias_hn, state0, lengths, num_heads, reverse, time_major):
    y, final, stseq, saved = _forward_half(
        "rnn_fwd", cell, gx, w, bias_hn, state0, lengths, num_heads, reverse, time_major
    )
    ctx.save_for_backward(w, state0, y, stseq, saved, lengths)
    ctx.config = (cell, num_heads, reverse, time_major, bias_hn is not None)
    ctx.set_materialize_grads(False)
    return y, final


def _rnn_backward(ctx, dy, dfinal):
    w, state0, y, stseq, saved, lengths = ctx.saved_tensors
    cell, NH, reverse, time_major, has_bias = ctx.config
    dgx, drec, dstate0 = _backward_half(
        "rnn_bwd", cell, w, state0, lengths, y, stseq, saved, dy, dfinal, NH, reverse,
        time_major,
    )  # fmt: skip
    _, B, H = state0.shape
    T = y.shape[1]
    G = w.shape[0] // H
    DH = H // NH
    dr = drec if cell == "gru" else dgx
    dw = db = None
    if ctx.needs_input_grad[2]:
        # dR[g, head, j, k] = sum_{b,t} drec[b, t, g, head, j] h_prev[b, t, head, k]
        # (over rows (t, b) in time-major order: no copy when y and dr are stored so)
        h0 = state0[0].unsqueeze(0)
        y_t = y.transpose(0, 1)
        h_prev = torch.cat([y_t[1:], h0], 0) if reverse else torch.cat([h0, y_t[:-1]], 0)
        d_rows = dr.transpose(0, 1).reshape(T * B, G * H)
        h_rows = h_prev.reshape(T * B, H)
        if NH == 1:
            dw = d_rows.t() @ h_rows
        else:
            a = d_rows.reshape(T * B, G, NH, DH).permute(2, 1, 3, 0).reshape(NH, G * DH, T * B)
            bm = h_rows.reshape(T * B, NH, DH).transpose(0, 1)
            dw = torch.bmm(a, bm).reshape(NH, G, DH, DH).transpose(0, 1).reshape(G * H, DH)
    if has_bias and ctx.needs_input_grad[3]:
        db = dr[..., 2 * H : 3 * H].sum((0, 1))
    return None, dgx, dw, db, dstate0, None, None, None, None


# ============================================================================ scan


def _scan_check(op, a, x, h0):
    _check(op, "x", x, dtypes=_SCAN_DTYPES)
    if x.dim() not in (3, 4):
        _fail(op, "x", f"expected (B, L, D) (diagonal) or (B, L, G, k) (blocks), got {_shape(x)}")
    block = x.dim() == 4
    if block and x.is_complex():
        _fail(op, "x", f"block-diagonal scans are real (float32/float64), got {x.dtype}", TypeError)
    B, L = x.shape[:2]
    if L < 1:
        _fail(op, "x", f"expected a length >= 1, got shape {_shape(x)}")
    _check(op, "a", a, dims=x.dim() + (1 if block else 0), dtype=x.dtype)
    inner = tuple(x.shape[2:]) + ((x.shape[-1],) if block else ())
    if tuple(a.shape[2:]) != inner or a.shape[0] not in (1, B) or a.shape[1] not in (1, L):
        _fail(op, "a", f"expected shape (1 or {B}, 1 or {L}, {', '.join(map(str, inner))}), "
              f"got {_shape(a)}")  # fmt: skip
    if h0 is not None:
        _check(op, "h0", h0, shape=(B, *x.shape[2:]), dtype=x.dtype)
    return block


def _scan_strides(a: Tensor, B: int, L: int) -> tuple[int, int]:
    """Element strides of a contiguous ``a`` over batch and time (0 where broadcast)."""
    Ba, La = a.shape[:2]
    inner = math.prod(a.shape[2:])
    return ((La * inner) if Ba > 1 else 0), (inner if La > 1 else 0)


def _scan_last(h: Tensor, reverse: bool) -> Tensor:
    return (h[:, 0] if reverse else h[:, -1]).clone()


def _scan_cpu(a, x, h0, reverse):
    block = _scan_check("scan", a, x, h0)
    lib = _lib("scan", "scan")
    a, x = a.contiguous(), x.contiguous()
    h0 = None if h0 is None else h0.contiguous()
    h = torch.empty_like(x)
    B, L = x.shape[:2]
    sab, sat = _scan_strides(a, B, L)
    sfx = _SCAN_DTYPES[x.dtype]
    if block:
        G, K = x.shape[2:]
        getattr(lib, f"rnnx_scan_block_fwd_{sfx}")(
            a.data_ptr(), sab, sat, x.data_ptr(), _ptr(h0), h.data_ptr(), B, L, G, K,
            int(reverse), _threads(),
        )  # fmt: skip
    else:
        getattr(lib, f"rnnx_scan_diag_fwd_{sfx}")(
            a.data_ptr(), sab, sat, x.data_ptr(), _ptr(h0), h.data_ptr(), B, L, x.shape[2],
            int(reverse), _threads(),
        )  # fmt: skip
    return h, _scan_last(h, reverse)


def _scan_fake(a, x, h0, reverse):
    _scan_check("scan", a, x, h0)
    h = torch.empty_like(x, memory_format=torch.contiguous_format)
    return h, _scan_last(h, reverse)


def _scan_adjoint_check(a, g, g_last, h, h0):
    op = "scan_adjoint"
    block = _scan_check(op, a, h, h0)
    _check(op, "g", g, shape=tuple(h.shape), dtype=h.dtype)
    if g_last is not None:
        _check(op, "g_last", g_last, shape=(h.shape[0], *h.shape[2:]), dtype=h.dtype)
    return block


def _scan_adjoint_outputs(a, h, h0, need_a, need_h0):
    lam = torch.empty_like(h, memory_format=torch.contiguous_format)
    ga = a.new_empty(a.shape) if need_a else _absent(h)
    gh0 = h0.new_empty(h0.shape) if (need_h0 and h0 is not None) else _absent(h)
    return lam, ga, gh0


def _scan_adjoint_cpu(a, g, g_last, h, h0, reverse, need_a, need_h0):
    block = _scan_adjoint_check(a, g, g_last, h, h0)
    lib = _lib("scan_adjoint", "scan")
    a, g, h = a.contiguous(), g.contiguous(), h.contiguous()
    g_last = None if g_last is None else g_last.contiguous()
    h0 = None if h0 is None else h0.contiguous()
    lam, ga, gh0 = _scan_adjoint_outputs(a, h, h0, need_a, need_h0)
    B, L = h.shape[:2]
    Ba, La = a.shape[:2]
    if need_a and ((Ba == 1 and B > 1) or (La == 1 and L > 1)):
        ga.zero_()  # the kernel accumulates over the broadcast dimensions
    sab, sat = _scan_strides(a, B, L)
    args = [
        a.data_ptr(), sab, sat, g.data_ptr(), _ptr(g_last), h.data_ptr(), _ptr(h0),
        lam.data_ptr(), _ptr(ga), sab, sat, _ptr(gh0), B, L,
    ]  # fmt: skip
    sfx = _SCAN_DTYPES[h.dtype]
    if block:
        G, K = h.shape[2:]
        getattr(lib, f"rnnx_scan_block_adj_{sfx}")(*args, G, K, int(reverse), _threads())
    else:
        getattr(lib, f"rnnx_scan_diag_adj_{sfx}")(*args, h.shape[2], int(reverse), _threads())
    return lam, ga, gh0


def _scan_adjoint_fake(a, g, g_last, h, h0, reverse, need_a, need_h0):
    _scan_adjoint_check(a, g, g_last, h, h0)
    return _scan_adjoint_outputs(a, h, h0, need_a, need_h0)


def _scan_forward(ctx, a, x, h0, reverse):
    h, last = _forward_half("scan", a, x, h0, reverse)
    ctx.save_for_backward(a, h, h0)
    ctx.reverse = reverse
    ctx.set_materialize_grads(False)
    return h, last


def _scan_backward(ctx, g_h, g_last):
    a, h, h0 = ctx.saved_tensors
    need_a, _, need_h0 = ctx.needs_input_grad[:3]
    g = torch.zeros_like(h) if g_h is None else g_h
    lam, ga, gh0 = _backward_half(
        "scan_adjoint", a, g, g_last, h, h0, ctx.reverse, need_a, need_h0 and h0 is not None
    )
    gh0 = gh0 if (need_h0 and h0 is not None) else None
    return (ga if need_a else None), lam, gh0, None


# ============================================================================ selective scan

#: Channels per unit of work in selective_scan.cpp (a multiple of the 8 float lanes of
#: AVX2): 64 in the forward (state + A of a unit: 2 x 64 x N floats, in L1 for N = 16), 32
#: in the backward, which also keeps the states and transitions of one chunk.
SSCAN_FWD_BLOCK = 64
SSCAN_BWD_BLOCK = 32

_SSCAN_ARGS = (
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
    "Tensor? delta_bias, Tensor? h0, Tensor offsets, bool softplus, int chunk, bool negative)"
)


def _sscan_check(op, u, delta, A, B, C, D, z, bias, h0, offsets, chunk):
    _check(op, "u", u, dims=2, dtypes=_REAL)
    R, Dm = u.shape
    _check(op, "delta", delta, shape=(R, Dm), dtype=u.dtype)
    _check(op, "A", A, dims=2, dtype=u.dtype)
    if A.shape[0] != Dm:
        _fail(op, "A", f"expected shape ({Dm}, N), got {_shape(A)}")
    N = A.shape[1]
    _check(op, "B", B, dims=3, dtype=u.dtype)
    G = B.shape[1]
    if B.shape[0] != R or B.shape[2] != N or G < 1 or Dm % G:
        _fail(op, "B", f"expected shape ({R}, G, {N}) with G dividing {Dm}, got {_shape(B)}")
    _check(op, "C", C, shape=tuple(B.shape), dtype=u.dtype)
    for name, t, shape in (("D", D, (Dm,)), ("z", z, (R, Dm)), ("delta_bias", bias, (Dm,))):
        if t is not None:
            _check(op, name, t, shape=shape, dtype=u.dtype)
    _check(op, "offsets", offsets, dims=1, dtype=torch.int64)
    S = offsets.shape[0] - 1
    if S < 0:
        _fail(op, "offsets", "expected at least one offset (0)")
    if h0 is not None:
        _check(op, "h0", h0, shape=(S, Dm, N), dtype=u.dtype)
    if isinstance(chunk, bool) or chunk < 1:
        _fail(op, "chunk", f"expected an int >= 1, got {chunk}")
    return R, Dm, N, G, S


def _check_offsets(op: str, offsets: Tensor, R: int) -> None:
    """The values of ``offsets`` index memory: 0 = o_0 <= o_1 <= ... <= o_S = R."""
    o = offsets.tolist()
    if o[0] != 0 or o[-1] != R or any(b < a for a, b in itertools.pairwise(o)):
        _fail(op, "offsets", f"expected non-decreasing offsets from 0 to {R}, got {o}")


def _sscan_ckpts(R: int, S: int, chunk: int) -> int:
    """An upper bound of the checkpoints, sum over sequences of ceil(len / chunk): static
    (the exact count depends on the offsets' values)."""
    return (R + S * (chunk - 1)) // chunk


def _sscan_run(u, delta, A, B, C, D, z, bias, h0, offsets, softplus, chunk, negative, save):
    op = "selective_scan_fwd" if save else "selective_scan"
    R, Dm, N, G, S = _sscan_check(op, u, delta, A, B, C, D, z, bias, h0, offsets, chunk)
    _check_offsets(op, offsets, R)
    lib = _lib(op, "selective_scan")
    u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
    D, z, bias, h0 = (None if t is None else t.contiguous() for t in (D, z, bias, h0))
    offsets = offsets.contiguous()
    out = u.new_empty(R, Dm)
    h_last = u.new_empty(S, Dm, N)
    ckpt = u.new_empty(_sscan_ckpts(R, S, chunk), Dm, N) if save else _absent(u)
    if save:
        per_seq = (offsets[1:] - offsets[:-1] + chunk - 1) // chunk
        ckpt_off = torch.cat([offsets.new_zeros(1), per_seq.cumsum(0)])
        ckpt[int(ckpt_off[-1]) :].zero_()  # the slack of the static bound: deterministic
    else:
        ckpt_off = offsets.new_empty(0)
    getattr(lib, f"rnnx_sscan_fwd_{_REAL[u.dtype]}")(
        u.data_ptr(), delta.data_ptr(), A.data_ptr(), B.data_ptr(), C.data_ptr(), _ptr(D),
        _ptr(z), _ptr(bias), int(softplus), _ptr(h0), out.data_ptr(), h_last.data_ptr(),
        _ptr(ckpt), offsets.data_ptr(), _ptr(ckpt_off), S, Dm, N, G, chunk, SSCAN_FWD_BLOCK,
        int(negative), _threads(),
    )  # fmt: skip
    return out, h_last, ckpt, ckpt_off


def _sscan_cpu(u, delta, A, B, C, D, z, bias, h0, offsets, softplus, chunk, negative):
    out, h_last, _, _ = _sscan_run(
        u, delta, A, B, C, D, z, bias, h0, offsets, softplus, chunk, negative, False
    )
    return out, h_last


def _sscan_fake(u, delta, A, B, C, D, z, bias, h0, offsets, softplus, chunk, negative):
    R, Dm, N, _, S = _sscan_check("selective_scan", u, delta, A, B, C, D, z, bias, h0, offsets,
                                  chunk)  # fmt: skip
    return u.new_empty(R, Dm), u.new_empty(S, Dm, N)


def _sscan_fwd_cpu(u, delta, A, B, C, D, z, bias, h0, offsets, softplus, chunk, negative):
    return _sscan_run(u, delta, A, B, C, D, z, bias, h0, offsets, softplus, chunk, negative, True)


def _sscan_fwd_fake(u, delta, A, B, C, D, z, bias, h0, offsets, softplus, chunk, negative):
    R, Dm, N, _, S = _sscan_check("selective_scan_fwd", u, delta, A, B, C, D, z, bias, h0,
                                  offsets, chunk)  # fmt: skip
    ckpt = u.new_empty(_sscan_ckpts(R, S, chunk), Dm, N)
    return u.new_empty(R, Dm), u.new_empty(S, Dm, N), ckpt, offsets.new_empty(S + 1)


def _sscan_bwd_check(u, delta, A, B, C, D, z, bias, ckpt, ckpt_off, offsets, g_out, g_last,
                     chunk):  # fmt: skip
    op = "selective_scan_bwd"
    R, Dm, N, G, S = _sscan_check(op, u, delta, A, B, C, D, z, bias, None, offsets, chunk)
    _check(op, "ckpt", ckpt, shape=(_sscan_ckpts(R, S, chunk), Dm, N), dtype=u.dtype)
    _check(op, "ckpt_off", ckpt_off, shape=(S + 1,), dtype=torch.int64)
    _check(op, "g_out", g_out, shape=(R, Dm), dtype=u.dtype)
    if g_last is not None:
        _check(op, "g_last", g_last, shape=(S, Dm, N), dtype=u.dtype)
    return R, Dm, N, G, S


def _sscan_bwd_outputs(u, D, z, bias, R, Dm, N, G, S, need_h0):
    def opt(t, *shape):
        return u.new_empty(*shape) if t is not None else _absent(u)

    return (
        u.new_empty(R, Dm), u.new_empty(R, Dm), u.new_empty(Dm, N), u.new_empty(R, G, N),
        u.new_empty(R, G, N), opt(D, Dm), opt(z, R, Dm), opt(bias, Dm),
        u.new_empty(S, Dm, N) if need_h0 else _absent(u),
    )  # fmt: skip


def _sscan_bwd_cpu(u, delta, A, B, C, D, z, bias, ckpt, ckpt_off, offsets, g_out, g_last,
                   softplus, chunk, negative, need_h0):  # fmt: skip
    R, Dm, N, G, S = _sscan_bwd_check(u, delta, A, B, C, D, z, bias, ckpt, ckpt_off, offsets,
                                      g_out, g_last, chunk)  # fmt: skip
    _check_offsets("selective_scan_bwd", offsets, R)
    expected = (offsets[1:] - offsets[:-1] + chunk - 1) // chunk
    if ckpt_off.tolist() != [0, *expected.cumsum(0).tolist()]:
        _fail("selective_scan_bwd", "ckpt_off", "expected the checkpoint offsets that "
              "selective_scan_fwd returned for these offsets and chunk")  # fmt: skip
    lib = _lib("selective_scan_bwd", "selective_scan")
    sfx = _REAL[u.dtype]
    u, delta, A, B, C, ckpt, g_out = (t.contiguous() for t in (u, delta, A, B, C, ckpt, g_out))
    D, z, bias, g_last = (None if t is None else t.contiguous() for t in (D, z, bias, g_last))
    offsets, ckpt_off = offsets.contiguous(), ckpt_off.contiguous()
    gu, gdelta, _, _, _, _, gz, _, gh0 = _sscan_bwd_outputs(u, D, z, bias, R, Dm, N, G, S, need_h0)
    nblk = getattr(lib, f"rnnx_sscan_blocks_{sfx}")(Dm, G, SSCAN_BWD_BLOCK)
    gA_part = u.new_empty(S, Dm, N)
    gD_part = None if D is None else u.new_empty(S, Dm)
    gbias_part = None if bias is None else u.new_empty(S, Dm)
    gB_part = u.new_empty(nblk, R, G, N)
    gC_part = u.new_empty(nblk, R, G, N)
    getattr(lib, f"rnnx_sscan_bwd_{sfx}")(
        u.data_ptr(), delta.data_ptr(), A.data_ptr(), B.data_ptr(), C.data_ptr(), _ptr(D),
        _ptr(z), _ptr(bias), int(softplus), ckpt.data_ptr(), g_out.data_ptr(), _ptr(g_last),
        gu.data_ptr(), gdelta.data_ptr(), _ptr(gz), gA_part.data_ptr(), _ptr(gD_part),
        _ptr(gbias_part), gB_part.data_ptr(), gC_part.data_ptr(), _ptr(gh0), offsets.data_ptr(),
        ckpt_off.data_ptr(), S, Dm, N, G, chunk, SSCAN_BWD_BLOCK, int(negative), _threads(),
    )  # fmt: skip
    gB = gB_part.sum(0) if nblk > 1 else gB_part[0]
    gC = gC_part.sum(0) if nblk > 1 else gC_part[0]
    gD = _absent(u) if gD_part is None else gD_part.sum(0)
    gbias = _absent(u) if gbias_part is None else gbias_part.sum(0)
    return gu, gdelta, gA_part.sum(0), gB, gC, gD, gz, gbias, gh0


def _sscan_bwd_fake(u, delta, A, B, C, D, z, bias, ckpt, ckpt_off, offsets, g_out, g_last,
                    softplus, chunk, negative, need_h0):  # fmt: skip
    R, Dm, N, G, S = _sscan_bwd_check(u, delta, A, B, C, D, z, bias, ckpt, ckpt_off, offsets,
                                      g_out, g_last, chunk)  # fmt: skip
    return _sscan_bwd_outputs(u, D, z, bias, R, Dm, N, G, S, need_h0)


def _sscan_forward(ctx, u, delta, A, B, C, D, z, bias, h0, offsets, softplus, chunk, negative):
    out, h_last, ckpt, ckpt_off = _forward_half(
        "selective_scan_fwd", u, delta, A, B, C, D, z, bias, h0, offsets,
        softplus, chunk, negative,
    )  # fmt: skip
    ctx.save_for_backward(u, delta, A, B, C, D, z, bias, ckpt, ckpt_off, offsets)
    ctx.options = (softplus, chunk, negative, h0 is not None)
    ctx.set_materialize_grads(False)
    return out, h_last


def _sscan_backward(ctx, g_out, g_last):
    u, delta, A, B, C, D, z, bias, ckpt, ckpt_off, offsets = ctx.saved_tensors
    softplus, chunk, negative, has_h0 = ctx.options
    g_out = torch.zeros_like(u) if g_out is None else g_out
    need_h0 = has_h0 and ctx.needs_input_grad[8]
    grads = _backward_half(
        "selective_scan_bwd", u, delta, A, B, C, D, z, bias, ckpt, ckpt_off,
        offsets, g_out, g_last, softplus, chunk, negative, need_h0,
    )  # fmt: skip
    gu, gdelta, gA, gB, gC, gD, gz, gbias, gh0 = grads
    return (
        gu, gdelta, gA, gB, gC, _nothing_or(gD), _nothing_or(gz), _nothing_or(gbias),
        gh0 if need_h0 else None, None, None, None, None,
    )  # fmt: skip


# ============================================================================ chunk.cpp


def _gla_check(op, q, k, g):
    _check(op, "q", q, dtypes=_REAL)
    if q.dim() < 2:
        _fail(op, "q", f"expected shape (..., C, K), got {_shape(q)}")
    _check(op, "k", k, shape=tuple(q.shape), dtype=q.dtype)
    _check(op, "g", g, shape=tuple(q.shape), dtype=q.dtype)
    C, K = q.shape[-2:]
    return q.numel() // max(C * K, 1), C, K


def _gla_intra_run(op, q, k, g):
    M, C, K = _gla_check(op, q, k, g)
    lib = _lib(op, "chunk")
    q, k = q.contiguous(), k.contiguous()
    alpha = g.exp().contiguous()  # the per-step decays
    A = q.new_empty(*q.shape[:-1], C)
    getattr(lib, f"rnnx_gla_intra_fwd_{_REAL[q.dtype]}")(
        q.data_ptr(), k.data_ptr(), alpha.data_ptr(), A.data_ptr(), M, C, K, _threads()
    )
    return A, alpha


def _gla_intra_cpu(q, k, g):
    return _gla_intra_run("gla_intra", q, k, g)[0]


def _gla_intra_fake(q, k, g):
    _, C, _ = _gla_check("gla_intra", q, k, g)
    return q.new_empty(*q.shape[:-1], C)


def _gla_intra_fwd_cpu(q, k, g):
    return _gla_intra_run("gla_intra_fwd", q, k, g)


def _gla_intra_fwd_fake(q, k, g):
    _, C, _ = _gla_check("gla_intra_fwd", q, k, g)
    return q.new_empty(*q.shape[:-1], C), g.new_empty(g.shape)


def _gla_intra_bwd_check(q, k, alpha, dA):
    M, C, K = _gla_check("gla_intra_bwd", q, k, alpha)
    _check("gla_intra_bwd", "dA", dA, shape=(*q.shape[:-1], C), dtype=q.dtype)
    return M, C, K


def _gla_intra_bwd_cpu(q, k, alpha, dA):
    M, C, K = _gla_intra_bwd_check(q, k, alpha, dA)
    lib = _lib("gla_intra_bwd", "chunk")
    q, k, alpha, dA = q.contiguous(), k.contiguous(), alpha.contiguous(), dA.contiguous()
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    getattr(lib, f"rnnx_gla_intra_bwd_{_REAL[q.dtype]}")(
        q.data_ptr(), k.data_ptr(), alpha.data_ptr(), dA.data_ptr(), dq.data_ptr(),
        dk.data_ptr(), M, C, K, _threads(),
    )  # fmt: skip
    return dq, dk


def _gla_intra_bwd_fake(q, k, alpha, dA):
    _gla_intra_bwd_check(q, k, alpha, dA)
    return q.new_empty(q.shape), k.new_empty(k.shape)


def _gla_intra_forward(ctx, q, k, g):
    A, alpha = _forward_half("gla_intra_fwd", q, k, g)
    ctx.save_for_backward(q, k, alpha)
    return A


def _gla_intra_backward(ctx, dA):
    q, k, alpha = ctx.saved_tensors
    dq, dk = _backward_half("gla_intra_bwd", q, k, alpha, dA)
    # e_ij = exp(G_i − G_j): dG = q·dq − k·dk, and g reaches every G after it
    dG = q * dq - k * dk
    return dq, dk, dG.flip(-2).cumsum(-2).flip(-2)


def _mlstm_check(op, scores, F, I, m_in):
    _check(op, "scores", scores, dtypes=_REAL)
    if scores.dim() < 2 or scores.shape[-1] != scores.shape[-2]:
        _fail(op, "scores", f"expected shape (..., C, C), got {_shape(scores)}")
    lead, C = tuple(scores.shape[:-2]), scores.shape[-1]
    _check(op, "F", F, shape=(*lead, C), dtype=scores.dtype)
    _check(op, "I", I, shape=(*lead, C), dtype=scores.dtype)
    _check(op, "m_in", m_in, shape=lead, dtype=scores.dtype)
    return scores.numel() // max(C * C, 1), C


def _mlstm_run(op, scores, F, I, m_in):
    M, C = _mlstm_check(op, scores, F, I, m_in)
    lib = _lib(op, "chunk")
    S, F_, I_, m0 = (t.contiguous() for t in (scores, F, I, m_in))
    W = torch.empty_like(S)
    rs, m = torch.empty_like(F_), torch.empty_like(F_)
    arg = torch.empty(F_.shape, dtype=torch.int32)
    getattr(lib, f"rnnx_mlstm_intra_fwd_{_REAL[S.dtype]}")(
        S.data_ptr(), F_.data_ptr(), I_.data_ptr(), m0.data_ptr(), W.data_ptr(),
        rs.data_ptr(), m.data_ptr(), arg.data_ptr(), M, C, _threads(),
    )  # fmt: skip
    return W, rs, m, arg


def _mlstm_fake_outputs(scores, F):
    return (
        scores.new_empty(scores.shape), F.new_empty(F.shape), F.new_empty(F.shape),
        F.new_empty(F.shape, dtype=torch.int32),
    )  # fmt: skip


def _mlstm_intra_cpu(scores, F, I, m_in):
    return _mlstm_run("mlstm_intra", scores, F, I, m_in)[:3]


def _mlstm_intra_fake(scores, F, I, m_in):
    _mlstm_check("mlstm_intra", scores, F, I, m_in)
    return _mlstm_fake_outputs(scores, F)[:3]


def _mlstm_intra_fwd_cpu(scores, F, I, m_in):
    return _mlstm_run("mlstm_intra_fwd", scores, F, I, m_in)


def _mlstm_intra_fwd_fake(scores, F, I, m_in):
    _mlstm_check("mlstm_intra_fwd", scores, F, I, m_in)
    return _mlstm_fake_outputs(scores, F)


def _mlstm_bwd_check(scores, F, I, m, arg, dW, drs, dm):
    op = "mlstm_intra_bwd"
    _check(op, "F", F, dtypes=_REAL)
    M, C = _mlstm_check(op, scores, F, I, F.new_empty(F.shape[:-1]))
    for name, t, like in (("m", m, F), ("arg", arg, F), ("dW", dW, scores), ("drs", drs, F),
                          ("dm", dm, F)):  # fmt: skip
        _check(op, name, t, shape=tuple(like.shape),
               dtype=torch.int32 if name == "arg" else scores.dtype)  # fmt: skip
    return M, C


def _mlstm_intra_bwd_cpu(scores, F, I, m, arg, dW, drs, dm):
    M, C = _mlstm_bwd_check(scores, F, I, m, arg, dW, drs, dm)
    if M and bool(((arg < -1) | (arg >= C)).any()):  # arg indexes memory
        _fail("mlstm_intra_bwd", "arg", f"expected indices in [-1, {C}), as mlstm_intra_fwd "
              "returns them")  # fmt: skip
    lib = _lib("mlstm_intra_bwd", "chunk")
    S, F_, I_, m, arg, dW, drs, dm = (t.contiguous() for t in (scores, F, I, m, arg, dW, drs, dm))
    dS, dF, dI = torch.empty_like(S), torch.empty_like(F_), torch.empty_like(F_)
    dm0 = F_.new_empty(F_.shape[:-1])
    getattr(lib, f"rnnx_mlstm_intra_bwd_{_REAL[S.dtype]}")(
        S.data_ptr(), F_.data_ptr(), I_.data_ptr(), m.data_ptr(), arg.data_ptr(),
        dW.data_ptr(), drs.data_ptr(), dm.data_ptr(), dS.data_ptr(), dF.data_ptr(),
        dI.data_ptr(), dm0.data_ptr(), M, C, _threads(),
    )  # fmt: skip
    return dS, dF, dI, dm0


def _mlstm_intra_bwd_fake(scores, F, I, m, arg, dW, drs, dm):
    _mlstm_bwd_check(scores, F, I, m, arg, dW, drs, dm)
    return scores.new_empty(scores.shape), F.new_empty(F.shape), F.new_empty(F.shape), \
        F.new_empty(F.shape[:-1])  # fmt: skip


def _mlstm_intra_forward(ctx, scores, F, I, m_in):
    W, rs, m, arg = _forward_half("mlstm_intra_fwd", scores, F, I, m_in)
    ctx.save_for_backward(scores, F, I, m, arg)
    ctx.set_materialize_grads(False)
    return W, rs, m


def _mlstm_intra_backward(ctx, dW, drs, dm):
    S, F, I, m, arg = ctx.saved_tensors
    dW = torch.zeros_like(S) if dW is None else dW
    drs = torch.zeros_like(F) if drs is None else drs
    dm = torch.zeros_like(F) if dm is None else dm
    return _backward_half("mlstm_intra_bwd", S, F, I, m, arg, dW, drs, dm)


# ============================================================================ pararnn

#: kind -> (state components per feature, whether the cell has peepholes)
PARARNN_KINDS: dict[str, tuple[int, bool]] = {"gru": (1, False), "lstm": (2, True)}


def _para_params(op, kind, u, a, p):
    if kind not in PARARNN_KINDS:
        _fail(op, "kind", f"expected one of {tuple(PARARNN_KINDS)}, got {kind!r}")
    slots, peep = PARARNN_KINDS[kind]
    _check(op, "u", u, dtypes=_REAL)
    if u.dim() < 1 or u.shape[-1] % 3:
        _fail(op, "u", f"expected a last dimension 3 * H, got shape {_shape(u)}")
    H = u.shape[-1] // 3
    _check(op, "a", a, shape=(3, H), dtype=u.dtype)
    if peep:
        _check(op, "p", p, shape=(2, H), dtype=u.dtype)
    elif p is not None:
        _fail(op, "p", f"the {kind!r} cell has no peepholes: expected None")
    return H, slots


def _state_shape(lead: tuple[int, ...], H: int, slots: int) -> tuple[int, ...]:
    return (*lead, H) if slots == 1 else (*lead, H, 2)


def _para_check(op, kind, u, a, p, s0, lengths):
    H, slots = _para_params(op, kind, u, a, p)
    if u.dim() != 3:
        _fail(op, "u", f"expected shape (B, L, 3 * H), got {_shape(u)}")
    B, L = u.shape[:2]
    _check(op, "s0", s0, shape=_state_shape((B,), H, slots), dtype=u.dtype)
    if lengths is not None:
        _check(op, "lengths", lengths, shape=(B,), dtype=torch.int64)
    return B, L, H, slots


def _pararnn_cpu(kind, u, a, p, s0, lengths):
    B, L, H, slots = _para_check("pararnn", kind, u, a, p, s0, lengths)
    lib = _lib("pararnn", "pararnn")
    u, a, s0 = u.contiguous(), a.contiguous(), s0.contiguous()
    lengths = None if lengths is None else lengths.contiguous()
    s = u.new_empty(_state_shape((B, L), H, slots))
    sfx = _REAL[u.dtype]
    if kind == "gru":
        getattr(lib, f"rnnx_paragru_fwd_{sfx}")(
            u.data_ptr(), a.data_ptr(), s0.data_ptr(), _ptr(lengths), s.data_ptr(), B, L, H,
            _threads(),
        )  # fmt: skip
    else:
        p = p.contiguous()
        getattr(lib, f"rnnx_paralstm_fwd_{sfx}")(
            u.data_ptr(), a.data_ptr(), p.data_ptr(), s0.data_ptr(), _ptr(lengths),
            s.data_ptr(), B, L, H, _threads(),
        )  # fmt: skip
    return s


def _pararnn_fake(kind, u, a, p, s0, lengths):
    B, L, H, slots = _para_check("pararnn", kind, u, a, p, s0, lengths)
    return u.new_empty(_state_shape((B, L), H, slots))


def _pararnn_bwd_cpu(kind, u, a, p, s0, lengths, s, gs):
    op = "pararnn_bwd"
    B, L, H, slots = _para_check(op, kind, u, a, p, s0, lengths)
    shape = _state_shape((B, L), H, slots)
    _check(op, "s", s, shape=shape, dtype=u.dtype)
    _check(op, "gs", gs, shape=shape, dtype=u.dtype)
    lib = _lib(op, "pararnn")
    u, a, s0, s, gs = (t.contiguous() for t in (u, a, s0, s, gs))
    lengths = None if lengths is None else lengths.contiguous()
    du, ga, gs0 = torch.empty_like(u), torch.empty_like(a), torch.empty_like(s0)
    sfx = _REAL[u.dtype]
    if kind == "gru":
        gp = _absent(u)
        getattr(lib, f"rnnx_paragru_bwd_{sfx}")(
            u.data_ptr(), a.data_ptr(), s0.data_ptr(), _ptr(lengths), s.data_ptr(),
            gs.data_ptr(), du.data_ptr(), ga.data_ptr(), gs0.data_ptr(), B, L, H, _threads(),
        )  # fmt: skip
    else:
        p = p.contiguous()
        gp = torch.empty_like(p)
        getattr(lib, f"rnnx_paralstm_bwd_{sfx}")(
            u.data_ptr(), a.data_ptr(), p.data_ptr(), s0.data_ptr(), _ptr(lengths),
            s.data_ptr(), gs.data_ptr(), du.data_ptr(), ga.data_ptr(), gp.data_ptr(),
            gs0.data_ptr(), B, L, H, _threads(),
        )  # fmt: skip
    return du, ga, gp, gs0


def _pararnn_bwd_fake(kind, u, a, p, s0, lengths, s, gs):
    op = "pararnn_bwd"
    B, L, H, slots = _para_check(op, kind, u, a, p, s0, lengths)
    shape = _state_shape((B, L), H, slots)
    _check(op, "s", s, shape=shape, dtype=u.dtype)
    _check(op, "gs", gs, shape=shape, dtype=u.dtype)
    gp = p.new_empty(p.shape) if p is not None else _absent(u)
    return u.new_empty(u.shape), a.new_empty(a.shape), gp, s0.new_empty(s0.shape)


def _pararnn_forward(ctx, kind, u, a, p, s0, lengths):
    s = _forward_half("pararnn", kind, u, a, p, s0, lengths)
    ctx.kind = kind
    ctx.save_for_backward(u, a, p, s0, lengths, s)
    return s


def _pararnn_backward(ctx, gs):
    u, a, p, s0, lengths, s = ctx.saved_tensors
    du, ga, gp, gs0 = _backward_half("pararnn_bwd", ctx.kind, u, a, p, s0, lengths, s, gs)
    return None, du, ga, _nothing_or(gp) if p is not None else None, gs0, None


def _cell_check(op, kind, h, u, a, p):
    H, slots = _para_params(op, kind, u, a, p)
    _check(op, "h", h, dtype=u.dtype)
    if tuple(h.shape) != (*u.shape[:-1], slots * H):
        _fail(op, "h", f"expected shape {(*u.shape[:-1], slots * H)} (u's leading "
              f"dimensions, {slots} * H), got {_shape(h)}")  # fmt: skip
    return u.numel() // max(3 * H, 1), H, slots


def _cell_run(op, kind, h, u, a, p, jac):
    M, H, _ = _cell_check(op, kind, h, u, a, p)
    lib = _lib(op, "pararnn")
    h_rows, u_rows = h.contiguous(), u.contiguous()
    a = a.contiguous()
    out = torch.empty_like(h_rows)
    sfx = _REAL[u.dtype]
    if kind == "gru":
        J = torch.empty_like(h_rows) if jac else None
        getattr(lib, f"rnnx_paragru_cell_{sfx}")(
            u_rows.data_ptr(), a.data_ptr(), h_rows.data_ptr(), out.data_ptr(), _ptr(J), M, H,
            _threads(),
        )  # fmt: skip
    else:
        p = p.contiguous()
        J = h.new_empty(*h.shape[:-1], H, 2, 2) if jac else None
        getattr(lib, f"rnnx_paralstm_cell_{sfx}")(
            u_rows.data_ptr(), a.data_ptr(), p.data_ptr(), h_rows.data_ptr(), out.data_ptr(),
            _ptr(J), M, H, _threads(),
        )  # fmt: skip
    return out, J


def _jac_shape(h: Tensor, H: int, slots: int) -> tuple[int, ...]:
    return tuple(h.shape) if slots == 1 else (*h.shape[:-1], H, 2, 2)


def _cell_cpu(kind, h, u, a, p):
    return _cell_run("pararnn_cell", kind, h, u, a, p, False)[0]


def _cell_fake(kind, h, u, a, p):
    _cell_check("pararnn_cell", kind, h, u, a, p)
    return h.new_empty(h.shape)


def _cell_jac_cpu(kind, h, u, a, p):
    return _cell_run("pararnn_cell_jacobian", kind, h, u, a, p, True)


def _cell_jac_fake(kind, h, u, a, p):
    _, H, slots = _cell_check("pararnn_cell_jacobian", kind, h, u, a, p)
    return h.new_empty(h.shape), h.new_empty(_jac_shape(h, H, slots))


def _cell_vjp_cpu(kind, h, u, a, p, g):
    op = "pararnn_cell_vjp"
    M, H, _ = _cell_check(op, kind, h, u, a, p)
    _check(op, "g", g, shape=tuple(h.shape), dtype=u.dtype)
    lib = _lib(op, "pararnn")
    h_rows, u_rows, g_rows, a = h.contiguous(), u.contiguous(), g.contiguous(), a.contiguous()
    du, dh, ga = torch.empty_like(u_rows), torch.empty_like(h_rows), torch.empty_like(a)
    sfx = _REAL[u.dtype]
    if kind == "gru":
        gp = _absent(u)
        getattr(lib, f"rnnx_paragru_cell_vjp_{sfx}")(
            u_rows.data_ptr(), a.data_ptr(), h_rows.data_ptr(), g_rows.data_ptr(),
            du.data_ptr(), ga.data_ptr(), dh.data_ptr(), M, H, _threads(),
        )  # fmt: skip
    else:
        p = p.contiguous()
        gp = torch.empty_like(p)
        getattr(lib, f"rnnx_paralstm_cell_vjp_{sfx}")(
            u_rows.data_ptr(), a.data_ptr(), p.data_ptr(), h_rows.data_ptr(),
            g_rows.data_ptr(), du.data_ptr(), ga.data_ptr(), gp.data_ptr(), dh.data_ptr(),
            M, H, _threads(),
        )  # fmt: skip
    return dh, du, ga, gp


def _cell_vjp_fake(kind, h, u, a, p, g):
    op = "pararnn_cell_vjp"
    _cell_check(op, kind, h, u, a, p)
    _check(op, "g", g, shape=tuple(h.shape), dtype=u.dtype)
    gp = p.new_empty(p.shape) if p is not None else _absent(u)
    return h.new_empty(h.shape), u.new_empty(u.shape), a.new_empty(a.shape), gp


def _cell_forward(ctx, kind, h, u, a, p):
    ctx.kind = kind
    ctx.save_for_backward(h, u, a, p)
    return _forward_half("pararnn_cell", kind, h, u, a, p)


def _cell_backward(ctx, g):
    h, u, a, p = ctx.saved_tensors
    dh, du, ga, gp = _backward_half("pararnn_cell_vjp", ctx.kind, h, u, a, p, g)
    return None, dh, du, ga, _nothing_or(gp) if p is not None else None


# ============================================================================ the table

_SCAN_ADJOINT = (
    "(Tensor a, Tensor g, Tensor? g_last, Tensor h, Tensor? h0, bool reverse, bool need_a, "
    "bool need_h0) -> (Tensor, Tensor, Tensor)"
)
_SSCAN_BWD = (
    "(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
    "Tensor? delta_bias, Tensor ckpt, Tensor ckpt_off, Tensor offsets, Tensor g_out, "
    "Tensor? g_last, bool softplus, int chunk, bool negative, bool need_h0) -> "
    "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
_RNN_BWD = (
    "(str cell, Tensor weight_hh, Tensor state0, Tensor? lengths, Tensor y, Tensor stseq, "
    "Tensor saved, Tensor? dy, Tensor? dfinal, int num_heads, bool reverse, bool time_major)"
    " -> (Tensor, Tensor, Tensor)"
)
_MLSTM = "(Tensor scores, Tensor F, Tensor I, Tensor m_in)"
_PARA = "(str kind, Tensor u, Tensor a, Tensor? p, Tensor s0, Tensor? lengths)"
_CELL = "(str kind, Tensor h, Tensor u, Tensor a, Tensor? p)"
_T2, _T3, _T4 = "(Tensor, Tensor)", "(Tensor, Tensor, Tensor)", "(Tensor, Tensor, Tensor, Tensor)"

for _op in (
    # name, library, schema, CPU implementation, fake implementation, autograd formula
    NativeOp("rnn", "rnn", f"{_RNN_ARGS} -> {_T2}", _rnn_cpu, _rnn_fake,
             (_rnn_forward, _rnn_backward)),
    NativeOp("rnn_fwd", "rnn", f"{_RNN_ARGS} -> {_T4}", _rnn_fwd_cpu, _rnn_fwd_fake),
    NativeOp("rnn_bwd", "rnn", _RNN_BWD, _rnn_bwd_cpu, _rnn_bwd_fake),
    NativeOp("scan", "scan", f"(Tensor a, Tensor x, Tensor? h0, bool reverse) -> {_T2}",
             _scan_cpu, _scan_fake, (_scan_forward, _scan_backward)),
    NativeOp("scan_adjoint", "scan", _SCAN_ADJOINT, _scan_adjoint_cpu, _scan_adjoint_fake),
    NativeOp("selective_scan", "selective_scan", f"{_SSCAN_ARGS} -> {_T2}", _sscan_cpu,
             _sscan_fake, (_sscan_forward, _sscan_backward)),
    NativeOp("selective_scan_fwd", "selective_scan", f"{_SSCAN_ARGS} -> {_T4}",
             _sscan_fwd_cpu, _sscan_fwd_fake),
    NativeOp("selective_scan_bwd", "selective_scan", _SSCAN_BWD, _sscan_bwd_cpu,
             _sscan_bwd_fake),
    NativeOp("gla_intra", "chunk", "(Tensor q, Tensor k, Tensor g) -> Tensor", _gla_intra_cpu,
             _gla_intra_fake, (_gla_intra_forward, _gla_intra_backward)),
    NativeOp("gla_intra_fwd", "chunk", f"(Tensor q, Tensor k, Tensor g) -> {_T2}",
             _gla_intra_fwd_cpu, _gla_intra_fwd_fake),
    NativeOp("gla_intra_bwd", "chunk",
             f"(Tensor q, Tensor k, Tensor alpha, Tensor dA) -> {_T2}", _gla_intra_bwd_cpu,
             _gla_intra_bwd_fake),
    NativeOp("mlstm_intra", "chunk", f"{_MLSTM} -> {_T3}", _mlstm_intra_cpu,
             _mlstm_intra_fake, (_mlstm_intra_forward, _mlstm_intra_backward)),
    NativeOp("mlstm_intra_fwd", "chunk", f"{_MLSTM} -> {_T4}", _mlstm_intra_fwd_cpu,
             _mlstm_intra_fwd_fake),
    NativeOp("mlstm_intra_bwd", "chunk",
             "(Tensor scores, Tensor F, Tensor I, Tensor m, Tensor arg, Tensor dW, Tensor drs, "
             f"Tensor dm) -> {_T4}", _mlstm_intra_bwd_cpu, _mlstm_intra_bwd_fake),
    NativeOp("pararnn", "pararnn", f"{_PARA} -> Tensor", _pararnn_cpu, _pararnn_fake,
             (_pararnn_forward, _pararnn_backward)),
    NativeOp("pararnn_bwd", "pararnn", f"{_PARA[:-1]}, Tensor s, Tensor gs) -> {_T4}",
             _pararnn_bwd_cpu, _pararnn_bwd_fake),
    NativeOp("pararnn_cell", "pararnn", f"{_CELL} -> Tensor", _cell_cpu, _cell_fake,
             (_cell_forward, _cell_backward)),
    NativeOp("pararnn_cell_vjp", "pararnn", f"{_CELL[:-1]}, Tensor g) -> {_T4}",
             _cell_vjp_cpu, _cell_vjp_fake),
    NativeOp("pararnn_cell_jacobian", "pararnn", f"{_CELL} -> {_T2}", _cell_jac_cpu,
             _cell_jac_fake),
):  # fmt: skip
    _register(_op)
