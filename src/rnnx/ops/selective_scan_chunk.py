"""Mamba's selective scan in chunks processed all at once: the ``"chunk"`` mode.

The same function as :func:`rnnx.ops.selective_scan` (Gu & Dao 2023, arXiv 2312.00752,
Algorithm 2), organised like the chunked algorithm of Mamba-2's SSD (Dao & Gu 2024,
arXiv 2405.21060, Sec. 6) so that a GPU runs it in a few hundred large batched
operations instead of one small operation per step:

1. time is cut into chunks of Q steps; inside every chunk at once, the state from a zero
   start, h~_j = a_j h~_{j-1} + x_j (Q steps, each one operation over all chunks), and the
   chunk's running transition P_j = a_0 ... a_j (one cumulative product);
2. the states entering the chunks, by the recurrence across chunks
   h_in[c + 1] = P_{Q-1}[c] h_in[c] + h~_{Q-1}[c] (L / Q steps over (batch, D, N));
3. every state h_j = h~_j + P_j h_in[c] (one elementwise pass), and y = C h, a batched
   contraction over the state.

with a_t = exp(Δ_t A) (or 2 exp(Δ_t A) - 1) and x_t = Δ_t B_t u_t per channel and state,
``(batch, length, D, N)``. Backward is the adjoint recurrence
lambda_t = dL/dh_t + a_{t+1} lambda_{t+1}, organised the same way in reverse, from the
entering states that forward keeps; everything of size (batch, length, D, N) is
recomputed, so memory is O(batch · length · D + batch · (length / Q) · D · N).

Why not SSD's matrix products. SSD's intra-chunk step is attention with a decay mask,
``(C B^T ∘ L) X``, a product of (Q x Q) by (Q x P) matrices per head, because Mamba-2's
decay exp(Δ_t A_h) is one scalar per head, shared by the head's P channels and N states.
Mamba-1's decay exp(Δ_t[d] A[d, n]) differs for every channel d *and* state n: the mask
becomes a (Q x Q) matrix per (d, n), D N of them with nothing to share a product over
(P = 1), which costs Q times the states' memory, and its separable form
exp(Λ_t) exp(-Λ_s) overflows in float32 once a chunk's decay exceeds e^88 (a large Δ,
common after training) while the exact segment-sum form needs that (Q x Q x D x N)
tensor. So the chunked form keeps the work elementwise (O(L D N), exact and stable)
and wins its speed by batching over chunks; on a GPU it is measured against Mamba-2's
SSD path in ``scripts/gpu_check.py`` (docs/gpu.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rnnx._amp import fp32_under_autocast
from rnnx._checks import require_positive_int
from rnnx.ops._pack import compute_dtype, packed_to_padded, padded_to_packed
from rnnx.ops.chunk_state import chunk_state_scan
from rnnx.ops.selective_scan import _delta, _skip_and_gate, _validate

__all__ = ["selective_scan_chunk"]


def _transitions(dt: Tensor, A: Tensor, negative: bool) -> tuple[Tensor, Tensor]:
    """a = exp(Δ A) (or 2 exp(Δ A) - 1) and da/d(Δ A), ``(b, L, D, N)``."""
    e = torch.exp(dt.unsqueeze(-1) * A)
    if negative:
        return 2 * e - 1, 2 * e
    return e, e


def _inputs(u: Tensor, dt: Tensor, B: Tensor) -> Tensor:
    """x = Δ u B per channel and state, ``(b, L, D, N)`` (B shared within a group)."""
    b, L, D = u.shape
    G, N = B.shape[-2:]
    return ((dt * u).view(b, L, G, D // G, 1) * B.unsqueeze(3)).view(b, L, D, N)


def _pad(t: Tensor, pad: int, value: float) -> Tensor:
    if not pad:
        return t
    filler = torch.full((t.shape[0], pad, *t.shape[2:]), value, dtype=t.dtype, device=t.device)
    return torch.cat([t, filler], 1)


def _addcmul_into(out: Tensor, x: Tensor, a: Tensor, b: Tensor) -> None:
    """out = x + a * b, written into the view ``out`` (no temporary in eager mode; under
    ``torch.compile``, which cannot write ``out=`` into a strided view, a copy that the
    compiler fuses)."""
    if torch.compiler.is_compiling():
        out.copy_(torch.addcmul(x, a, b))
    else:
        torch.addcmul(x, a, b, out=out)


def _chunk_states(a: Tensor, x: Tensor, h0: Tensor, Q: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every state of h_t = a_t h_{t-1} + x_t, chunk by chunk (module docstring).

    a, x: ``(b, L, D, N)`` with L a multiple of Q; h0 ``(b, D, N)``. Returns
    ``(h (b, L, D, N), h_in (b, L / Q, D, N), h_last (b, D, N))``.
    """
    b, L, D, N = x.shape
    nc = L // Q
    ac = a.view(b, nc, Q, D, N)
    xc = x.view(b, nc, Q, D, N)
    local = torch.empty_like(xc)
    local[:, :, 0] = xc[:, :, 0]
    for j in range(1, Q):
        _addcmul_into(local[:, :, j], xc[:, :, j], ac[:, :, j], local[:, :, j - 1])
    prod = torch.cumprod(ac, 2)
    h_in, carry = chunk_state_scan(prod[:, :, -1], local[:, :, -1], h0)
    h = torch.addcmul(local, prod, h_in.unsqueeze(2))
    return h.view(b, L, D, N), h_in, carry


