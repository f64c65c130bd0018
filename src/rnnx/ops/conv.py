"""Causal convolutions by FFT, and the convolution kernels of linear state-space models.

A linear time-invariant SSM x_k = Ā x_{k-1} + B̄ u_k, y_k = C x_k is the causal
convolution y = K * u with K_l = C Ā^l B̄ (LSSL, arXiv 2110.13985, Section 3.2). This
module computes K for the three structures of Ā the family uses, each with a readable
reference in the tests and without materialising an O(N^2 L) or (…, N, L) tensor for
long L:

* dense Ā (LSSL): the **Krylov** sequence B̄, ĀB̄, Ā²B̄, … by repeated squaring
  (:func:`krylov`: O(log L) matrix products, X ← [X, Ā^{2^k} X]); for long sequences
  :func:`krylov_kernel` cuts time into chunks of ``chunk`` steps, builds the Krylov
  block of one chunk by squaring and moves from chunk to chunk with the row vector
  C Ā^{jT}, so memory is O(N T + L) instead of O(N L). :func:`krylov_state` gives the
  state after a sequence by Horner's rule over the same chunks, and
  :func:`matrix_power_apply` applies Ā^n with a different n per sequence.
* diagonal Ā (S4D, S5): a **Vandermonde** product K_l = 2 Re Σ_n c_n exp(w_n l)
  (:func:`vandermonde_kernel`, arXiv 2206.11893), and its transpose for the final
  state (:func:`vandermonde_state`). Both are two-level: a position is l = j T + i
  with T about sqrt(L), so only N (J + T) exponentials are evaluated per base and the
  sum is one real matrix product; no (…, N, L) tensor is formed in either pass.
* diagonal plus low rank (S4, arXiv 2111.00396): the kernel's generating function at
  the roots of unity is a sum of **Cauchy** kernels Σ_n v_n / (z_k - w_n)
  (:func:`cauchy_kernel`, chunked over the points z likewise), combined by the
  Woodbury identity (:func:`dplr_bilinear_kernel`), and one inverse FFT.

:func:`fft_conv` is the one convolution all three layers run: a causal kernel and
(for bidirectional layers) an anticausal one in one real FFT along any time axis, in
slices of the batch, with its own backward; :func:`fft_conv_reference` is its oracle
(the direct O(L^2) sums) and :func:`causal_conv_fft` its (B, L, H) spelling.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnx._amp import fp32_under_autocast
from rnnx._checks import fmt_shape, require_tensor

__all__ = [
    "cauchy_kernel",
    "causal_conv_fft",
    "dplr_bilinear_kernel",
    "fft_conv",
    "fft_conv_reference",
    "krylov",
    "krylov_kernel",
    "krylov_response",
    "krylov_state",
    "matrix_power_apply",
    "vandermonde_kernel",
    "vandermonde_state",
]

#: Elements (of the broadcast batch x N x chunk) one chunk of the Vandermonde and Cauchy
#: kernels may hold at once: 2^22 complex numbers are 32 MiB in complex64.
CHUNK_ELEMENTS = 1 << 22
#: Time steps per chunk of the Krylov functions.
KRYLOV_CHUNK = 256


def _fft_size(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def _fast_size(n: int) -> int:
    """The smallest 5-smooth integer >= n (2^a 3^b 5^c: sizes the FFT is fast at)."""
    n = max(n, 1)
    best = _fft_size(n)
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _block_len(length: int) -> int:
    """T: a power of two near sqrt(length), the inner block of the two-level Vandermonde
    products (positions l = j T + i)."""
    return 1 << ((max(length, 1) - 1).bit_length() + 1) // 2


def _chunk_len(per_position: int, total: int) -> int:
    """Positions per chunk so that a chunk holds about CHUNK_ELEMENTS elements."""
    return max(16, min(total, CHUNK_ELEMENTS // max(1, per_position)))


# --------------------------------------------------------------------------- FFT conv


#: Complex elements of one slice of the batch in :func:`fft_conv`'s spectra. Slices keep
#: every temporary well below glibc's largest mmap threshold (32 MiB): a larger tensor is
#: mapped fresh on every call and pays a page fault per 4 KiB (about 0.5 ms per MiB here),
#: more than the FFT itself.
CONV_SLICE_ELEMENTS = 1 << 20


def _broadcast(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The broadcast of ``shapes``, or None if they do not broadcast. (Not
    ``torch.broadcast_shapes``: its first call imports about 500 modules, 34 MiB.)"""
    ndim = 0
    for s in shapes:
        ndim = max(ndim, len(s))
    out: list[int] = []
    for i in range(1, ndim + 1):
        size = 1
        for s in shapes:
            if len(s) >= i and s[-i] != 1:
                if size not in (1, s[-i]):
                    return None
                size = s[-i]
        out.insert(0, size)
    return tuple(out)


