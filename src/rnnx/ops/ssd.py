"""Mamba-2's state-space duality (SSD): a selective SSM with a scalar decay per head.

"Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured
State Space Duality" (Dao & Gu 2024, arXiv 2405.21060). For head h with P channels and a
state of N per channel, with Δ_t = softplus(dt_t + dt_bias) (or dt_t as given):

    h_t = exp(Δ_t[h] A[h]) h_{t-1} + Δ_t[h] x_t[h] B_t[g]^T        (P x N per head)
    y_t[h] = h_t C_t[g] + D[h] x_t[h]

where head h reads group g = h // (H / G) of B and C. Unrolled, y = M x with the
semiseparable matrix M[i, j] = C_i·B_j exp(Σ_{k=j+1..i} Δ_k A) Δ_j for i >= j: attention
with a decay mask. The chunked algorithm (the paper's Sec. 6, "SSD algorithm") splits time
into chunks of ``chunk_size`` Q and computes

1. inside each chunk, the quadratic form y_diag = (C B^T ∘ decay ∘ Δ) x by matrix products;
2. each chunk's state from a zero start, S_c = Σ_j exp(Σ_{k>j} Δ_k A) Δ_j x_j B_j^T;
3. the states entering the chunks by a scan across chunks, h_c = exp(Σ_chunk Δ A) h_{c-1} + S_c
   (L/Q steps of one scalar decay per head);
4. the contribution of the entering state, y_off_i = exp(Σ_{k<=i} Δ_k A) h_{c-1} C_i.

Inside a chunk, heads go before time so that every contraction is a batched matrix
product; the heads of a group share B and C, so the state and read-out products run
once per group over (heads · P) columns. Work is O(L Q) for the quadratic part and
O(L N P) for the rest; autograd keeps
O(batch · L · Q · H) numbers (the decay matrices) and the chunk states, never a state per
step. Decays are formed as segment sums Σ_{k=j+1..i} Δ_k A (a cumulative sum of masked
entries, not a difference of two cumulative sums), so they stay exact for long chunks.

One signature for the family: ``ssd(x, dt, A, B, C, D, *, initial_state,
output_final_state, cu_seqlens, ..., chunk_size, backend) -> (y, final_state or None)``.
Backend: ``"torch"`` (the algorithm above, pure PyTorch, any device; what ``"auto"``
picks); the recurrence step by step is :func:`ssd_reference`. (Old names, with a
DeprecationWarning: ``"chunked"`` is ``"torch"``; ``"reference"`` runs :func:`ssd_reference`.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnx._amp import fp32_under_autocast
from rnnx._checks import fmt_shape, require_positive_int, require_tensor
from rnnx._vocab import REFERENCE, op_backend
from rnnx.ops._pack import check_cu_seqlens, compute_dtype, packed_to_padded, padded_to_packed
from rnnx.ops.chunk_state import chunk_state_scan

BACKENDS: tuple[str, ...] = ("auto", "torch")

__all__ = ["BACKENDS", "ssd", "ssd_reference"]


# --------------------------------------------------------------------------- validation


def _validate(x, dt, A, B, C, D, dt_bias, initial_state, cu_seqlens):
    x = require_tensor("x", x)
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            "x: expected a floating-point tensor (batch, length, heads, head_dim), got shape "
            f"{fmt_shape(x.shape)} and dtype {x.dtype}"
        )
    batch, length, H, P = x.shape
    dt = require_tensor("dt", dt)
    if tuple(dt.shape) != (batch, length, H) or not dt.is_floating_point():
        raise ValueError(
            f"dt: expected a floating-point tensor ({batch}, {length}, {H}), got shape "
            f"{fmt_shape(dt.shape)} and dtype {dt.dtype}"
        )
    A = require_tensor("A", A)
    if tuple(A.shape) != (H,) or not A.is_floating_point():
        raise ValueError(
            f"A: expected a real tensor ({H},) (one decay rate per head), got shape "
            f"{fmt_shape(A.shape)} and dtype {A.dtype}"
        )
    B = require_tensor("B", B)
    if B.dim() == 3:
        B = B.unsqueeze(2)
    if B.dim() != 4 or tuple(B.shape[:2]) != (batch, length) or H % B.shape[2] != 0:
        raise ValueError(
            f"B: expected ({batch}, {length}, d_state) or ({batch}, {length}, groups, d_state) "
            f"with groups dividing {H} heads, got shape {fmt_shape(B.shape)}"
        )
    C = require_tensor("C", C)
    if C.dim() == 3:
        C = C.unsqueeze(2)
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(
            f"C: expected the shape of B {fmt_shape(B.shape)}, got {fmt_shape(C.shape)}"
        )
    if D is not None:
        D = require_tensor("D", D)
        if tuple(D.shape) not in ((H,), (H, P)) or not D.is_floating_point():
            raise ValueError(
                f"D: expected a floating-point tensor ({H},) or ({H}, {P}), got shape "
                f"{fmt_shape(D.shape)}"
            )
    if dt_bias is not None:
        dt_bias = require_tensor("dt_bias", dt_bias)
        if tuple(dt_bias.shape) != (H,):
            raise ValueError(f"dt_bias: expected shape ({H},), got {fmt_shape(dt_bias.shape)}")
    for name, t in (("B", B), ("C", C)):
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    named = (("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("dt_bias", dt_bias))
    for name, t in (*named, ("initial_state", initial_state)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: expected device {x.device} like x, got {t.device}")
    cu = None if cu_seqlens is None else check_cu_seqlens(cu_seqlens, batch, length)
    n_seq = batch if cu is None else cu.numel() - 1
    if initial_state is not None:
        initial_state = require_tensor("initial_state", initial_state)
        want = (n_seq, H, P, B.shape[-1])
        if tuple(initial_state.shape) != want or not initial_state.is_floating_point():
            what = "sequences in cu_seqlens" if cu is not None else "batch"
            raise ValueError(
                f"initial_state: expected a floating-point tensor {fmt_shape(want)} ({what}, "
                f"heads, head_dim, d_state), got shape {fmt_shape(initial_state.shape)}"
            )
    return x, dt, A, B, C, cu


def _prepare(x, dt, A, B, C, D, dt_bias, dt_softplus, initial_state):
    cdt = compute_dtype(x, dt, A, B, C, D, dt_bias, initial_state)
    dtc = dt.to(cdt)
    if dt_bias is not None:
        dtc = dtc + dt_bias.to(cdt)
    if dt_softplus:
        dtc = F.softplus(dtc)
    return cdt, x.to(cdt), dtc, A.to(cdt), B.to(cdt), C.to(cdt)


def _skip(y: Tensor, x: Tensor, D: Tensor | None) -> Tensor:
    if D is None:
        return y
    Dc = D.to(y.dtype)
    return y + x * (Dc.unsqueeze(-1) if Dc.dim() == 1 else Dc)


# --------------------------------------------------------------------------- reference


def _recurrence_reference(x, dt, A, B, C, h0):
    """The recurrence step by step: (y (b, L, H, P) without D, h_L (b, H, P, N))."""
    H = x.shape[2]
    h = h0
    ys = []
    for x_t, dt_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), B.unbind(1), C.unbind(1)):
        a_t = torch.exp(dt_t * A)  # (b, H)
        Bh = B_t.repeat_interleave(H // B_t.shape[1], dim=1)  # (b, H, N)
        Ch = C_t.repeat_interleave(H // C_t.shape[1], dim=1)
        h = a_t[..., None, None] * h + (dt_t.unsqueeze(-1) * x_t).unsqueeze(-1) * Bh.unsqueeze(2)
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Ch))
    y = torch.stack(ys, 1) if ys else x.new_zeros(x.shape)
    return y, h


@fp32_under_autocast
def ssd_reference(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Readable reference of :func:`ssd`: the recurrence one step at a time (plain autograd,
    linear-cost backward). Same arguments and results as :func:`ssd` without ``chunk_size``
    and ``backend``; packed sequences run one after another."""
    x, dt, A, B, C, cu = _validate(x, dt, A, B, C, D, dt_bias, initial_state, cu_seqlens)
    cdt, xc, dtc, Ac, Bc, Cc = _prepare(x, dt, A, B, C, D, dt_bias, dt_softplus, initial_state)
    batch, _, H, P = x.shape
    n_seq = batch if cu is None else cu.numel() - 1
    h0 = (
        x.new_zeros((n_seq, H, P, B.shape[-1]), dtype=cdt)
        if initial_state is None
        else initial_state.to(cdt)
    )
    if cu is None:
        y, h_last = _recurrence_reference(xc, dtc, Ac, Bc, Cc, h0)
    else:
        starts = cu.tolist()
        ys, hs = [], []
        for s in range(n_seq):
            sl = slice(starts[s], starts[s + 1])
            y_s, h_s = _recurrence_reference(
                xc[:, sl], dtc[:, sl], Ac, Bc[:, sl], Cc[:, sl], h0[s : s + 1]
            )
            ys.append(y_s)
            hs.append(h_s)
        y, h_last = torch.cat(ys, 1), torch.cat(hs, 0)
    y = _skip(y, xc, D).to(x.dtype)
    return y, (h_last if output_final_state else None)


