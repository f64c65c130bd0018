"""The chunk-to-chunk state scan shared by every chunked op.

Every chunked algorithm of rnnx (linear attention, RetNet, GLA and simple GLA, Mamba-2's
SSD, mLSTM, DeltaNet, Mamba's chunked selective scan and the chunked :func:`rnnx.ops.scan`)
does the same three things: it summarises each chunk c of the sequence as a transition
``decay_c`` and an update ``update_c`` computed from a zero start, carries the state from
chunk to chunk,

    state_{c+1} = decay_c ∘ state_c + update_c,        c = 0 .. N-1,

and reads every chunk's output off the state *entering* it. This module is the middle
step, once: the "inter-chunk recurrence" of GLA (Yang et al., arXiv 2312.06635, §3.3,
S_[i+1] = (α_[i+1]ᵀ 1) ⊙ S_[i] + ...) and step 3 of Mamba-2's SSD algorithm (Dao & Gu,
arXiv 2405.21060, §6, "inter-chunk recurrence on the chunk states"); flash-linear-attention
keeps the same piece once in ``ops/common/chunk_h.py``.

The loop runs over the N chunks (a few dozen), never over time, so it is cheap in Python;
its backward is the adjoint loop (not autograd through N steps, which would keep N
intermediate graphs), with λ the gradient reaching the state after chunk c::

    d update_c = λ_{c+1},    d decay_c = λ_{c+1} ⊗ state_cᴴ,
    λ_c = decay_cᴴ λ_{c+1} + d entering_c,    d initial = λ_0 (λ after the loop)

(⊗ the elementwise product for elementwise decays, the product λ stateᴴ for
matrix decays; ᴴ the conjugate transpose, torch's convention for complex gradients).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chunk_state_scan"]


def _step(decay: Tensor, state: Tensor, update: Tensor, matrix: bool) -> Tensor:
    """decay ∘ state + update (``decay @ state + update`` for matrix decays)."""
    if matrix:
        return torch.matmul(decay, state).add_(update)
    return torch.addcmul(update, decay, state)


def _order(n: int, reverse: bool) -> range:
    return range(n - 1, -1, -1) if reverse else range(n)


def _scan_forward(
    decay: Tensor, update: Tensor, initial: Tensor, matrix: bool, reverse: bool
) -> tuple[Tensor, Tensor]:
    """The loop itself: every entering state written into one preallocated tensor."""
    entering = torch.empty_like(update)
    state = initial
    for c in _order(update.shape[1], reverse):
        entering[:, c] = state
        state = _step(decay[:, c], state, update[:, c], matrix)
    return entering, state


class _ChunkStateScan(torch.autograd.Function):
    """:func:`chunk_state_scan` with the adjoint loop as its backward (module docstring)."""

    @staticmethod
    def forward(ctx, decay, update, initial, matrix: bool, reverse: bool):
        entering, final = _scan_forward(decay, update, initial, matrix, reverse)
        ctx.save_for_backward(decay, entering)
        ctx.matrix, ctx.reverse = matrix, reverse
        return entering, final

    @staticmethod
    def backward(ctx, d_entering: Tensor | None, d_final: Tensor | None):
        decay, entering = ctx.saved_tensors
        matrix, reverse = ctx.matrix, ctx.reverse
        n = entering.shape[1]
        lam = torch.zeros_like(entering[:, 0]) if d_final is None else d_final.contiguous()
        d_update = torch.empty_like(entering)
        d_decay = None
        if ctx.needs_input_grad[0]:
            # chunk-major (N, B, ...): each chunk's product is written into a contiguous
            # slice (torch.compile traces out= only into contiguous tensors)
            per_chunk = (*entering.shape[:-1], entering.shape[-2]) if matrix else entering.shape
            full = torch.broadcast_shapes(decay.shape, per_chunk)
            d_decay = entering.new_empty((n, full[0], *full[2:]))
        decay_h = decay.mH if matrix else decay.conj()
        for c in _order(n, not reverse):
            d_update[:, c] = lam
            state_h = entering[:, c].mH if matrix else entering[:, c].conj()
            if d_decay is not None:
                (torch.matmul if matrix else torch.mul)(lam, state_h, out=d_decay[c])
            lam = torch.matmul(decay_h[:, c], lam) if matrix else lam * decay_h[:, c]
            if d_entering is not None:
                lam = lam + d_entering[:, c]
        if d_decay is not None:
            d_decay = d_decay.transpose(0, 1).sum_to_size(decay.shape)
        return d_decay, d_update, lam, None, None


def chunk_state_scan(
    decay: Tensor | None,
    update: Tensor,
    initial: Tensor,
    *,
    matrix: bool = False,
    reverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """The states entering every chunk, and the final state, of
    state_{c+1} = decay_c ∘ state_c + update_c (module docstring).

    Args:
        decay: the chunk transitions, chunk on dimension 1. Elementwise (default): any
            shape broadcastable to ``update``'s, e.g. ``(B, N, H, 1, 1)`` for one scalar per
            head and chunk (RetNet, simple GLA, SSD) or ``(B, N, H, K, 1)`` for one per key
            (GLA). ``matrix=True``: ``(B, N, ..., k, k)``, applied as ``decay_c @ state``
            (block-diagonal scans, DeltaNet). None: no decay, a running sum.
        update: the chunks' own contributions from a zero start, ``(B, N, *state)``.
        initial: the state before the first chunk, ``(B, *state)``.
        matrix: whether ``decay`` is a matrix acting on the state's last-but-one dimension.
        reverse: carry from the last chunk to the first (adjoint scans); ``initial`` then
            enters chunk N-1 and the final state is the one after chunk 0.

    Returns:
        ``(entering, final)``: ``entering[:, c]`` is the state before chunk c is applied,
        ``(B, N, *state)``; ``final`` ``(B, *state)`` the state after the last chunk.
        Differentiable in all three inputs (float or complex) by the adjoint loop.
    """
    if decay is None:
        ends = torch.cumsum(update.flip(1) if reverse else update, 1) + initial.unsqueeze(1)
        entering = torch.cat([initial.unsqueeze(1), ends[:, :-1]], 1)
        if reverse:
            return entering.flip(1), ends[:, -1]
        return entering, ends[:, -1]
    needs_grad = torch.is_grad_enabled() and (
        decay.requires_grad or update.requires_grad or initial.requires_grad
    )
    if not needs_grad:
        return _scan_forward(decay, update, initial, matrix, reverse)
    return _ChunkStateScan.apply(decay, update, initial, matrix, reverse)
