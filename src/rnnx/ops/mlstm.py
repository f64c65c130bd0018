"""The mLSTM cell of xLSTM (Beck et al., arXiv 2405.04517), recurrent and chunked.

A matrix memory with an exponential input gate, a sigmoid (or exponential) forget gate
and a normaliser, kept finite by a max-stabiliser m (paper §2.3 and appendix)::

    log f_t = logsigmoid(f̃_t)   (or f̃_t for the exponential forget gate)
    m_t     = max(log f_t + m_{t-1}, ĩ_t)
    C_t     = e^{log f_t + m_{t-1} − m_t} C_{t-1} + e^{ĩ_t − m_t} k_t v_tᵀ     (K, V)
    n_t     = e^{log f_t + m_{t-1} − m_t} n_{t-1} + e^{ĩ_t − m_t} k_t          (K,)
    h_t     = scale · C_tᵀ q_t / (max(|scale · n_tᵀ q_t|, e^{−m_t}) + eps)

C and n are stored divided by e^{m_t} (the true memory is C_t e^{m_t}); h_t is the same
as without the stabiliser (up to ``eps``), which only keeps the exponentials finite.

Chunked form. Inside a chunk with incoming (C_0, n_0, m_0) and F_i = Σ_{l≤i} log f_l,
the true memory at step i weighs the incoming state by F_i + m_0 and step j <= i by
L_ij = F_i − F_j + ĩ_j (log space). Unrolling the recurrence shows that its stabiliser
is exactly the largest of these weights:

    m_i = max(F_i + m_0, max_{j≤i} L_ij),

so the chunked form computes the very m_t, C_t, n_t of the recurrence (not another
stabilisation of the same memory), with every exponential <= 1:

    h_i ∝ e^{F_i + m_0 − m_i} qᵢᵀ C_0 + Σ_{j≤i} e^{L_ij − m_i} (q_iᵀ k_j) v_j,

the same for the normaliser with v_j replaced by 1. The stabiliser at chunk ends
m_{n+1} = max(F_C + m_n, max_j L_Cj) is a short loop over chunks; the memories then
follow by diagonal scans over chunks.

Signature as the rest of the family (:mod:`rnnx.ops.chunk`), with gates ``i, f``
``(B, T, H)`` (pre-activations) and the state a tuple ``(C, n, m)`` of shapes
``(B, H, K, V)``, ``(B, H, K)``, ``(B, H)``.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnx._amp import fp32_under_autocast
from rnnx._checks import require_choice
from rnnx._native import ops as native_ops
from rnnx._vocab import REFERENCE, op_backend
from rnnx.ops._pack import compute_dtype, from_chunks, pad_time, run_packed, to_chunks
from rnnx.ops.chunk import (
    check_gate,
    check_options,
    check_qkv,
    default_scale,
    use_native,
)
from rnnx.ops.chunk_state import chunk_state_scan
from rnnx.ops.reference import mlstm_reference

__all__ = ["FORGET_GATES", "MLSTM_BACKENDS", "mlstm", "mlstm_reference"]

MLSTM_BACKENDS: tuple[str, ...] = ("auto", "native", "torch")
ForgetGate = Literal["sigmoid", "exp"]
FORGET_GATES: tuple[str, ...] = ("sigmoid", "exp")

MState = tuple[Tensor, Tensor, Tensor]


# --------------------------------------------------------------------------- chunked


def _mlstm_intra_torch(
    scores: Tensor, Fc: Tensor, ic: Tensor, m_in: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Stabilised intra-chunk weights in PyTorch: W = e^{L − m} ⊙ scores (j <= i), its row
    sums and the stabiliser m_i = max(F_i + m_in, max_j L_ij); ``(..., C, C)``, ``(..., C)``."""
    C = scores.shape[-1]
    causal = torch.ones(C, C, dtype=torch.bool, device=scores.device).tril()
    Lmat = (Fc.unsqueeze(-1) + (ic - Fc).unsqueeze(-2)).masked_fill(~causal, -torch.inf)
    m_i = torch.maximum(Fc + m_in.unsqueeze(-1), Lmat.amax(-1))
    W = torch.exp(Lmat - m_i.unsqueeze(-1)) * scores
    return W, W.sum(-1), m_i