def _rows(t: Tensor, b0: int, b1: int) -> Tensor:
    """Rows ``b0:b1`` of the sliced (first) dimension, or all of a broadcast one."""
    return t if t.shape[0] == 1 else t[b0:b1]


def _add_rows(acc: Tensor, part: Tensor, b0: int, b1: int) -> None:
    """``acc`` (an operand's spectrum) += one slice of the batch's ``part``, summed over
    the dimensions the operand is broadcast along."""
    if acc.shape[0] == 1:
        acc += part.sum_to_size(acc.shape)
    else:
        acc[b0:b1] += part.sum_to_size(b1 - b0, *acc.shape[1:])


class _FFTConv(torch.autograd.Function):
    """y = irfft(rfft(x) (rfft(k) + conj(rfft(k_rev))))[..., :L] on time-last views, in
    slices of the first (batch) dimension, written into a contiguous output whose time
    axis is at ``out_pos``.

    The backward is the adjoint by hand: the adjoint of a convolution is the
    correlation with the same kernel, so the gradients are more real FFT products with
    the saved spectra (rfft(x) per slice, the combined kernel spectrum); the kernels'
    gradients are summed over the broadcast dimensions in the frequency domain, before
    their one inverse transform. Autograd through ``torch.fft.rfft`` instead pads the
    gradient and runs a complex FFT of the full size, about half of S4D's training step
    at L = 1024 (measured). No wrap-around: n >= L + (kernel length) - 1, so circular
    equals linear convolution (causal and anticausal), and the adjoints are exact.

    All operands have the same rank; dimension 0 is sliced, and an operand of size 1
    there is broadcast over the slices.
    """

    @staticmethod
    def forward(ctx, x, k, k_rev, n: int, out_pos: int):
        L = x.shape[-1]
        batch = _broadcast(*(tuple(t.shape[:-1]) for t in (x, k, k_rev) if t is not None))
        kf = None if k is None else torch.fft.rfft(k, n=n)
        if k_rev is not None:  # the anticausal term: correlation with k_rev
            kbf = torch.fft.rfft(k_rev, n=n).conj()
            kf = kbf.resolve_conj() if kf is None else kf + kbf
        assert kf is not None and batch is not None  # fft_conv checked k, k_rev and shapes
        F = kf.shape[-1]
        step = max(1, CONV_SLICE_ELEMENTS // max(1, math.prod(batch[1:]) * F))
        out = torch.empty((*batch[:out_pos], L, *batch[out_pos:]), dtype=x.dtype, device=x.device)
        y = out.movedim(out_pos, -1)
        # an input broadcast over the batch is transformed once
        xfs = [torch.fft.rfft(x, n=n)] if x.shape[0] == 1 else []
        for b0 in range(0, batch[0], step):
            b1 = min(batch[0], b0 + step)
            xf = xfs[0] if x.shape[0] == 1 else torch.fft.rfft(x[b0:b1], n=n)
            if x.shape[0] > 1:
                xfs.append(xf)
            y[b0:b1] = torch.fft.irfft(xf * _rows(kf, b0, b1), n=n)[..., :L]
        ctx.save_for_backward(kf, *xfs)
        ctx.meta = (
            n,
            step,
            out_pos,
            x.shape,
            None if k is None else k.shape,
            None if k_rev is None else k_rev.shape,
        )
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        kf, *xfs = ctx.saved_tensors
        n, step, out_pos, x_shape, k_shape, kr_shape = ctx.meta
        need_x, need_k, need_kr = ctx.needs_input_grad[:3]
        g = g.movedim(out_pos, -1)
        rows, L, F = g.shape[0], g.shape[-1], kf.shape[-1]

        def spectrum(shape):  # an accumulator for a kernel's gradient spectrum
            return torch.zeros((*shape[:-1], F), dtype=kf.dtype, device=kf.device)

        gkf = spectrum(k_shape) if need_k else None
        gkrf = None
        if need_kr:
            gkrf = gkf if gkf is not None and kr_shape == k_shape else spectrum(kr_shape)
        gx = gxv = gxf = None
        if need_x:
            # laid out like the input (time at out_pos), handed back as a time-last view
            gx = torch.empty(
                (*x_shape[:out_pos], L, *x_shape[out_pos:-1]), dtype=g.dtype, device=g.device
            )
            gxv = gx.movedim(out_pos, -1)
            if x_shape[0] == 1 and rows > 1:  # x broadcast over the batch: sum its spectra
                gxf = spectrum(x_shape)
        for i, b0 in enumerate(range(0, rows, step)):
            b1 = min(rows, b0 + step)
            gf = torch.fft.rfft(g[b0:b1], n=n)  # (b, ..., F)
            if gkf is not None or gkrf is not None:
                # correlation of g with x: the causal kernel's lags; its conjugate (taken
                # once, after the sum) gives the anticausal kernel's
                cross = gf * xfs[i if len(xfs) > 1 else 0].conj()
                if gkf is not None:
                    _add_rows(gkf, cross, b0, b1)
                if gkrf is not None and gkrf is not gkf:
                    _add_rows(gkrf, cross, b0, b1)
            if need_x:
                # correlation of g with the kernels (the adjoint of the convolution)
                gf.mul_(_rows(kf, b0, b1).conj())
                if gxf is not None:
                    _add_rows(gxf, gf, b0, b1)
                else:
                    part = gf.sum_to_size(b1 - b0, *x_shape[1:-1], F)
                    assert gxv is not None  # need_x
                    gxv[b0:b1] = torch.fft.irfft(part, n=n)[..., :L]
        if gxf is not None:
            assert gxv is not None  # gxf is set only with need_x
            gxv.copy_(torch.fft.irfft(gxf, n=n)[..., :L])
        gk = None if gkf is None else torch.fft.irfft(gkf, n=n)[..., : k_shape[-1]]
        gkr = None if gkrf is None else torch.fft.irfft(gkrf.conj(), n=n)[..., : kr_shape[-1]]
        return gxv, gk, gkr, None, None


@fp32_under_autocast
def fft_conv(u: Tensor, k: Tensor | None, k_rev: Tensor | None = None, *, dim: int = -1) -> Tensor:
    """y_t = Σ_{s<=t} k_{t-s} u_s + Σ_{s>=t} k_rev_{s-t} u_s along axis ``dim`` of ``u``.

    The convolution of every convolutional SSM layer (LSSL, S4, S4D): causal with the
    kernel ``k`` and, for bidirectional layers, anticausal with ``k_rev`` (an SSM run
    from the end of the sequence to its start, lag 0 included), both in one FFT.

    Args:
        u: real, time along ``dim``: e.g. ``(B, L, H)`` with ``dim=1``, or ``(..., L)``.
        k, k_rev: real kernels ``(..., Lk)``, lags along the last axis; their leading
            dimensions broadcast against ``u``'s other dimensions (in order, the time
            axis left out), e.g. u ``(B, L, H, 1)`` (``dim=1``) with k ``(H, M, Lk)``
            gives ``(B, L, H, M)``, and k ``(B, H, Lk)`` is a kernel per sequence. Lags
            >= L are ignored. Either may be None (not both).
        dim: the time axis of ``u``; the output has its time axis at the same position
            counted from the end.

    Returns:
        The broadcast shape with the time axis at ``dim``, contiguous, in the promoted
        dtype (at least float32). Real FFTs of a fast (5-smooth) size >= L + Lk - 1, in
        slices of the first dimension that keep every temporary under 32 MiB
        (:data:`CONV_SLICE_ELEMENTS`), with a hand-written backward.
        :func:`fft_conv_reference` is the direct sum it is tested against.
    """
    require_tensor("u", u)
    if k is None and k_rev is None:
        raise ValueError("k, k_rev: expected at least one kernel")
    if not -u.dim() <= dim < u.dim():
        raise ValueError(f"dim: expected an axis of u (shape {fmt_shape(u.shape)}), got {dim}")
    d = dim - u.dim() if dim >= 0 else dim  # counted from the end: the same in the output
    x = u.movedim(d, -1)
    L = x.shape[-1]
    kernels: list[Tensor | None] = []
    for name, t in (("k", k), ("k_rev", k_rev)):
        if t is not None:
            require_tensor(name, t)
            if t.dim() == 0 or t.shape[-1] == 0:
                raise ValueError(
                    f"{name}: expected a kernel (..., Lk), Lk >= 1, got shape {fmt_shape(t.shape)}"
                )
            t = t[..., :L]
        kernels.append(t)
    given = [t for t in kernels if t is not None]
    batch = _broadcast(tuple(x.shape[:-1]), *(tuple(t.shape[:-1]) for t in given))
    if batch is None:
        got = ", ".join(
            f"{n} {fmt_shape(t.shape)}" for n, t in zip(("k", "k_rev"), kernels) if t is not None
        )
        raise ValueError(
            f"k, k_rev: expected leading dimensions that broadcast against u's "
            f"{fmt_shape(x.shape[:-1])} (u without its time axis), got {got}"
        )
    work = torch.promote_types(torch.promote_types(u.dtype, given[0].dtype), torch.float32)
    for t in given[1:]:
        work = torch.promote_types(work, t.dtype)
    rank = max(len(batch), 1) + 1

    def lead(t: Tensor | None) -> Tensor | None:  # same rank for all (leading 1s): a view
        return None if t is None else t.to(work).reshape((1,) * (rank - t.dim()) + t.shape)

    n = _fast_size(L + max(t.shape[-1] for t in given) - 1)
    y = _FFTConv.apply(lead(x), lead(kernels[0]), lead(kernels[1]), n, rank + d)
    return y if batch else y.squeeze(0)


def causal_conv_fft(u: Tensor, k: Tensor) -> Tensor:
    """:func:`fft_conv` ``(u, k, dim=1)`` for batch-first ``u (B, L, H)`` and ``k (H, Lk)``
    or ``(B, H, Lk)``, returned in ``u``'s dtype: the causal convolution
    y_t = Σ_{s<=t} k_{t-s} u_s, ``(B, L, H)``."""
    return fft_conv(u, k, dim=1).to(u.dtype)


def fft_conv_reference(
    u: Tensor, k: Tensor | None, k_rev: Tensor | None = None, *, dim: int = -1
) -> Tensor:
    """The oracle of :func:`fft_conv`: the direct O(L^2) sums, one output step at a time.

    y_t = Σ_{s<=t} k_{t-s} u_s + Σ_{s>=t} k_rev_{s-t} u_s along axis ``dim`` of ``u``
    (lags beyond a kernel's length are zero); shapes as in :func:`fft_conv`, dtype by
    PyTorch's promotion. Plain indexing and sums, no FFT and nothing shared with it.
    """
    if k is None and k_rev is None:
        raise ValueError("k, k_rev: expected at least one kernel")
    x = u.movedim(dim, -1)
    ys = []
    for t in range(x.shape[-1]):
        y_t = x.new_zeros(())
        if k is not None:
            past = x[..., max(0, t - k.shape[-1] + 1) : t + 1]  # u_s for s = t - Lk + 1 … t
            y_t = y_t + (past * k[..., : past.shape[-1]].flip(-1)).sum(-1)
        if k_rev is not None:
            ahead = x[..., t : t + k_rev.shape[-1]]  # u_s for s = t … t + Lk - 1
            y_t = y_t + (ahead * k_rev[..., : ahead.shape[-1]]).sum(-1)
        ys.append(y_t)
    return torch.stack(ys, -1).movedim(-1, dim if dim < 0 else dim - u.dim())


# --------------------------------------------------------------------------- Vandermonde


def _positions(n: int, like: Tensor) -> Tensor:
    return torch.arange(n, device=like.device, dtype=like.real.dtype)


# Two-level Vandermonde products. A position is l = j T + i with T about sqrt(L), so
# exp(w l) = exp(w j T) exp(w i): only N (J + T) exponentials per base instead of N L
# (the transcendental functions, not the products, were the cost), and the sum over
# modes (or over time) is one real matrix product per base on [Re; Im] blocks, which
# einsum folds broadcast dimensions into (no copy of a block per batch element). No
# (..., N, L) tensor is ever formed (memory O(N (J + T)) per base, plus the (..., J, N)
# partial sums of the state); plain autograd differentiates it.


def _powers(w: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
    """(Re, Im) of exp(w_n p): two real ``(..., len(pos), N)`` tensors.

    As exp(Re w p) (cos, sin)(Im w p): real transcendental functions vectorise, the
    complex exponential does not (about 10x slower on CPU).
    """
    p = pos.unsqueeze(-1)
    mag = torch.exp(w.real.unsqueeze(-2) * p)
    ang = w.imag.unsqueeze(-2) * p
    return mag * torch.cos(ang), mag * torch.sin(ang)


@fp32_under_autocast
def vandermonde_kernel(coef: Tensor, log_base: Tensor, length: int, *, offset: int = 0) -> Tensor:
    """K_l = 2 Re(Σ_n coef_n exp(log_base_n (l + offset))) for l < length.

    The diagonal SSM kernel (S4D, arXiv 2206.11893), with one of each conjugate pair
    of modes stored. Two-level: with l = j T + i (T about sqrt(length)),
    K_{jT+i} = 2 Re Σ_n [c_n exp(w_n (jT + offset))] exp(w_n i), one real matrix product
    of a (J, 2N) and a (2N, T) block per base; no ``(..., N, length)`` tensor is formed.

    Args:
        coef, log_base: complex ``(..., N)`` (broadcastable); ``log_base`` is ΔA.
        offset: shift of the exponent (``offset=1`` gives the response to an initial
            state, whose first output has seen one step).

    Returns:
        Real ``(..., length)``.
    """
    length = int(length)
    T = _block_len(length)
    J = -(-length // T)
    w = log_base
    er, ei = _powers(w, _positions(T, w))  # (..., T, N): exp(w i)
    sr, si = _powers(w, _positions(J, w) * T + int(offset))  # (..., J, N): exp(w (jT + off))
    cr, ci = coef.real.unsqueeze(-2), coef.imag.unsqueeze(-2)
    # o = c exp(w (jT + off));  2 Re(o e) = 2 (Re o Re e - Im o Im e)
    rows = torch.cat([2 * (cr * sr - ci * si), -2 * (cr * si + ci * sr)], -1)  # (..., J, 2N)
    K = torch.einsum("...jk,...tk->...jt", rows, torch.cat([er, ei], -1))  # (..., J, T)
    return K.flatten(-2)[..., :length]


@fp32_under_autocast
def vandermonde_state(u: Tensor, log_base: Tensor, dB: Tensor) -> Tensor:
    """The state after a sequence: x_L = Σ_s exp(ΔA (L-1-s)) B̄ u_s (zero initial state).

    Two-level like :func:`vandermonde_kernel`: time (padded with zeros at the start to
    J T steps) is cut into J blocks of T; the exponent J T - 1 - (jT + i) is
    (J-1-j) T + (T-1-i), so all blocks are one real matrix product with the (T, 2N)
    block [Re, Im] exp(w (T-1-i)) (the batch folded into its rows), and the J partial
    states are joined with exp(w (J-1-j) T). Work B H N L (a matrix product),
    exponentials H N (J + T).

    Args:
        u: real ``(B, H, L)`` (any strides, e.g. a transposed ``(B, L, H)``).
        log_base: ΔA, complex ``(H, N)`` or ``(B, H, N)``.
        dB: B̄, complex, broadcastable to ``log_base``.

    Returns:
        Complex ``(B, H, N)``.
    """
    w = log_base
    L = u.shape[-1]
    N = w.shape[-1]
    T = min(_fft_size(L), 4 * _block_len(L))  # few blocks: the join is elementwise
    J = -(-L // T)
    x = u.to(w.real.dtype)
    if J * T > L:
        x = torch.nn.functional.pad(x, (J * T - L, 0))
    x = x.unflatten(-1, (J, T))  # (..., J, T)
    er, ei = _powers(w, _positions(T, w).flip(0))  # (..., T, N): exp(w (T-1-i))
    inner = torch.cat([er, ei], -1)  # (..., T, 2N)
    sr, si = _powers(w, _positions(J, w).flip(0) * T)  # (..., J, N): exp(w (J-1-j) T)
    fold = x.dim() == 4 and inner.dim() == 3  # u (B, H, L), w (H, N): batch into the rows
    if fold:
        Bsz, H = x.shape[:2]
        # one contiguous (H, B J, T) copy (a transposed u would make the product stride)
        xs = x.transpose(0, 1).contiguous().view(H, Bsz * J, T)
        part = torch.bmm(xs, inner).view(H, Bsz, J, 2 * N)
        sr, si = sr.unsqueeze(1), si.unsqueeze(1)  # (H, 1, J, N)
    else:
        part = torch.matmul(x, inner)  # (..., J, 2N)
    pr, pi = part[..., :N], part[..., N:]
    state = torch.complex((pr * sr - pi * si).sum(-2), (pr * si + pi * sr).sum(-2))
    if fold:
        state = state.transpose(0, 1)  # (B, H, N)
    return state * dB


# --------------------------------------------------------------------------- Cauchy


class _Cauchy(torch.autograd.Function):
    """out_{c,k} = Σ_n v_{c,n} / (z_k - s_k w_n), chunked over k in both passes."""

    @staticmethod
    def forward(ctx, v, w, z, s):
        batch = torch.broadcast_shapes(v.shape[:-2], w.shape[:-1], z.shape[:-1], s.shape[:-1])
        K, N = z.shape[-1], w.shape[-1]
        chunk = _chunk_len(max(1, math.prod(batch)) * N, K)
        dtype = v.dtype
        out = torch.empty((*batch, v.shape[-2], K), dtype=dtype, device=v.device)
        for a in range(0, K, chunk):
            b = min(K, a + chunk)
            R = 1 / (z[..., None, a:b] - s[..., None, a:b] * w[..., :, None])  # (..., N, k)
            out[..., a:b] = v @ R
        ctx.save_for_backward(v, w, z, s)
        ctx.chunk = chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        v, w, z, s = ctx.saved_tensors
        need = ctx.needs_input_grad
        K = z.shape[-1]
        batch = g.shape[:-2]
        N = w.shape[-1]
        gv = torch.zeros((*batch, *v.shape[-2:]), dtype=g.dtype, device=g.device)
        gw = torch.zeros((*batch, N), dtype=g.dtype, device=g.device)
        gz = torch.zeros((*batch, K), dtype=g.dtype, device=g.device)
        gs = torch.zeros((*batch, K), dtype=g.dtype, device=g.device)
        vh = v.conj().transpose(-1, -2)  # (..., N, C)
        for a in range(0, K, ctx.chunk):
            b = min(K, a + ctx.chunk)
            sk = s[..., None, a:b]
            Rc = (1 / (z[..., None, a:b] - sk * w[..., :, None])).conj().resolve_conj()
            gk = g[..., a:b]
            if need[0]:
                gv += gk @ Rc.transpose(-1, -2)
            if need[1] or need[2] or need[3]:
                Hm = (vh @ gk) * Rc * Rc  # Σ_c conj(v_cn) g_ck conj(R_nk)^2
                if need[1]:
                    gw += (Hm * sk.conj()).sum(-1)
                if need[2]:
                    gz[..., a:b] = -Hm.sum(-2)
                if need[3]:
                    gs[..., a:b] = (Hm * w[..., :, None].conj()).sum(-2)
        out: list[Tensor | None] = [None] * 4
        for i, (gi, t) in enumerate(((gv, v), (gw, w), (gz, z), (gs, s))):
            if need[i]:
                gi = gi if t.is_complex() else gi.real
                out[i] = gi.sum_to_size(t.shape)
        return tuple(out)


@fp32_under_autocast
def cauchy_kernel(v: Tensor, w: Tensor, z: Tensor, *, zscale: Tensor | None = None) -> Tensor:
    """The Cauchy kernel Σ_n v_{c,n} / (z_k - s_k w_n) for every row c and point k.

    With ``zscale`` s = 1 this is the Cauchy matrix-vector product of S4 (arXiv
    2111.00396, Section 3.3). A scale per point writes a point as the pair (z_k, s_k),
    so that points "at infinity" of the bilinear map (z_k / s_k with s_k = 0) need no
    special case. Computed in chunks of points, forward and backward.

    Args:
        v: complex ``(..., C, N)``; w: complex ``(..., N)`` (the poles);
        z: complex ``(..., K)``; zscale: ``(..., K)`` (default 1). Leading dimensions
            broadcast.

    Returns:
        Complex ``(..., C, K)``.
    """
    if zscale is None:
        zscale = torch.ones((), dtype=z.dtype, device=z.device).expand(z.shape)
    dtype = torch.promote_types(torch.promote_types(v.dtype, w.dtype), z.dtype)
    if not dtype.is_complex:
        dtype = torch.promote_types(dtype, torch.complex64)
    return _Cauchy.apply(v.to(dtype), w.to(dtype), z.to(dtype), zscale.to(dtype))


@fp32_under_autocast
def dplr_bilinear_kernel(
    C: Tensor, Lambda: Tensor, P: Tensor, Q: Tensor, B: Tensor, dt: Tensor, length: int
) -> Tensor:
    """The kernel K_l = C̃_full Ā^l B̄ of a conjugate-symmetric DPLR SSM, bilinear steps.

    A = diag(Λ) - P Q^*, stored as one of each conjugate pair (the full system is real
    of size 2N); Ā, B̄ by the bilinear transform with step Δ. ``C`` must already be
    C̃ = C (I - Ā^L) (S4, arXiv 2111.00396, Lemma C.3), which makes the generating
    function at the L-th roots of unity z_k = exp(-2πik/L) equal to the FFT of the
    truncated kernel:

        K̂(z) = C̃ (I - Ā z)^{-1} B̄ = 2 C̃ (D(z) + s P Q^*)^{-1} B,
        D_n(z) = (2/Δ)(1 - z) - s Λ_n,   s = 1 + z,

    with the inverse by Woodbury: 2 [k_CB - s k_CP (I + s k_QP)^{-1} k_QB], each
    k_ab = Σ_n a_n b_n / D_n(z) a Cauchy kernel over the 2N modes (a mode and its
    conjugate). Then K = irfft(K̂). O((M + r)(1 + r) N L) work, no N x N matrix.

    Args:
        C: ``(..., M, N)`` complex, C̃ for M output channels.
        Lambda: ``(..., N)``; P, Q: ``(..., r, N)``; B: ``(..., N)`` (complex).
        dt: Δ, real, broadcastable to the leading dimensions ``(...)``.
        length: L.

    Returns:
        Real ``(..., M, L)``.
    """
    M, r = C.shape[-2], P.shape[-2]
    K = length // 2 + 1
    real = Lambda.real.dtype
    k = torch.arange(K, device=Lambda.device, dtype=real)
    omega = torch.polar(torch.ones_like(k), -2 * math.pi * k / length)
    a = (2 / dt).unsqueeze(-1) * (1 - omega)  # (..., K)
    s = 1 + omega
    batch = torch.broadcast_shapes(
        C.shape[:-2], P.shape[:-2], Q.shape[:-2], B.shape[:-1], Lambda.shape[:-1], dt.shape
    )
    N = Lambda.shape[-1]
    rows = torch.cat([C.expand(*batch, M, N), Q.conj().expand(*batch, r, N)], -2)
    cols = torch.cat([B.unsqueeze(-2).expand(*batch, 1, N), P.expand(*batch, r, N)], -2)
    v = rows.unsqueeze(-2) * cols.unsqueeze(-3)  # (..., M + r, 1 + r, N)
    v = v.flatten(-3, -2)
    full_v = torch.cat([v, v.conj()], -1)
    full_w = torch.cat([Lambda, Lambda.conj()], -1)
    kk = cauchy_kernel(full_v, full_w, a, zscale=s.expand_as(a))  # (..., (M+r)(1+r), K)
    kk = kk.unflatten(-2, (M + r, 1 + r)).movedim(-1, -3)  # (..., K, M + r, 1 + r)
    k00 = kk[..., :M, :1]
    k01 = kk[..., :M, 1:]
    k10 = kk[..., M:, :1]
    k11 = kk[..., M:, 1:]
    sk = s.view(*s.shape, 1, 1)
    eye = torch.eye(r, dtype=kk.dtype, device=kk.device)
    corr = k01 @ torch.linalg.solve(eye + sk * k11, k10)
    khat = 2 * (k00 - sk * corr)[..., 0]  # (..., K, M)
    return torch.fft.irfft(khat.movedim(-2, -1), n=length)


# --------------------------------------------------------------------------- Krylov


@fp32_under_autocast
def krylov(dA: Tensor, dB: Tensor, length: int) -> Tensor:
    """The Krylov matrix [B̄, ĀB̄, Ā²B̄, …, Ā^{L-1}B̄] by repeated squaring.

    X starts as B̄ and doubles, X ← [X, Ā^{2^k} X], Ā^{2^{k+1}} = (Ā^{2^k})², so it
    costs O(log L) matrix products (LSSL, arXiv 2110.13985, Section 3.2).

    Args:
        dA: ``(..., N, N)``; dB: ``(..., N)``; length: L >= 1.

    Returns:
        ``(..., N, L)``; this materialises N x L per matrix, so use it for short L
        (:func:`krylov_kernel` and :func:`krylov_state` chunk long ones).
    """
    batch = torch.broadcast_shapes(dA.shape[:-2], dB.shape[:-1])
    X = dB.unsqueeze(-1).expand(*batch, dB.shape[-1], 1)
    power = dA
    while X.shape[-1] < length:
        # einsum folds batch dimensions that only X has into the product (no copy of Ā)
        X = torch.cat([X, torch.einsum("...ij,...jk->...ik", power, X)], -1)
        if X.shape[-1] < length:
            power = power @ power
    return X[..., :length]


def _chunk_powers(dA: Tensor, T: int) -> Tensor:
    """Ā^T by repeated squaring (T a power of two)."""
    power = dA
    for _ in range(T.bit_length() - 1):
        power = power @ power
    return power


def _row_powers(C: Tensor, step: Tensor, n: int) -> Tensor:
    """[C, C S, C S², …, C S^{n-1}] stacked on dim -3, by repeated squaring of S.

    C: ``(..., M, N)``; step S: ``(..., N, N)``. Returns ``(..., n, M, N)``.
    """
    M = C.shape[-2]
    batch = torch.broadcast_shapes(C.shape[:-2], step.shape[:-2])
    R = C.expand(*batch, *C.shape[-2:])  # (..., k M, N): (k, M) flattened
    power = step
    while R.shape[-2] < n * M:
        R = torch.cat([R, torch.einsum("...kn,...nm->...km", R, power)], -2)
        if R.shape[-2] < n * M:
            power = power @ power
    return R[..., : n * M, :].unflatten(-2, (-1, M))


@fp32_under_autocast
def krylov_kernel(
    C: Tensor, dA: Tensor, dB: Tensor, length: int, *, chunk: int = KRYLOV_CHUNK
) -> Tensor:
    """K_l = C Ā^l B̄ for l < L (M output channels), in chunks of T = ``chunk`` steps.

    Both factors come from repeated squaring: the Krylov block of one chunk,
    X = [B̄, …, Ā^{T-1}B̄] (:func:`krylov`), and the rows C Ā^{jT} of every chunk j
    (squaring Ā^T). Chunk j of the kernel is (C Ā^{jT}) X, all chunks in one batched
    product: O(log L) matrix products in all, memory O(N T + N M L/T + M L), never
    an N x L matrix.

    Args:
        C: ``(..., M, N)``; dA: ``(..., N, N)``; dB: ``(..., N)`` (broadcastable; e.g.
            a B̄ per batch element gives the response to a batch of initial states).
        chunk: a power of two.

    Returns:
        ``(..., M, L)``.
    """
    T = min(_fft_size(length), _fft_size(chunk))
    n = -(-length // T)
    X = krylov(dA, dB, T)  # (..., N, T)
    if n == 1:
        return (C @ X)[..., :length]
    rows = _row_powers(C, _chunk_powers(dA, T), n)  # (..., n, M, N)
    K = torch.einsum("...jmn,...nt->...mjt", rows, X)  # (..., M, n, T)
    return K.flatten(-2)[..., :length]


@fp32_under_autocast
def krylov_response(
    C: Tensor, dA: Tensor, x0: Tensor, length: int, *, chunk: int = KRYLOV_CHUNK
) -> Tensor:
    """y_l = C Ā^l x0 for l < L: the output of a free system from the states x0.

    With several initial states (a batch) the left factor is shared: the rows
    C Ā^i of one chunk (i < T) come from repeated squaring once, the states
    Ā^{jT} x0 of every chunk j from :func:`krylov` on Ā^T, and one contraction joins
    them. O(log L) matrix products; memory O(M N T + N L/T + M L) per feature.

    Args:
        C: ``(..., M, N)``; dA: ``(..., N, N)``; x0: ``(..., N)`` (e.g. ``(B, H, N)``
            against C ``(H, M, N)``: the batch dimension is folded into the product).

    Returns:
        ``(..., M, L)``.
    """
    T = min(_fft_size(length), _fft_size(chunk))
    n = -(-length // T)
    rows = _row_powers(C, dA, T)  # (..., T, M, N): C Ā^i
    states = krylov(_chunk_powers(dA, T), x0, n)  # (..., N, n): Ā^{jT} x0
    y = torch.einsum("...imn,...nj->...mji", rows, states)  # (..., M, n, T)
    return y.flatten(-2)[..., :length]


@fp32_under_autocast
def krylov_state(dA: Tensor, dB: Tensor, u: Tensor, *, chunk: int = KRYLOV_CHUNK) -> Tensor:
    """The state after a sequence from a zero state: x_L = Σ_s Ā^{L-1-s} B̄ u_s.

    Time is cut into n chunks of T steps (padded with zeros at the *start*, which
    leave a zero state unchanged). Each chunk's own contribution is X flip(u_chunk)
    with the Krylov block X of :func:`krylov`, all chunks in one product; the chunks
    are then combined pairwise, x = Ā^{T'} x_older + x_newer with T' doubling per
    level (a tree of log2 n levels, not a loop over chunks).

    Args:
        dA: ``(..., N, N)``; dB: ``(..., N)``; u: ``(..., L)`` real (leading
            dimensions broadcast, e.g. u ``(B, H, L)`` with dA ``(H, N, N)``).

    Returns:
        ``(..., N)``.
    """
    L = u.shape[-1]
    T = min(_fft_size(L), _fft_size(chunk))
    X = krylov(dA, dB, T)  # (..., N, T)
    n = _fft_size(-(-L // T))  # a power of two number of chunks
    pad = n * T - L
    if pad:
        u = torch.nn.functional.pad(u, (pad, 0))
    u = u.to(X.dtype).unflatten(-1, (n, T)).flip(-1)  # (..., n, T), newest step first
    x = torch.einsum("...nt,...jt->...jn", X, u)  # (..., n, N)
    if n == 1:
        return x[..., 0, :]
    power = _chunk_powers(dA, T)
    while x.shape[-2] > 1:
        older, newer = x[..., 0::2, :], x[..., 1::2, :]
        x = torch.einsum("...jm,...nm->...jn", older, power) + newer
        if x.shape[-2] > 1:
            power = power @ power
    return x[..., 0, :]


@fp32_under_autocast
def matrix_power_apply(dA: Tensor, n: Tensor, x: Tensor, *, max_n: int | None = None) -> Tensor:
    """Ā^{n_b} x_b with a power per sequence, by binary powers of Ā.

    Args:
        dA: ``(..., N, N)``; n: int64 ``(B,)`` >= 0; x: ``(B, ..., N)``.
        max_n: an upper bound of ``n`` known from shapes (e.g. the sequence length):
            the number of products then depends on it alone, with no host read of
            ``n`` (which ``torch.compile`` cannot trace). Default: ``n.max()``.

    Returns:
        ``(B, ..., N)``; O(log max(n)) matrix products.
    """
    out = x
    if max_n is not None:
        top = max_n
    else:
        top = int(n.max()) if n.numel() else 0
    power = dA
    bit = 0
    shape = (-1,) + (1,) * (x.dim() - 1)
    while (1 << bit) <= top:
        take = ((n >> bit) & 1).bool().view(shape)
        moved = torch.einsum("...ij,...j->...i", power, out)
        out = torch.where(take, moved, out)
        bit += 1
        if (1 << bit) <= top:
            power = power @ power
    return out