def _chunk_adjoint(a: Tensor, g: Tensor, g_last: Tensor, Q: int) -> tuple[Tensor, Tensor]:
    """The adjoint lambda_t = g_t + a_{t+1} lambda_{t+1} (lambda_{L-1} = g_{L-1} + g_last),
    chunk by chunk in reverse; returns ``(lambda (b, L, D, N), dL/dh0 = a_0 lambda_0)``."""
    b, L, D, N = g.shape
    nc = L // Q
    ac = a.view(b, nc, Q, D, N)
    gc = g.view(b, nc, Q, D, N)
    local = torch.empty_like(gc)
    local[:, :, -1] = gc[:, :, -1]
    for j in range(Q - 2, -1, -1):
        _addcmul_into(local[:, :, j], gc[:, :, j], ac[:, :, j + 1], local[:, :, j + 1])
    # suffix[j] = a_{j+1} ... a_{Q-1} (1 at the last step), whole[c] = a_0 ... a_{Q-1}
    rev = torch.cumprod(ac.flip(2), 2).flip(2)  # a_j ... a_{Q-1}
    suffix = torch.cat([rev[:, :, 1:], torch.ones_like(rev[:, :, :1])], 2)
    # mu[c]: the adjoint arriving at the end of chunk c from after it; what leaves chunk c
    # backwards is a_0 lambda_0 = a_0 (local_0 + suffix_0 mu) = a_0 local_0 + whole mu
    mu, carry = chunk_state_scan(rev[:, :, 0], ac[:, :, 0] * local[:, :, 0], g_last, reverse=True)
    lam = torch.addcmul(local, suffix, mu.unsqueeze(2))
    return lam.view(b, L, D, N), carry