# --------------------------------------------------------------------------- chunked


def _ssd_chunked(x, dt, A, B, C, h0, Q: int):
    """The chunked SSD algorithm (module docstring): (y without D, final state).

    Heads go before time inside a chunk, so that every contraction is a batched matrix
    product over the chunk's (Q x Q), (Q x P) and (Q x N) blocks.

    This is :func:`rnnx.ops.chunk.simple_gla`'s chunked form (queries C, keys B, values
    Δ x, log-decays Δ A, scale 1, state transposed) with B and C shared by the heads of a
    group. It stays its own function: a grouped engine in ``ops/chunk.py`` running both
    (this layout, segment-sum decays) kept SSD's speed but made linear attention,
    RetNet and simple GLA 9-29% slower on CPU (1 thread, batch 4, 4 heads, length 2048,
    head dim 64), because their per-head q and k then go through strided views instead
    of the contiguous chunk copies of ``_chunk_scalar_decay``. The chunk-to-chunk scan
    is the shared :func:`rnnx.ops.chunk_state.chunk_state_scan`.
    """
    b, L, H, P = x.shape
    G, N = B.shape[-2:]
    hpg = H // G
    Q = min(Q, L)  # a sequence shorter than a chunk is one chunk: no padding to Q for a decode step
    n = -(-L // Q)
    pad = n * Q - L
    if pad:  # zero steps with Δ = 0: no decay, no input, so the final state is unchanged
        x, dt, B, C = (F.pad(t, (0,) * (2 * (t.dim() - 2)) + (0, pad)) for t in (x, dt, B, C))
    x = x * dt.unsqueeze(-1)  # Δ_j x_j: cheaper here than on the (Q x Q) weights
    xq = x.reshape(b, n, Q, G, hpg, P).transpose(2, 3)  # (b, n, G, Q, hpg, P), a view
    x = xq.permute(0, 1, 2, 4, 3, 5)  # (b, n, G, hpg, Q, P), a view
    dt = dt.reshape(b, n, Q, G, hpg).permute(0, 1, 3, 4, 2)  # (b, n, G, hpg, Q)
    B = B.reshape(b, n, Q, G, N).transpose(2, 3)  # (b, n, G, Q, N)
    C = C.reshape(b, n, Q, G, N).transpose(2, 3)
    la = dt * A.reshape(G, hpg, 1)  # log of each step's decay, <= 0
    # seg[i, j] = Σ_{k=j+1..i} la_k for i >= j, as a cumulative sum of masked entries
    idx = torch.arange(Q, device=x.device)
    below = idx[:, None] > idx[None, :]
    zero = torch.zeros((), dtype=la.dtype, device=la.device)
    seg = torch.where(below, la.unsqueeze(-1), zero).cumsum(-2)  # (b, n, G, hpg, Qi, Qj)
    causal = idx[:, None] >= idx[None, :]
    decay = torch.exp(torch.where(causal, seg, torch.full((), -torch.inf, dtype=la.dtype)))
    # 1) inside the chunks: y_i = Σ_{j<=i} (C_i·B_j) decay[i, j] Δ_j x_j, per head
    CB = (C @ B.transpose(-1, -2)).unsqueeze(3)  # (b, n, G, 1, Qi, Qj)
    y = (CB * decay) @ x  # (b, n, G, hpg, Q, P)
    # 2) each chunk's state from a zero start, Σ_j exp(Σ_{k>j} la_k) Δ_j x_j B_j^T: the
    # heads of a group share B, so one product over (hpg·P) x Q x N per group
    to_end = decay[..., -1, :].transpose(-1, -2).unsqueeze(-1)  # (b, n, G, Q, hpg, 1)
    xs = (xq * to_end).reshape(b, n, G, Q, hpg * P)
    S = (xs.transpose(-1, -2) @ B).reshape(b, n, G, hpg, P, N)
    # 3) the states entering each chunk, by a scan across the L/Q chunks. The decay is one
    # scalar per head, so a loop of L/Q broadcast steps moves less memory than
    # rnnx.ops.scan, which would expand it to a full (P x N) transition per chunk.
    cs = la.cumsum(-1)  # Σ_{k<=i} la_k from the chunk start
    chunk_decay = torch.exp(cs[..., -1])[..., None, None]  # (b, n, G, hpg, 1, 1)
    h_enter, h_last = chunk_state_scan(chunk_decay, S, h0.reshape(b, G, hpg, P, N))
    h_enter = h_enter.reshape(b, n, G, hpg * P, N)
    # 4) the entering state read out inside the chunk (one product per group), decayed
    y_off = (C @ h_enter.transpose(-1, -2)).reshape(b, n, G, Q, hpg, P)
    y_off = y_off * torch.exp(cs).transpose(-1, -2).unsqueeze(-1)
    y = y.transpose(3, 4) + y_off  # (b, n, G, Q, hpg, P)
    y = y.transpose(2, 3).reshape(b, n * Q, H, P)
    return y[:, :L], h_last.reshape(b, H, P, N)


# --------------------------------------------------------------------------- public


@fp32_under_autocast
def ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    *,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Mamba-2's SSD layer core, batch-first; see the module docstring for the math.

    Args:
        x: inputs ``(batch, length, H, P)`` (H heads of P channels).
        dt: step sizes before ``dt_bias`` and softplus, ``(batch, length, H)``.
        A: ``(H,)`` decay rates (negative, e.g. ``-exp(A_log)``).
        B, C: ``(batch, length, N)`` or ``(batch, length, G, N)``; head h uses group
            ``h // (H // G)``.
        D: skip ``(H,)`` or ``(H, P)``, or None.
        dt_bias: ``(H,)`` added to dt; dt_softplus: apply softplus after it.
        initial_state: ``(batch, H, P, N)`` (``(n, H, P, N)`` with ``cu_seqlens``).
        output_final_state: return the state after the last step.
        cu_seqlens: int64 ``(n + 1,)`` cumulative starts of n sequences packed along time in
            a batch of 1 (they are padded into a batch for the chunked algorithm, with Δ = 0
            on the padding).
        chunk_size: Q, the chunk length of the chunked algorithm (64-256 are typical;
            the work inside chunks grows as Q, the scan across chunks as L / Q). A
            sequence shorter than Q is one chunk of its own length.
        backend: ``"auto"`` (= ``"torch"``) or ``"torch"``.

    Returns:
        ``(y, final_state)``: ``y`` ``(batch, length, H, P)`` in x's dtype; the final state
        ``(batch, H, P, N)`` in float32 (float64 if any input is) when
        ``output_final_state``, else None.
    """
    backend = op_backend(backend, BACKENDS, reference="ssd_reference()")
    require_positive_int("chunk_size", chunk_size)
    if backend == REFERENCE or (isinstance(x, Tensor) and x.dim() == 4 and x.shape[1] == 0):
        return ssd_reference(
            x,
            dt,
            A,
            B,
            C,
            D,
            dt_bias=dt_bias,
            dt_softplus=dt_softplus,
            initial_state=initial_state,
            output_final_state=output_final_state,
            cu_seqlens=cu_seqlens,
        )
    x, dt, A, B, C, cu = _validate(x, dt, A, B, C, D, dt_bias, initial_state, cu_seqlens)
    cdt, xc, dtc, Ac, Bc, Cc = _prepare(x, dt, A, B, C, D, dt_bias, dt_softplus, initial_state)
    batch, _, H, P = x.shape
    if cu is not None:
        xp, mask = packed_to_padded(xc, cu)
        dtp, Bp, Cp = (packed_to_padded(t, cu)[0] for t in (dtc, Bc, Cc))
        n_seq = cu.numel() - 1
    else:
        xp, dtp, Bp, Cp, n_seq = xc, dtc, Bc, Cc, batch
    h0 = (
        xc.new_zeros((n_seq, H, P, B.shape[-1])) if initial_state is None else initial_state.to(cdt)
    )
    y, h_last = _ssd_chunked(xp, dtp, Ac, Bp, Cp, h0, chunk_size)
    if cu is not None:
        y = padded_to_packed(y, mask)
    y = _skip(y, xc, D).to(x.dtype)
    return y, (h_last if output_final_state else None)
