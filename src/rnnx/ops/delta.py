"""The delta rule and the gated delta rule, recurrent and chunked (WY/UT form).

DeltaNet ("Linear Transformers Are Secretly Fast Weight Programmers", Schlag et al.,
arXiv 2102.11174; chunked training: "Parallelizing Linear Transformers with the Delta
Rule over Sequence Length", Yang et al., arXiv 2406.06484) writes into its state with
a step of the delta rule; Gated DeltaNet (Yang, Kautz, Hatamizadeh, arXiv 2412.06464)
decays the state first:

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,     o_t = scale · S_tᵀ q_t,

with S_t ``(K, V)`` per head, α_t = e^{g_t} (1 for the plain delta rule) and the
writing strength β_t. With unit-norm keys the transition I − β k kᵀ has eigenvalues 1
and 1 − β: β in [0, 1] keeps them in [0, 1]; β in [0, 2] lets them reach [−1, 1], the
"negative eigenvalues" of Grazzi et al. (arXiv 2411.12537) that let these models count
modulo 2 (the ops take any β; the layers choose the range).

Chunked form (chunk of C steps, G_i = Σ_{l≤i} g_l inside the chunk, Γ_i = e^{G_i}).
Writing S_i = α_i S_{i-1} + k_i ũ_iᵀ with the pseudo-values ũ_i = β_i (v_i − α_i S_{i-1}ᵀ k_i)
and unrolling S_{i-1} from the chunk's incoming state S_0 gives a unit lower-triangular
system for all ũ of a chunk at once (the UT transform, arXiv 2406.06484 §3):

    (I + A) Ũ = diag(β) (V − diag(Γ) K S_0),    A_ij = β_i e^{G_i − G_j} k_iᵀ k_j  (j < i),

so Ũ = U − W S_0 with U = T diag(β) V, W = T diag(β Γ) K, T = (I + A)^{-1}: the WY
representation of the product of the C Householder-like transitions. Then

    O    = scale (diag(Γ) Q S_0 + (Q Kᵀ ⊙ D) Ũ),         D_ij = e^{G_i − G_j} (j <= i),
    S_C  = Γ_C S_0 + (diag(Γ_C / Γ) K)ᵀ Ũ = M S_0 + B,   M = Γ_C I − K̃ᵀ W,  B = K̃ᵀ U.

U, W, M and B of all chunks come from batched matrix products and one batched
triangular solve; the only sequential part is S_{n+1} = M_n S_n + B_n across chunks
(one batched matrix product per chunk). All exponents are <= 0.

Signature as the rest of the family (:mod:`rnnx.ops.chunk`): batch-first
``(B, T, H, K)`` tensors, states ``(B, H, K, V)``, ``cu_seqlens`` for packed sequences.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnx._amp import fp32_under_autocast
from rnnx._vocab import REFERENCE, op_backend
from rnnx.ops._pack import compute_dtype, from_chunks, pad_time, run_packed, to_chunks
from rnnx.ops.chunk import (
    BACKENDS,
    check_gate,
    check_options,
    check_qkv,
    check_state,
    default_scale,
)
from rnnx.ops.chunk_state import chunk_state_scan
from rnnx.ops.reference import delta_rule_reference, gated_delta_rule_reference

__all__ = [
    "delta_rule",
    "delta_rule_reference",
    "gated_delta_rule",
    "gated_delta_rule_reference",
]


# --------------------------------------------------------------------------- chunked


def _delta_chunk(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor | None,
    beta: Tensor,
    S0: Tensor | None,
    C: int,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """The chunked (WY/UT) form on a padded batch; padded steps have β = 0 and g = 0."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    Tp = -(-T // C) * C
    qc = to_chunks(pad_time(q, Tp), C) * scale  # (B, N, H, C, K)
    kc = to_chunks(pad_time(k, Tp), C)
    vc = to_chunks(pad_time(v, Tp), C)
    bc = to_chunks(pad_time(beta, Tp).unsqueeze(-1), C)  # (B, N, H, C, 1)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    kk = kc @ kc.transpose(-1, -2)  # (B, N, H, C, C)
    qk = qc @ kc.transpose(-1, -2)
    kb = kc * bc
    if g is None:
        A = (bc * kk).tril(-1)
        P = qk.masked_fill(~causal, 0.0)
        rhs = torch.cat([vc * bc, kb], -1)
        q_in, k_out, gamma = qc, kc, None
    else:
        G = to_chunks(pad_time(g, Tp).unsqueeze(-1), C)  # (B, N, H, C, 1)
        G = G.cumsum(-2)
        D = (G - G.transpose(-1, -2)).masked_fill(~causal, -torch.inf).exp()
        A = (bc * kk * D).tril(-1)
        P = qk * D
        eG = G.exp()
        rhs = torch.cat([vc * bc, kb * eG], -1)
        G_last = G[..., -1:, :]  # (B, N, H, 1, 1)
        q_in, k_out, gamma = qc * eG, kc * (G_last - G).exp(), G_last.exp()
    X = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
    U, W = X[..., :V], X[..., V:]  # (B, N, H, C, V), (B, N, H, C, K)
    k_outT = k_out.transpose(-1, -2)
    M = -(k_outT @ W)  # (B, N, H, K, K)
    eye = torch.eye(K, dtype=q.dtype, device=q.device)
    M = M + (eye if gamma is None else gamma * eye)
    Bn = k_outT @ U  # (B, N, H, K, V)
    S_init = q.new_zeros(B, H, K, V) if S0 is None else S0
    # S_{n+1} = M_n S_n + B_n: a matrix transition per chunk and head
    S_in_t, S = chunk_state_scan(M, Bn, S_init, matrix=True)  # (B, N, H, K, V), (B, H, K, V)
    u = U - W @ S_in_t
    o = q_in @ S_in_t + P @ u
    return from_chunks(o)[:, :T], S