class _SelectiveChunk(torch.autograd.Function):
    """y_t = C_t h_t and the final state; u, dt (b, L, D); A (D, N); B, C (b, L, G, N);
    h0 (b, D, N); L a multiple of Q (padding: dt = 0, u = 0)."""

    @staticmethod
    def forward(ctx, u, dt, A, B, C, h0, Q: int, negative: bool):
        b, L, D = u.shape
        G, N = B.shape[-2:]
        a, _ = _transitions(dt, A, negative)
        h, h_in, h_last = _chunk_states(a, _inputs(u, dt, B), h0, Q)
        y = torch.einsum("blgen,blgn->blge", h.view(b, L, G, D // G, N), C).reshape(b, L, D)
        ctx.save_for_backward(u, dt, A, B, C, h0, h_in)
        ctx.Q, ctx.negative = Q, negative
        return y, h_last

    @staticmethod
    def backward(ctx, g_y, g_last):
        u, dt, A, B, C, h0, h_in = ctx.saved_tensors
        Q, negative = ctx.Q, ctx.negative
        b, L, D = u.shape
        G, N = B.shape[-2:]
        E = D // G
        g_y = torch.zeros_like(u) if g_y is None else g_y
        g_last = torch.zeros_like(h0) if g_last is None else g_last
        a, da_dlog = _transitions(dt, A, negative)
        x = _inputs(u, dt, B)
        # the states again, from the entering states kept by forward (no carry loop)
        nc = L // Q
        ac = a.view(b, nc, Q, D, N)
        local = torch.empty_like(x).view(b, nc, Q, D, N)
        xc = x.view(b, nc, Q, D, N)
        local[:, :, 0] = xc[:, :, 0]
        for j in range(1, Q):
            _addcmul_into(local[:, :, j], xc[:, :, j], ac[:, :, j], local[:, :, j - 1])
        h = torch.addcmul(local, torch.cumprod(ac, 2), h_in.unsqueeze(2)).view(b, L, D, N)
        del local, xc, x
        # y = C h: dC, and the gradient reaching every state
        hg = h.view(b, L, G, E, N)
        g_yg = g_y.view(b, L, G, E)
        gC = torch.einsum("blge,blgen->blgn", g_yg, hg)
        g_h = (g_yg.unsqueeze(-1) * C.unsqueeze(3)).view(b, L, D, N)
        lam, gh0 = _chunk_adjoint(a, g_h, g_last, Q)
        del g_h
        # x = Δ u B: du, dB and part of dΔ
        lamB = torch.einsum("blgen,blgn->blge", lam.view(b, L, G, E, N), B).reshape(b, L, D)
        gu = dt * lamB
        gdt = u * lamB
        gB = torch.einsum("blgen,blge->blgn", lam.view(b, L, G, E, N), (dt * u).view(b, L, G, E))
        # a = exp(Δ A): da = lambda h_{t-1}
        h_prev = torch.cat([h0.unsqueeze(1), h[:, :-1]], 1)
        w = lam.mul_(h_prev).mul_(da_dlog)  # dL/d(Δ A), in lambda's memory
        gdt = gdt + (w * A).sum(-1)
        gA = torch.einsum("bldn,bld->dn", w, dt)
        return gu, gdt, gA, gB, gC, gh0, None, None


@fp32_under_autocast
def selective_scan_chunk(
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
) -> tuple[Tensor, Tensor | None]:
    """Mamba's selective scan by the chunked algorithm of the module docstring.

    Same arguments and results as :func:`rnnx.ops.selective_scan` (``chunk_size`` is
    Q, the chunk length; any length works, the last chunk is padded with identity steps).
    Pure PyTorch, any device; differentiable in every input (the initial state's
    gradient included) by the chunked adjoint.
    """
    require_positive_int("chunk_size", chunk_size)
    u, delta, A, B, C, cu = _validate(
        u, delta, A, B, C, D, z, delta_bias, initial_state, cu_seqlens
    )
    cdt = compute_dtype(u, delta, A, B, C, D, z, delta_bias, initial_state)
    dt = _delta(delta, delta_bias, delta_softplus, cdt)
    uc, Ac, Bc, Cc = u.to(cdt), A.to(cdt), B.to(cdt), C.to(cdt)
    batch, _, dim = u.shape
    N = A.shape[1]
    if cu is not None:  # pad the packed sequences into a batch; Δ = 0 keeps the state
        up, mask = packed_to_padded(uc, cu)
        dtp, Bp, Cp = (packed_to_padded(t, cu)[0] for t in (dt, Bc, Cc))
        n_seq = cu.numel() - 1
    else:
        up, dtp, Bp, Cp, n_seq = uc, dt, Bc, Cc, batch
    h0 = uc.new_zeros((n_seq, dim, N)) if initial_state is None else initial_state.to(cdt)
    T = up.shape[1]
    Q = min(chunk_size, T)
    pad = math.ceil(T / Q) * Q - T
    y, h_last = _SelectiveChunk.apply(
        _pad(up, pad, 0.0),
        _pad(dtp, pad, 0.0),
        Ac,
        _pad(Bp, pad, 0.0),
        _pad(Cp, pad, 0.0),
        h0,
        Q,
        negative_eigenvalues,
    )
    y = y[:, :T]
    if cu is not None:
        y = padded_to_packed(y, mask)
    out = _skip_and_gate(y, uc, D, z, cdt).to(u.dtype)
    return out, (h_last if output_final_state else None)
