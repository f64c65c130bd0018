"""Mamba's selective scan: a diagonal SSM whose step, input and output maps depend on the input.

"Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (Gu & Dao 2023,
arXiv 2312.00752), Algorithm 2 (S6). For each channel d = 1..D and state index n = 1..N,
with Δ_t = softplus(delta_t + delta_bias) (or delta_t as given):

    Ā_t[d,n] = exp(Δ_t[d] A[d,n])                     (zero-order hold for A)
    h_t[d,n] = Ā_t[d,n] h_{t-1}[d,n] + Δ_t[d] B_t[g,n] u_t[d]   (Euler for B, as in Mamba)
    y_t[d]   = Σ_n C_t[g,n] h_t[d,n] + D[d] u_t[d],   out_t = y_t · silu(z_t[d])

where g = d // (D / G) is the channel's group of B and C (G = 1: B, C shared by all
channels). With ``negative_eigenvalues=True`` the transition is mapped from (0, 1] to
(-1, 1] as in "Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues"
(Grazzi et al. 2024, arXiv 2411.12537, Sec. 4 and their Mamba code):
Ā_t = 2 exp(Δ_t A) - 1, with the input term Δ_t B_t u_t unchanged.

One signature for the family (batch-first; packed sequences by ``cu_seqlens``):
``selective_scan(u, delta, A, B, C, D, z, *, initial_state, output_final_state,
cu_seqlens, ..., backend) -> (out, final_state or None)``.

Backends (the same function; chosen by explicit ``backend``, never by values or length):

* :func:`selective_scan_reference`: a loop over time in plain PyTorch
  (linear-cost autograd). The oracle of the tests.
* ``"native"``: a fused C++ kernel (``rnnx/_native/selective_scan.cpp``; the operator
  ``torch.ops.rnnx.selective_scan``). The state
  (D, N) of a sequence stays in cache while the kernel walks time, computing Ā on the
  fly and y_t = C_t·h_t at once, with softplus, bias, D and the z gate in the same pass:
  nothing of size (batch, length, D, N) is ever written.
  The forward keeps a checkpoint of the state every ``chunk_size`` steps when a gradient
  is needed; the backward recomputes each chunk from its checkpoint and runs the adjoint
  recurrence through it (memory O(batch·length·D·N / chunk_size)).
* ``"torch"``: pure PyTorch for any device. Time is cut into chunks; a chunk's states
  (batch, chunk, D, N) are built by :func:`rnnx.ops.scan` and contracted with C, and only
  the states at chunk boundaries are kept; backward recomputes one chunk at a time.

``"auto"`` picks ``"native"`` for CPU float32/float64 when the kernel builds, otherwise
``"torch"``. (Old names, with a DeprecationWarning: ``"chunked"`` is ``"torch"``;
``"reference"`` runs :func:`selective_scan_reference`.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnx import _native
from rnnx._amp import fp32_under_autocast
from rnnx._checks import fmt_shape, require_positive_int, require_tensor
from rnnx._native import ops as native_ops
from rnnx._vocab import REFERENCE, op_backend
from rnnx.ops._pack import check_cu_seqlens, compute_dtype, packed_to_padded, padded_to_packed
from rnnx.ops.scan import scan

BACKENDS: tuple[str, ...] = ("auto", "native", "torch")

__all__ = [
    "BACKENDS",
    "native_available",
    "selective_scan",
    "selective_scan_reference",
]

# --------------------------------------------------------------------------- validation


def _validate(u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens):
    u = require_tensor("u", u)
    if u.dim() != 3 or not u.is_floating_point():
        raise ValueError(
            f"u: expected a floating-point tensor (batch, length, channels), got shape "
            f"{fmt_shape(u.shape)} and dtype {u.dtype}"
        )
    batch, length, dim = u.shape
    delta = require_tensor("delta", delta)
    if tuple(delta.shape) != tuple(u.shape) or not delta.is_floating_point():
        raise ValueError(
            f"delta: expected a floating-point tensor of u's shape {fmt_shape(u.shape)}, got "
            f"shape {fmt_shape(delta.shape)} and dtype {delta.dtype}"
        )
    A = require_tensor("A", A)
    if A.dim() != 2 or A.shape[0] != dim or not A.is_floating_point():
        raise ValueError(
            f"A: expected a real tensor ({dim}, d_state), got shape {fmt_shape(A.shape)} and "
            f"dtype {A.dtype}"
        )
    N = A.shape[1]
    B = require_tensor("B", B)
    if B.dim() == 3:
        B = B.unsqueeze(2)
    if (
        B.dim() != 4
        or tuple(B.shape[:2]) != (batch, length)
        or B.shape[3] != N
        or dim % B.shape[2] != 0
    ):
        raise ValueError(
            f"B: expected ({batch}, {length}, {N}) or ({batch}, {length}, groups, {N}) with "
            f"groups dividing {dim} channels, got shape {fmt_shape(B.shape)}"
        )
    C = require_tensor("C", C)
    if C.dim() == 3:
        C = C.unsqueeze(2)
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(
            f"C: expected the shape of B {fmt_shape(B.shape)}, got {fmt_shape(C.shape)}"
        )
    for name, t, shape in (("D", D, (dim,)), ("delta_bias", delta_bias, (dim,)), ("z", z, None)):
        if t is None:
            continue
        t = require_tensor(name, t)
        want = tuple(u.shape) if shape is None else shape
        if tuple(t.shape) != want or not t.is_floating_point():
            raise ValueError(
                f"{name}: expected a floating-point tensor of shape {fmt_shape(want)}, got "
                f"shape {fmt_shape(t.shape)} and dtype {t.dtype}"
            )
    for name, t in (("B", B), ("C", C)):
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    named: tuple[tuple[str, Tensor | None], ...]
    named = (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z))
    named += (("delta_bias", delta_bias), ("initial_state", initial_state))
    for name, t in named:
        if t is not None and t.device != u.device:
            raise ValueError(f"{name}: expected device {u.device} like u, got {t.device}")
    cu = None if cu_seqlens is None else check_cu_seqlens(cu_seqlens, batch, length)
    n_seq = batch if cu is None else cu.numel() - 1
    if initial_state is not None:
        initial_state = require_tensor("initial_state", initial_state)
        want = (n_seq, dim, N)
        if tuple(initial_state.shape) != want:
            what = "sequences in cu_seqlens" if cu is not None else "batch"
            raise ValueError(
                f"initial_state: expected shape {fmt_shape(want)} ({what}, channels, d_state), "
                f"got {fmt_shape(initial_state.shape)}"
            )
        if not initial_state.is_floating_point():
            raise TypeError(
                f"initial_state: expected a floating-point tensor, got {initial_state.dtype}"
            )
    return u, delta, A, B, C, cu


# --------------------------------------------------------------------------- reference


def _expand_groups(x: Tensor, dim: int) -> Tensor:
    """(..., G, N) -> (..., dim, N): channel d reads group d // (dim / G)."""
    return x.repeat_interleave(dim // x.shape[-2], dim=-2)


def _recurrence_reference(u, dt, A, B, C, h0, negative):
    """The S6 recurrence, one step at a time: (y (b, L, D), h_L (b, D, N))."""
    dim = u.shape[-1]
    h = h0
    ys = []
    for u_t, dt_t, B_t, C_t in zip(u.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        a_t = torch.exp(dt_t.unsqueeze(-1) * A)  # (b, D, N)
        if negative:
            a_t = 2 * a_t - 1
        h = a_t * h + (dt_t * u_t).unsqueeze(-1) * _expand_groups(B_t, dim)
        ys.append((h * _expand_groups(C_t, dim)).sum(-1))
    y = torch.stack(ys, 1) if ys else u.new_zeros(u.shape)
    return y, h


@fp32_under_autocast
def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    *,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    negative_eigenvalues: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Readable reference of :func:`selective_scan`: a loop over time under plain autograd.

    Same arguments and results as :func:`selective_scan` (without ``backend`` and
    ``chunk_size``). Packed sequences (``cu_seqlens``) are run one after another.
    """
    u, delta, A, B, C, cu = _validate(
        u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens
    )
    cdt = compute_dtype(u, delta, A, B, C, D, z, delta_bias, initial_state)
    dt = _delta(delta, delta_bias, delta_softplus, cdt)
    uc, Ac, Bc, Cc = u.to(cdt), A.to(cdt), B.to(cdt), C.to(cdt)
    batch, length, dim = u.shape
    starts = [0, length] if cu is None else cu.tolist()
    n_seq = batch if cu is None else len(starts) - 1
    h0 = (
        u.new_zeros((n_seq, dim, A.shape[1]), dtype=cdt)
        if initial_state is None
        else initial_state.to(cdt)
    )
    if cu is None:
        y, h_last = _recurrence_reference(uc, dt, Ac, Bc, Cc, h0, negative_eigenvalues)
    else:
        ys, hs = [], []
        for s in range(n_seq):
            sl = slice(starts[s], starts[s + 1])
            y_s, h_s = _recurrence_reference(
                uc[:, sl], dt[:, sl], Ac, Bc[:, sl], Cc[:, sl], h0[s : s + 1], negative_eigenvalues
            )
            ys.append(y_s)
            hs.append(h_s)
        y, h_last = torch.cat(ys, 1), torch.cat(hs, 0)
    out = _skip_and_gate(y, uc, D, z, cdt).to(u.dtype)
    return out, (h_last if output_final_state else None)


def _delta(delta: Tensor, bias: Tensor | None, softplus: bool, cdt: torch.dtype) -> Tensor:
    dt = delta.to(cdt)
    if bias is not None:
        dt = dt + bias.to(cdt)
    return F.softplus(dt) if softplus else dt


def _skip_and_gate(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, cdt) -> Tensor:
    if D is not None:
        y = y + u * D.to(cdt)
    if z is not None:
        y = y * F.silu(z.to(cdt))
    return y


# --------------------------------------------------------------------------- chunked (torch)


def _chunk_states(u, dt, A, B, C, h, negative, scan_backend="auto"):
    """One chunk by :func:`rnnx.ops.scan` (on ``scan_backend``): (y (b, K, D), state
    after the chunk)."""
    b, K, dim = u.shape
    G, N = B.shape[-2:]
    a = torch.exp(dt.unsqueeze(-1) * A)  # (b, K, D, N)
    if negative:
        a = 2 * a - 1
    # channels as (group, channel in group): B and C broadcast, never repeated per channel
    x = ((dt * u).view(b, K, G, dim // G, 1) * B.unsqueeze(3)).view(b, K, dim, N)
    hs, last = scan(a, x, h, backend=scan_backend)
    y = torch.einsum("bkgen,bkgn->bkge", hs.view(b, K, G, dim // G, N), C)
    return y.reshape(b, K, dim), last


def _chunk_loop(u, dt, A, B, C, h, chunk: int, negative: bool, scan_backend: str):
    """All chunks one after another (y (b, L, D), last state), under plain autograd."""
    ys = []
    for t0 in range(0, u.shape[1], chunk):
        sl = slice(t0, t0 + chunk)
        y, h = _chunk_states(u[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], h, negative, scan_backend)
        ys.append(y)
    return (torch.cat(ys, 1) if ys else u.new_zeros(u.shape)), h


class _ChunkedScan(torch.autograd.Function):
    """Chunk by chunk; keeps the states at chunk boundaries and recomputes in backward.

    Its loop over chunks is not :func:`rnnx.ops.chunk_state.chunk_state_scan`: each chunk
    is scanned *from the carried state* (the state enters :func:`rnnx.ops.scan` as h0), so
    no chunk transition or zero-start update is ever formed; the all-chunks-at-once form
    that does use the shared scan is :mod:`rnnx.ops.selective_scan_chunk`.
    """

    @staticmethod
    def forward(ctx, u, dt, A, B, C, h0, chunk: int, negative: bool, scan_backend: str):
        L = u.shape[1]
        bounds = list(range(0, L, chunk))
        h = h0
        ys, entering = [], []
        with torch.no_grad():
            for t0 in bounds:
                sl = slice(t0, t0 + chunk)
                entering.append(h)
                y, h = _chunk_states(
                    u[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], h, negative, scan_backend
                )
                ys.append(y)
        ctx.save_for_backward(u, dt, A, B, C, *entering)
        ctx.chunk, ctx.negative, ctx.scan_backend = chunk, negative, scan_backend
        y = torch.cat(ys, 1) if ys else u.new_zeros(u.shape)
        return y, h

    @staticmethod
    def backward(ctx, g_y, g_last):
        u, dt, A, B, C, *entering = ctx.saved_tensors
        chunk, L = ctx.chunk, u.shape[1]
        g_y = torch.zeros_like(u) if g_y is None else g_y
        g_h = torch.zeros_like(entering[0]) if g_last is None else g_last
        gu, gdt, gB, gC = (torch.zeros_like(t) for t in (u, dt, B, C))
        gA = torch.zeros_like(A)
        for i in reversed(range(len(entering))):
            sl = slice(i * chunk, min(L, (i + 1) * chunk))
            with torch.enable_grad():
                leaves = [
                    t.detach().requires_grad_()
                    for t in (u[:, sl], dt[:, sl], A, B[:, sl], C[:, sl], entering[i])
                ]
                # mypy counts the *leaves list as filling every parameter
                y, last = _chunk_states(*leaves, ctx.negative, ctx.scan_backend)  # type: ignore[call-arg]
                grads = torch.autograd.grad((y, last), leaves, (g_y[:, sl], g_h))
            gu[:, sl], gdt[:, sl], gA_i, gB[:, sl], gC[:, sl], g_h = grads
            gA += gA_i
        return gu, gdt, gA, gB, gC, g_h, None, None, None


# --------------------------------------------------------------------------- native

_NATIVE_DTYPES = (torch.float32, torch.float64)


def native_available() -> bool:
    """Whether the native selective-scan kernel is built and loadable (builds it if needed)."""
    return _native.available("selective_scan")


# --------------------------------------------------------------------------- public


@fp32_under_autocast
def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    *,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    negative_eigenvalues: bool = False,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Mamba's selective scan (S6), batch-first; see the module docstring for the math.

    Args:
        u: inputs ``(batch, length, D)``.
        delta: step sizes before ``delta_bias`` and softplus, ``(batch, length, D)``.
        A: ``(D, N)`` real (negative for a stable system, e.g. ``-exp(A_log)``).
        B, C: ``(batch, length, N)`` (shared by all channels) or ``(batch, length, G, N)``
            (channel d uses group ``d // (D // G)``).
        D: skip ``(D,)`` or None. z: gate ``(batch, length, D)`` or None (out = y·silu(z)).
        delta_bias: ``(D,)`` added to delta; delta_softplus: apply softplus after it.
        initial_state: ``(batch, D, N)`` (``(n, D, N)`` with ``cu_seqlens``); zeros if None.
        output_final_state: return the state after the last step.
        cu_seqlens: int64 ``(n + 1,)`` cumulative starts of n sequences packed along time
            in a batch of 1; each starts from its own initial state.
        negative_eigenvalues: transition ``2 exp(Δ A) - 1`` in (-1, 1] instead of
            ``exp(Δ A)`` in (0, 1] (arXiv 2411.12537).
        chunk_size: time steps per chunk of the ``"torch"`` backend, and the checkpoint
            interval of the ``"native"`` backward.
        backend: ``"auto"``, ``"native"`` or ``"torch"``.

    Returns:
        ``(out, final_state)``: ``out`` ``(batch, length, D)`` in u's dtype; the final state
        ``(batch, D, N)`` (``(n, D, N)`` with ``cu_seqlens``) in float32 (float64 if any
        input is float64) when ``output_final_state``, else None.
    """
    backend = op_backend(backend, BACKENDS, reference="selective_scan_reference()")
    require_positive_int("chunk_size", chunk_size)
    if backend == REFERENCE or (isinstance(u, Tensor) and u.dim() == 3 and u.shape[1] == 0):
        return selective_scan_reference(
            u,
            delta,
            A,
            B,
            C,
            D,
            z,
            delta_bias=delta_bias,
            delta_softplus=delta_softplus,
            initial_state=initial_state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
            negative_eigenvalues=negative_eigenvalues,
        )
    u, delta, A, B, C, cu = _validate(
        u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens
    )
    cdt = compute_dtype(u, delta, A, B, C, D, z, delta_bias, initial_state)
    impl = backend
    if backend in ("auto", "native"):
        ok = u.device.type == "cpu" and cdt in _NATIVE_DTYPES
        if backend == "native" and not ok:
            raise ValueError(
                f"backend: 'native' supports CPU tensors (float32/float64), got {u.device}"
            )
        built = ok and _native.available("selective_scan")
        if backend == "native" and not built:
            raise RuntimeError(
                "backend: 'native' was requested but the native selective-scan kernel is "
                f"unavailable: {_native.unavailable_reason('selective_scan')}"
            )
        impl = "native" if built else "torch"
    batch, length, dim = u.shape
    N = A.shape[1]
    if impl == "native":
        offsets = torch.arange(batch + 1, dtype=torch.int64) * length if cu is None else cu

        def rows(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(cdt).reshape(batch * length, *t.shape[2:])

        def flat(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(cdt)

        out, h_last = native_ops.call(
            "selective_scan",
            rows(u),
            rows(delta),
            flat(A),
            rows(B),
            rows(C),
            flat(D),
            rows(z),
            flat(delta_bias),
            flat(initial_state),
            offsets,
            bool(delta_softplus),
            chunk_size,
            bool(negative_eigenvalues),
        )
        out = out.reshape(batch, length, dim).to(u.dtype)
        return out, (h_last if output_final_state else None)
    dt = _delta(delta, delta_bias, delta_softplus, cdt)
    uc, Ac, Bc, Cc = u.to(cdt), A.to(cdt), B.to(cdt), C.to(cdt)
    h0 = None if initial_state is None else initial_state.to(cdt)
    if cu is not None:
        # pad the packed sequences into a batch; Δ = 0 on padding keeps the state
        up, mask = packed_to_padded(uc, cu)
        dtp, Bp, Cp = (packed_to_padded(t, cu)[0] for t in (dt, Bc, Cc))
        n_seq = cu.numel() - 1
    else:
        up, dtp, Bp, Cp, n_seq = uc, dt, Bc, Cc, batch
    if h0 is None:
        h0 = uc.new_zeros((n_seq, dim, N))
    # backend "torch" is PyTorch throughout (its chunks' scans too); "auto" lets them pick
    scan_backend = backend if backend == "torch" else "auto"
    args = (up, dtp, Ac, Bp, Cp, h0, chunk_size, negative_eigenvalues, scan_backend)
    if torch.compiler.is_compiling():
        # torch.compile cannot trace the recomputing backward (autograd.grad inside a
        # Function): the compiled graph differentiates the chunk loop itself
        y, h_last = _chunk_loop(*args)
    else:
        y, h_last = _ChunkedScan.apply(*args)
    if cu is not None:
        y = padded_to_packed(y, mask)
    out = _skip_and_gate(y, uc, D, z, cdt).to(u.dtype)
    return out, (h_last if output_final_state else None)
