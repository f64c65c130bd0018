"""The linear recurrence h_t = A_t h_{t-1} + b_t, the one scan every family uses.

S4/S5/LSSL run their recurrent view on it, Mamba its selective scan, and the Newton
solver of nonlinear RNNs (ParaRNN, Danieli et al. 2025) solves each Newton step with
it. Time is dimension 1 (batch-first): ``b`` is ``(batch, length, *features)``.

Three implementations compute the same function:

* :func:`scan_reference`: a readable Python loop over time, differentiated by plain
  autograd. The oracle of the tests.
* ``"torch"``: pure PyTorch, any device. Time is cut into chunks of about sqrt(L);
  a short loop inside the chunks runs on all chunks at once, a short loop carries the
  state across chunks, and one fix-up adds each chunk's incoming state. O(L) work
  and O(sqrt(L)) Python steps.
* ``"native"``: a C++ kernel for CPU tensors (diagonal real/complex, block-diagonal
  real), built on first use (:mod:`rnnx._native`), the operator ``torch.ops.rnnx.scan``
  (adjoint: ``rnnx::scan_adjoint``). It streams contiguous rows, so its forward pass
  costs about one read of ``a`` and ``b`` and one write of ``h``.

The fast implementations are differentiated by the adjoint (reverse) scan, not by
autograd through their steps: with g_t = dL/dh_t,

    lambda_t = g_t + A_{t+1}^H lambda_{t+1},     dL/db_t = lambda_t,
    dL/dA_t = lambda_t h_{t-1}^H,                dL/dh_0 = A_1^H lambda_1,

so backward keeps only ``a``, ``h`` and ``h0`` (O(size of the inputs)) and costs one
more sweep. ``A^H`` is the conjugate transpose (torch's convention for complex
gradients, as in ``torch.mul``'s backward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnx import _native
from rnnx._amp import fp32_under_autocast
from rnnx._checks import fmt_shape, require_tensor
from rnnx._native import ops as native_ops
from rnnx._vocab import REFERENCE, op_backend
from rnnx.ops.chunk_state import chunk_state_scan
from rnnx.ops.structure import BlockDiagonal, Dense, Diagonal, Structure, as_structure

BACKENDS: tuple[str, ...] = ("auto", "native", "torch")

__all__ = ["BACKENDS", "native_available", "scan", "scan_reference"]


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Canon:
    """Shapes of one scan call in canonical form.

    diagonal: a (Ba, La, D), b (B, L, D)          with D = prod(features)
    block:    a (Ba, La, G, k, k), b (B, L, G, k) with G * k = prod(features)
    Ba is 1 or B, La is 1 or L (broadcast kept as a stride of zero, not a copy).
    """

    block: bool
    B: int
    L: int
    D: int  # diagonal: features; block: number of groups G
    k: int
    Ba: int
    La: int
    a_full_shape: tuple[int, ...]  # a's shape after broadcasting against b


def _validate(a: object, b: object, h0: object, structure: Structure) -> tuple[Tensor, Tensor]:
    a = require_tensor("a", a)
    b = require_tensor("b", b)
    for name, t in (("a", a), ("b", b)):
        if not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"{name}: expected a floating-point or complex tensor, got {t.dtype}")
    if b.dim() < 3:
        raise ValueError(
            "b: expected shape (batch, length, *features) with at least one feature "
            f"dimension, got shape {fmt_shape(b.shape)}"
        )
    if h0 is not None:
        h0 = require_tensor("h0", h0)
        expected = (b.shape[0], *b.shape[2:])
        if tuple(h0.shape) != expected:
            raise ValueError(
                f"h0: expected shape {fmt_shape(expected)} (batch, *features) to match "
                f"b {fmt_shape(b.shape)}, got {fmt_shape(h0.shape)}"
            )
        if h0.device != b.device:
            raise ValueError(f"h0: expected device {b.device} like b, got {h0.device}")
    if a.device != b.device:
        raise ValueError(f"a: expected device {b.device} like b, got {a.device}")
    if isinstance(structure, Diagonal):
        target = tuple(b.shape)
        what = "broadcastable to b's shape"
    else:
        n = b.shape[-1]
        k = n if isinstance(structure, Dense) else structure.k
        if n % k != 0:
            raise ValueError(
                f"b: the last dimension ({n}) must be a multiple of the block size k={k} "
                f"for {structure}"
            )
        target = (
            (*b.shape[:-1], n // k, k, k)
            if isinstance(structure, BlockDiagonal)
            else (*b.shape[:-1], n, n)
        )
        what = f"broadcastable to {fmt_shape(target)} for {structure}"
    try:
        full = torch.broadcast_shapes(tuple(a.shape), target)
    except RuntimeError:
        full = None
    if full != target:
        raise ValueError(f"a: expected a shape {what}, got {fmt_shape(a.shape)}")
    return a, b


def _canonicalize(
    a: Tensor, b: Tensor, h0: Tensor | None, structure: Structure
) -> tuple[Tensor, Tensor, Tensor | None, _Canon]:
    """Promote dtypes and reshape to the canonical (contiguous) layout."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    B, L = b.shape[0], b.shape[1]
    feats = b.shape[2:]
    block = not isinstance(structure, Diagonal)
    if block:
        n = feats[-1]
        k = structure.k if isinstance(structure, BlockDiagonal) else n
        G = math.prod(feats[:-1]) * (n // k)
        inner: tuple[int, ...] = (G, k, k)
        full = (
            (*b.shape[:-1], n // k, k, k)
            if isinstance(structure, BlockDiagonal)
            else (*b.shape[:-1], n, n)
        )
        D = G
    else:
        k = 1
        D = math.prod(feats)
        inner = (D,)
        full = tuple(b.shape)
    # Left-pad a's shape to the full rank; batch/time broadcast stays a stride of zero.
    a_pad = a.reshape((1,) * (len(full) - a.dim()) + tuple(a.shape))
    Ba = B if a_pad.shape[0] != 1 else 1
    La = L if a_pad.shape[1] != 1 else 1
    a_c = a_pad.to(dtype).expand(Ba, La, *full[2:]).reshape(Ba, La, *inner).contiguous()
    b_c = b.to(dtype).reshape(B, L, *inner[:-2], k) if block else b.to(dtype).reshape(B, L, D)
    b_c = b_c.contiguous()
    h0_c = None
    if h0 is not None:
        h0_c = h0.to(dtype).reshape(B, *b_c.shape[2:]).contiguous()
    return a_c, b_c, h0_c, _Canon(block, B, L, D, k, Ba, La, full)


# --------------------------------------------------------------------------- reference


@fp32_under_autocast
def scan_reference(
    a: Tensor,
    b: Tensor,
    h0: Tensor | None = None,
    *,
    structure: Structure | str = "diagonal",
    reverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """Readable reference of :func:`scan`: a loop over time under plain autograd.

    Same arguments and results as :func:`scan`. Iterates over ``unbind(1)`` and
    stacks once at the end, so its backward is linear in the length.
    """
    st = as_structure(structure)
    a, b = _validate(a, b, h0, st)
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    B, L = b.shape[0], b.shape[1]
    if isinstance(st, Diagonal):
        a_full = a.to(dtype).expand(b.shape)
        bb = b.to(dtype)
    else:
        n = b.shape[-1]
        k = n if isinstance(st, Dense) else st.k
        lead = b.shape[:-1]
        full = (*lead, n // k, k, k) if isinstance(st, BlockDiagonal) else (*lead, n, n)
        a_full = a.to(dtype).expand(full)
        bb = b.to(dtype)
        if isinstance(st, BlockDiagonal):
            bb = bb.reshape(*lead, n // k, k)
    h = (
        torch.zeros((B, *bb.shape[2:]), dtype=dtype, device=b.device)
        if h0 is None
        else h0.to(dtype).reshape(B, *bb.shape[2:])
    )
    steps = list(zip(a_full.unbind(1), bb.unbind(1)))
    if reverse:
        steps.reverse()
    outs = []
    for a_t, b_t in steps:
        if isinstance(st, Diagonal):
            h = a_t * h + b_t
        else:
            h = (a_t @ h.unsqueeze(-1)).squeeze(-1) + b_t
        outs.append(h)
    if reverse:
        outs.reverse()
    if L == 0:
        hs = torch.zeros(bb.shape, dtype=dtype, device=b.device)
    else:
        hs = torch.stack(outs, 1)
    return hs.reshape(b.shape), h.reshape(B, *b.shape[2:])


# --------------------------------------------------------------------------- chunked (torch)


def _chunk_size(L: int) -> int:
    return max(8, math.isqrt(max(L, 1)))


def _apply(block: bool, c: Tensor, h: Tensor) -> Tensor:
    return (c @ h.unsqueeze(-1)).squeeze(-1) if block else c * h


def _chunked_forward(c: Tensor, x: Tensor, init: Tensor | None, block: bool) -> Tensor:
    """All states of s_t = c_t s_{t-1} + x_t (forward in time) by the chunked algorithm.

    c: (Bc, Lc, *inner) broadcastable to x's batch/time; x: (B, L, ...); init: (B, ...).
    """
    B, L = x.shape[:2]
    C = _chunk_size(L)
    n = -(-L // C)
    pad = n * C - L
    c = c.expand(B, L, *c.shape[2:])
    if pad:
        if block:
            eye = torch.eye(c.shape[-1], dtype=c.dtype, device=c.device)
            c = torch.cat([c, eye.expand(B, pad, *c.shape[2:])], 1)
        else:
            c = torch.cat(
                [c, torch.ones((B, pad, *c.shape[2:]), dtype=c.dtype, device=c.device)], 1
            )
        x = torch.cat([x, x.new_zeros((B, pad, *x.shape[2:]))], 1)
    c = c.reshape(B, n, C, *c.shape[2:])
    x = x.reshape(B, n, C, *x.shape[2:])
    # 1) within each chunk, from a zero state: local states and cumulative transitions
    hs, ps = [x[:, :, 0]], [c[:, :, 0]]
    for j in range(1, C):
        cj = c[:, :, j]
        hs.append(_apply(block, cj, hs[-1]) + x[:, :, j])
        ps.append(cj @ ps[-1] if block else cj * ps[-1])
    h_local = torch.stack(hs, 2)
    prod = torch.stack(ps, 2)
    # 2) the state entering each chunk (block: a matrix acting on a column state)
    carry = init if init is not None else x.new_zeros((B, *x.shape[3:]))
    if block:
        c_in = chunk_state_scan(
            prod[:, :, -1], h_local[:, :, -1].unsqueeze(-1), carry.unsqueeze(-1), matrix=True
        )[0].squeeze(-1)
    else:
        c_in = chunk_state_scan(prod[:, :, -1], h_local[:, :, -1], carry)[0]
    c_in = c_in.unsqueeze(2)
    # 3) fix-up: add each chunk's incoming state carried through the chunk
    # (diagonal: the same fused multiply-add as the carry in step 2, so a chunk's last
    # state is bit-for-bit the carried one, whichever way the chunks fall)
    if block:
        h = h_local + _apply(block, prod, c_in.expand_as(h_local))
    else:
        h = torch.addcmul(h_local, prod, c_in)
    return h.reshape(B, n * C, *x.shape[3:])[:, :L]


def _shifted_adjoint_coeffs(a: Tensor, canon: _Canon, reverse: bool) -> Tensor:
    """Coefficients of the adjoint recurrence, written as a forward-in-time scan.

    For a forward original, lambda_t = A_{t+1}^H lambda_{t+1} + g_t runs backward in time;
    we flip time and use c_i = A^H at the step processed before, identity first.
    """
    L = canon.L
    aH = a.conj().transpose(-1, -2) if canon.block else a.conj()
    aH = aH.expand(aH.shape[0], L, *aH.shape[2:])
    ident = (
        torch.eye(canon.k, dtype=a.dtype, device=a.device).expand(aH.shape[0], 1, *aH.shape[2:])
        if canon.block
        else torch.ones((aH.shape[0], 1, *aH.shape[2:]), dtype=a.dtype, device=a.device)
    )
    if not reverse:
        # processing order t = L-1..0; coefficient at t is A_{t+1}; flipped index i = L-1-t
        return torch.cat([ident, aH[:, 1:].flip(1)], 1)
    # original reverse: adjoint runs t = 0..L-1 with coefficient A_{t-1}
    return torch.cat([ident, aH[:, :-1]], 1)


# --------------------------------------------------------------------------- native


_NATIVE_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def native_available() -> bool:
    """Whether the native scan kernel is built and loadable here (builds it if needed)."""
    return _native.available("scan")


def _native_supported(canon: _Canon, dtype: torch.dtype, device: torch.device) -> bool:
    if device.type != "cpu" or dtype not in _NATIVE_DTYPES:
        return False
    return not (canon.block and dtype.is_complex)


# --------------------------------------------------------------------------- autograd


class _ScanFunction(torch.autograd.Function):
    """The chunked scan with the adjoint backward (the native kernel is the operator
    ``torch.ops.rnnx.scan``, whose autograd formula is the same adjoint by its kernel)."""

    @staticmethod
    def forward(ctx, a, x, h0, canon: _Canon, reverse: bool):
        if reverse:
            h = _chunked_forward(a.flip(1), x.flip(1), h0, canon.block).flip(1)
        else:
            h = _chunked_forward(a, x, h0, canon.block)
        last = (h[:, 0] if reverse else h[:, -1]).clone()
        ctx.save_for_backward(a, h, h0)
        ctx.canon, ctx.reverse = canon, reverse
        return h, last

    @staticmethod
    def backward(ctx, g_h, g_last):
        a, h, h0 = ctx.saved_tensors
        canon: _Canon = ctx.canon
        reverse: bool = ctx.reverse
        need_a, _need_x, need_h0 = ctx.needs_input_grad[:3]
        g = torch.zeros_like(h) if g_h is None else g_h.contiguous()
        gF = None if g_last is None else g_last.contiguous()
        # the adjoint as a forward scan over flipped time (forward original)
        coeff = _shifted_adjoint_coeffs(a, canon, reverse)
        if reverse:
            lam = _chunked_forward(coeff, g, gF, canon.block)
        else:
            lam = _chunked_forward(coeff, g.flip(1), gF, canon.block).flip(1)
        ga = gh0 = None
        if need_a:
            first = (h0 if h0 is not None else torch.zeros_like(h[:, 0])).unsqueeze(1)
            h_prev = (
                torch.cat([h[:, 1:], first], 1) if reverse else torch.cat([first, h[:, :-1]], 1)
            )
            if canon.block:
                ga = lam.unsqueeze(-1) * h_prev.conj().unsqueeze(-2)
            else:
                ga = lam * h_prev.conj()
            ga = ga.sum_to_size(a.shape)
        if need_h0 and h0 is not None:
            lam0 = lam[:, -1] if reverse else lam[:, 0]
            a0 = a[:, -1] if reverse else a[:, 0]
            a0 = a0.expand(canon.B, *a0.shape[1:])
            gh0 = _apply(
                canon.block, a0.conj().transpose(-1, -2) if canon.block else a0.conj(), lam0
            )
        return ga, lam, gh0, None, None


# --------------------------------------------------------------------------- public


@fp32_under_autocast
def scan(
    a: Tensor,
    b: Tensor,
    h0: Tensor | None = None,
    *,
    structure: Structure | str = "diagonal",
    reverse: bool = False,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """All states of the linear recurrence h_t = A_t h_{t-1} + b_t, and the last one.

    Args:
        a: the transitions A_t. ``Diagonal()``: any shape broadcastable to ``b``
            (e.g. ``(features,)`` for a time-invariant A, ``(batch, length, *features)``
            for a selective one); real or complex. ``BlockDiagonal(k)``: broadcastable to
            ``(batch, length, *features[:-1], n // k, k, k)``; ``Dense()``: to
            ``(batch, length, *features[:-1], n, n)``, where ``n = b.shape[-1]``.
        b: the inputs b_t, ``(batch, length, *features)``.
        h0: initial state ``(batch, *features)``; zeros if None.
        structure: ``Diagonal()`` (default, also ``"diagonal"``), ``BlockDiagonal(k)`` or
            ``Dense()`` (``"dense"``); see :mod:`rnnx.ops.structure`.
        reverse: run from the last step to the first, h_t = A_t h_{t+1} + b_t, with
            ``h0`` entering after the last step (for bidirectional layers).
        backend: ``"auto"`` picks ``"native"`` for CPU tensors it supports (diagonal real
            or complex, block-diagonal/dense real) when the kernel is built, otherwise
            ``"torch"``. (Old names: ``"chunked"`` is ``"torch"``; ``"reference"`` runs
            :func:`scan_reference`, with a DeprecationWarning.) The choice depends
            only on structure, dtype and device, never on the values or the length.

    Returns:
        ``(h, h_last)``: every state ``(batch, length, *features)`` in the promoted dtype
        of ``a``, ``b`` and ``h0``, and the final state ``(batch, *features)`` (the state
        after the last step processed: ``h[:, -1]``, or ``h[:, 0]`` when ``reverse``).
        For length 0, ``h`` is empty and ``h_last`` is ``h0`` (or zeros).
    """
    st = as_structure(structure)
    a, b = _validate(a, b, h0, st)
    backend = op_backend(backend, BACKENDS, reference="scan_reference()")
    if backend == REFERENCE or b.shape[1] == 0:
        return scan_reference(a, b, h0, structure=st, reverse=reverse)
    a_c, b_c, h0_c, canon = _canonicalize(a, b, h0, st)
    impl = backend
    if backend in ("auto", "native"):
        ok = _native_supported(canon, b_c.dtype, b_c.device)
        if backend == "native" and not ok:
            raise ValueError(
                f"backend: 'native' supports CPU tensors of dtype float32/float64 "
                f"(and complex64/complex128 for Diagonal()), got {b_c.dtype} on "
                f"{b_c.device} with {st}"
            )
        built = ok and _native.available("scan")
        if backend == "native" and not built:
            raise RuntimeError(
                "backend: 'native' was requested but the native scan kernel is unavailable: "
                f"{_native.unavailable_reason('scan')}"
            )
        impl = "native" if built else "torch"
    if impl == "native":
        h, last = native_ops.call("scan", a_c, b_c, h0_c, bool(reverse))
    else:
        h, last = _ScanFunction.apply(a_c, b_c, h0_c, canon, reverse)
    return h.reshape(b.shape), last.reshape(b.shape[0], *b.shape[2:])