def _mlstm_chunk(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    logf: Tensor,
    state: MState | None,
    C: int,
    scale: float,
    eps: float,
    native: bool,
) -> tuple[Tensor, MState]:
    """The chunked form on a padded batch (padded steps: log f = 0, ĩ = −inf)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    Tp = -(-T // C) * C
    qc = to_chunks(pad_time(q, Tp), C) * scale  # (B, N, H, C, K)
    kc = to_chunks(pad_time(k, Tp), C)
    vc = to_chunks(pad_time(v, Tp), C)
    ic = to_chunks(pad_time(i, Tp, -torch.inf).unsqueeze(-1), C).squeeze(-1)  # (B, N, H, C)
    Fc = to_chunks(pad_time(logf, Tp).unsqueeze(-1), C).squeeze(-1).cumsum(-1)
    F_last = Fc[..., -1]  # (B, N, H)
    tail = F_last.unsqueeze(-1) - Fc + ic  # log-weight of step j in the chunk-end memory
    tail_max = tail.amax(-1)  # (B, N, H)

    if state is None:
        C0, n0, m = q.new_zeros(B, H, K, V), q.new_zeros(B, H, K), q.new_zeros(B, H)
    else:
        C0, n0, m = state
    m_in = []
    # the stabiliser m_{c+1} = max(F_c + m_c, tail_max_c) is a max-plus recurrence, not
    # the linear one of chunk_state_scan: its own short loop (no gradient flows through m)
    for fl, tm in zip(F_last.unbind(1), tail_max.unbind(1)):
        m_in.append(m)
        m = torch.maximum(fl + m, tm)
    m_final = m
    m_in_t = torch.stack(m_in, 1)  # (B, N, H): stabiliser entering each chunk
    m_out = torch.cat([m_in_t[:, 1:], m_final.unsqueeze(1)], 1)  # ... and leaving it

    gamma = torch.exp(F_last + m_in_t - m_out)[..., None]  # (B, N, H, 1)
    kw = kc * torch.exp(tail - m_out.unsqueeze(-1)).unsqueeze(-1)  # (B, N, H, C, K)
    C_in, C_final = chunk_state_scan(gamma.unsqueeze(-1), kw.transpose(-1, -2) @ vc, C0)
    n_in, n_final = chunk_state_scan(gamma, kw.sum(-2), n0)  # (B, N, H, K)

    scores = qc @ kc.transpose(-1, -2)  # (B, N, H, C, C)
    if native:
        Wt, row_sum, m_i = native_ops.call("mlstm_intra", scores, Fc, ic, m_in_t)
    else:
        Wt, row_sum, m_i = _mlstm_intra_torch(scores, Fc, ic, m_in_t)
    q_in = qc * torch.exp(Fc + m_in_t.unsqueeze(-1) - m_i).unsqueeze(-1)
    num = q_in @ C_in + Wt @ vc  # (B, N, H, C, V)
    # a product and a sum, not a matrix-vector product (whose backward is a K=1 bmm)
    den = (q_in * n_in.unsqueeze(-2)).sum(-1) + row_sum  # (B, N, H, C)
    h = num / (torch.maximum(den.abs(), torch.exp(-m_i)) + eps).unsqueeze(-1)
    final = (C_final, n_final, m_final)
    return from_chunks(h)[:, :T], final


# --------------------------------------------------------------------------- public


@fp32_under_autocast
def mlstm(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    *,
    initial_state: MState | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    backend: str = "auto",
    forget_gate: ForgetGate = "sigmoid",
    eps: float = 1e-6,
) -> tuple[Tensor, MState | None]:
    """The stabilised mLSTM (xLSTM, arXiv 2405.04517) over a sequence.

    Args:
        q, k: ``(B, T, H, K)``; v: ``(B, T, H, V)``.
        i: ``(B, T, H)`` input-gate pre-activations ĩ (the gate is e^{ĩ}).
        f: ``(B, T, H)`` forget-gate pre-activations f̃.
        initial_state: ``(C, n, m)`` of shapes ``(B, H, K, V)``, ``(B, H, K)``,
            ``(B, H)`` (leading ``n`` with ``cu_seqlens``), or None (zeros).
        output_final_state: return the state after the last step.
        cu_seqlens: int64 ``(n+1,)`` cumulative starts of n sequences packed in batch 1.
        chunk_size: the chunk length C of the chunked form.
        scale: multiplies ``q``; default ``K ** -0.5``.
        backend: ``"auto"`` uses ``"native"`` (the intra-chunk weights from a C++ kernel)
            for float32/float64 CPU tensors when the kernel builds, else ``"torch"`` (pure
            PyTorch); :func:`mlstm_reference` is the recurrence.
        forget_gate: ``"sigmoid"`` (log f = logsigmoid(f̃)) or ``"exp"`` (log f = f̃).
        eps: added to the normaliser's denominator.

    Returns:
        ``(h, final_state)``: ``h`` ``(B, T, H, V)`` in ``q``'s dtype and the state
        ``(C, n, m)`` after the last step in float32 (float64 for float64 inputs), or
        None.
    """
    B, T, H, K, V = check_qkv(q, k, v)
    i = check_gate("i", i, (B, T, H), q.device)
    f = check_gate("f", f, (B, T, H), q.device)
    require_choice("forget_gate", forget_gate, FORGET_GATES)
    backend = op_backend(backend, MLSTM_BACKENDS, reference="mlstm_reference()")
    C, bounds = check_options(chunk_size, backend, cu_seqlens, B, T, q.device, MLSTM_BACKENDS)
    n_seq = B if bounds is None else len(bounds) - 1
    state: MState | None = None
    if initial_state is not None:
        if not isinstance(initial_state, tuple | list) or len(initial_state) != 3:
            raise TypeError(
                "initial_state: expected a tuple (C, n, m) of tensors, "
                f"got {type(initial_state).__name__}"
            )
        C0 = check_gate("initial_state[0] (C)", initial_state[0], (n_seq, H, K, V), q.device)
        n0 = check_gate("initial_state[1] (n)", initial_state[1], (n_seq, H, K), q.device)
        m0 = check_gate("initial_state[2] (m)", initial_state[2], (n_seq, H), q.device)
        state = (C0, n0, m0)
    if backend == REFERENCE:  # the oracle whole (rnnx.ops.reference), on validated inputs
        return mlstm_reference(
            q, k, v, i, f, initial_state=state, output_final_state=output_final_state,
            cu_seqlens=cu_seqlens, scale=scale, forget_gate=forget_gate, eps=eps,
        )  # fmt: skip
    s = default_scale(scale, K)
    dtype = compute_dtype(q, k, v, i, f, *(state or ()))
    q_, k_, v_, i_ = q.to(dtype), k.to(dtype), v.to(dtype), i.to(dtype)
    f_ = f.to(dtype)
    logf = F.logsigmoid(f_) if forget_gate == "sigmoid" else f_
    st = None if state is None else cast(MState, tuple(t.to(dtype) for t in state))
    native = use_native(backend, dtype, q.device, "mLSTM")

    def fn(q, k, v, i, lf):
        return _mlstm_chunk(q, k, v, i, lf, st, C, s, eps, native)

    args = [(q_, 0.0), (k_, 0.0), (v_, 0.0), (i_, -torch.inf), (logf, 0.0)]
    if bounds is None:
        h, final = fn(*(t for t, _ in args))
    else:
        h, final = run_packed(fn, bounds, args)
    return h.to(q.dtype), (cast(MState, tuple(final)) if output_final_state else None)