# --------------------------------------------------------------------------- public


def _run(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor | None,
    beta: Tensor,
    initial_state: Tensor | None,
    output_final_state: bool,
    cu_seqlens: Tensor | None,
    chunk_size: int,
    scale: float | None,
    backend: str,
) -> tuple[Tensor, Tensor | None]:
    B, T, H, K, V = q.shape[0], q.shape[1], q.shape[2], q.shape[3], v.shape[3]
    backend = op_backend(backend, BACKENDS, reference="the op's *_reference() function")
    C, bounds = check_options(chunk_size, backend, cu_seqlens, B, T, q.device)
    n = B if bounds is None else len(bounds) - 1
    S0 = check_state("initial_state", initial_state, (n, H, K, V), q.device)
    if backend == REFERENCE:  # the oracle whole (rnnx.ops.reference), on validated inputs
        if g is None:
            return delta_rule_reference(
                q, k, v, beta, initial_state=S0, output_final_state=output_final_state,
                cu_seqlens=cu_seqlens, scale=scale,
            )  # fmt: skip
        return gated_delta_rule_reference(
            q, k, v, g, beta, initial_state=S0, output_final_state=output_final_state,
            cu_seqlens=cu_seqlens, scale=scale,
        )  # fmt: skip
    s = default_scale(scale, K)
    dtype = compute_dtype(q, k, v, g, beta, S0)
    q_, k_, v_, b_ = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    g_ = None if g is None else g.to(dtype)
    S0_ = None if S0 is None else S0.to(dtype)

    def fn(q, k, v, beta, *rest):
        return _delta_chunk(q, k, v, rest[0] if rest else None, beta, S0_, C, s)

    args = [q_, k_, v_, b_] + ([g_] if g_ is not None else [])
    if bounds is None:
        o, final = fn(*args)
    else:
        o, final = run_packed(fn, bounds, [(t, 0.0) for t in args])
    return o.to(q.dtype), (final if output_final_state else None)


@fp32_under_autocast
def delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    beta: Tensor,
    *,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """The delta rule (DeltaNet, arXiv 2406.06484): S_t = (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ.

    Args:
        q, k: ``(B, T, H, K)`` (DeltaNet L2-normalises k, and q, beforehand);
            v: ``(B, T, H, V)``.
        beta: ``(B, T, H)`` writing strengths; in [0, 1], or [0, 2] for negative
            eigenvalues (arXiv 2411.12537).
        initial_state: ``(B, H, K, V)`` (``(n, H, K, V)`` with ``cu_seqlens``) or None.
        output_final_state: return the state after the last step.
        cu_seqlens: int64 ``(n+1,)`` cumulative starts of n sequences packed in batch 1.
        chunk_size: the chunk length C of the chunked (WY/UT) form.
        scale: multiplies ``q``; default ``K ** -0.5``.
        backend: ``"torch"`` (and ``"auto"``): the chunked form in PyTorch;
            :func:`delta_rule_reference` is the recurrence.

    Returns:
        ``(o, final_state)``: ``o`` ``(B, T, H, V)`` in ``q``'s dtype; the final state
        ``(B, H, K, V)`` in float32 (float64 for float64 inputs), or None.
    """
    B, T, H, _, _ = check_qkv(q, k, v)
    beta = check_gate("beta", beta, (B, T, H), q.device)
    return _run(
        q, k, v, None, beta, initial_state, output_final_state, cu_seqlens,
        chunk_size, scale, backend,
    )  # fmt: skip


@fp32_under_autocast
def gated_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    *,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """The gated delta rule (Gated DeltaNet, arXiv 2412.06464).

    S_t = e^{g_t} (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, with ``g``: ``(B, T, H)``
    log-decays (<= 0) and ``beta``: ``(B, T, H)``. Everything else as in
    :func:`delta_rule`.
    """
    B, T, H, _, _ = check_qkv(q, k, v)
    g = check_gate("g", g, (B, T, H), q.device)
    beta = check_gate("beta", beta, (B, T, H), q.device)
    return _run(
        q, k, v, g, beta, initial_state, output_final_state, cu_seqlens,
        chunk_size, scale, backend,
    )  # fmt: skip
