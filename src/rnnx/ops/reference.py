"""Step-by-step oracles of the linear-attention family (chunk, delta, mlstm).

Each function here is the recurrence of one op written out from its equations, one time
step after the other, with its own few lines for the public arguments (initial state,
final state, packed sequences, default scale, dtypes). They live in one module, apart
from the chunked forms they check, so that they share nothing with them: this module
imports only torch, and nothing in the fast paths imports from it except the ops'
``backend="_reference"`` dispatch (the layers' ``recurrent`` mode), which calls these
functions whole. A mistake in the fast paths' validation, dtype promotion, packing or
chunk layouts (``rnnx.ops._pack``, ``rnnx.ops.chunk``'s checks) therefore shows up as a
disagreement in ``tests/ops`` instead of being repeated by the oracle. The ops' modules
re-export these functions under their old names (``rnnx.ops.chunk.gla_reference``, ...).

The contract the fast ops document, which these follow: q, k ``(B, T, H, K)``, v
``(B, T, H, V)``; with ``cu_seqlens`` (int64 ``(n+1,)`` cumulative starts) n sequences
packed along time in a batch of one, each starting from its own initial state; all
arithmetic in float64 if any floating-point input (initial state included) is float64,
else float32; the output in q's dtype, the final state in the compute dtype (None
unless ``output_final_state``); ``scale`` defaults to K^-0.5; ``chunk_size`` and
``backend`` are accepted and ignored (there are no chunks here). Under autocast they run
with autocast off. They do not validate shapes (the ops do): they are oracles for
tests, meant to be read.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "delta_rule_reference",
    "gated_delta_rule_reference",
    "gla_reference",
    "linear_attention_reference",
    "mlstm_reference",
    "retention_reference",
    "simple_gla_reference",
]


# --------------------------------------------------------------------------- helpers
# (used by the references below only)


def _float(*tensors: Tensor | None) -> torch.dtype:
    """float64 if any given tensor is float64, else float32."""
    return (
        torch.float64
        if any(t is not None and t.dtype == torch.float64 for t in tensors)
        else torch.float32
    )


def _sequences(step, series: list[Tensor], state, cu_seqlens: Tensor | None):
    """Run ``step(series..., state) -> (out, final)`` on the whole batch, or with
    ``cu_seqlens`` once per packed sequence (its slice of time and of the state), and
    join the outputs along time and the final states along the batch."""
    if cu_seqlens is None:
        return step(*series, state)
    starts = [int(c) for c in cu_seqlens.tolist()]
    outs, finals = [], []
    for i, (a, b) in enumerate(itertools.pairwise(starts)):
        s_i = None if state is None else tuple(s[i : i + 1] for s in state)
        o_i, f_i = step(*(x[:, a:b] for x in series), s_i)
        outs.append(o_i)
        finals.append(f_i)
    return torch.cat(outs, 1), tuple(torch.cat(parts, 0) for parts in zip(*finals))


# --------------------------------------------------------------------------- decays


def _decayed_attention(q, k, v, log_alpha, initial_state, output_final_state, cu_seqlens, scale):
    """S_t = diag(e^{log α_t}) S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t, with
    ``log_alpha`` None (α = 1) or broadcastable per step to ``(B, H, K)``."""
    dtype = _float(q, k, v, log_alpha, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    s = K**-0.5 if scale is None else float(scale)
    la = (
        torch.zeros(B, T, H, 1, dtype=dtype, device=q.device)
        if log_alpha is None
        else log_alpha.to(dtype)
    )
    la = la.expand(B, T, H, la.shape[-1])

    def step(q, k, v, la, state):
        S = (
            torch.zeros(q.shape[0], H, K, V, dtype=dtype, device=q.device)
            if state is None
            else state[0]
        )
        outs = []
        for t in range(q.shape[1]):
            if log_alpha is not None:  # α = 1 leaves S as it is
                S = torch.exp(la[:, t]).unsqueeze(-1) * S
            S = S + k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
            outs.append(s * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
        o = (
            torch.stack(outs, 1)
            if outs
            else torch.zeros(q.shape[0], 0, H, V, dtype=dtype, device=q.device)
        )
        return o, (S,)

    state = None if initial_state is None else (initial_state.to(dtype),)
    with torch.autocast(q.device.type, enabled=False):
        o, (S,) = _sequences(step, [q.to(dtype), k.to(dtype), v.to(dtype), la], state, cu_seqlens)
    return o.to(q.dtype), (S if output_final_state else None)


def linear_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`rnnx.ops.chunk.linear_attention` step by step (arXiv 2006.16236):
    S_t = S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t; state ``(B, H, K, V)``."""
    return _decayed_attention(q, k, v, None, initial_state, output_final_state, cu_seqlens, scale)


def retention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor,
    *,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`rnnx.ops.chunk.retention` step by step (RetNet, arXiv 2307.08621):
    S_t = γ_h S_{t-1} + k_t v_tᵀ with ``log_decay[h] = log γ_h``, ``(H,)``."""
    la = log_decay.reshape(1, 1, -1, 1).expand(q.shape[0], q.shape[1], -1, 1)
    return _decayed_attention(q, k, v, la, initial_state, output_final_state, cu_seqlens, scale)


def simple_gla_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    *,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`rnnx.ops.chunk.simple_gla` step by step (arXiv 2312.06635, 2405.21060):
    S_t = e^{g_t} S_{t-1} + k_t v_tᵀ with ``g``: ``(B, T, H)``."""
    la = g.unsqueeze(-1)
    return _decayed_attention(q, k, v, la, initial_state, output_final_state, cu_seqlens, scale)


def gla_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    *,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    backend: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`rnnx.ops.chunk.gla` step by step (GLA, arXiv 2312.06635):
    S_t = diag(e^{g_t}) S_{t-1} + k_t v_tᵀ with ``g``: ``(B, T, H, K)``."""
    return _decayed_attention(q, k, v, g, initial_state, output_final_state, cu_seqlens, scale)


# --------------------------------------------------------------------------- delta rule


def _delta(q, k, v, g, beta, initial_state, output_final_state, cu_seqlens, scale):
    """S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, o_t = scale · S_tᵀ q_t, with
    α_t = e^{g_t} (g None: α = 1)."""
    dtype = _float(q, k, v, g, beta, initial_state)
    B, T, H, K = q.shape
    V = v.shape[-1]
    s = K**-0.5 if scale is None else float(scale)
    gg = torch.zeros(B, T, H, dtype=dtype, device=q.device) if g is None else g.to(dtype)
    g_none = g is None  # α = 1: no decay to apply

    def step(q, k, v, g, beta, state):
        S = (
            torch.zeros(q.shape[0], H, K, V, dtype=dtype, device=q.device)
            if state is None
            else state[0]
        )
        outs = []
        for t in range(q.shape[1]):
            k_t, b_t = k[:, t], beta[:, t, :, None, None]
            kS = torch.einsum("bhk,bhkv->bhv", k_t, S)  # k_tᵀ S_{t-1}
            erased = S - b_t * k_t.unsqueeze(-1) * kS.unsqueeze(-2)  # (I − β k kᵀ) S_{t-1}
            S = erased if g_none else torch.exp(g[:, t])[..., None, None] * erased
            S = S + b_t * k_t.unsqueeze(-1) * v[:, t].unsqueeze(-2)
            outs.append(s * torch.einsum("bhk,bhkv->bhv", q[:, t], S))
        o = (
            torch.stack(outs, 1)
            if outs
            else torch.zeros(q.shape[0], 0, H, V, dtype=dtype, device=q.device)
        )
        return o, (S,)

    state = None if initial_state is None else (initial_state.to(dtype),)
    series = [q.to(dtype), k.to(dtype), v.to(dtype), gg, beta.to(dtype)]
    with torch.autocast(q.device.type, enabled=False):
        o, (S,) = _sequences(step, series, state, cu_seqlens)
    return o.to(q.dtype), (S if output_final_state else None)


def delta_rule_reference(
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
    backend: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`rnnx.ops.delta.delta_rule` step by step (DeltaNet, arXiv 2102.11174,
    2406.06484): S_t = (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, ``beta``: ``(B, T, H)``."""
    return _delta(q, k, v, None, beta, initial_state, output_final_state, cu_seqlens, scale)


def gated_delta_rule_reference(
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
    backend: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """:func:`rnnx.ops.delta.gated_delta_rule` step by step (Gated DeltaNet, arXiv
    2412.06464): S_t = e^{g_t} (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ; ``g, beta``:
    ``(B, T, H)``."""
    return _delta(q, k, v, g, beta, initial_state, output_final_state, cu_seqlens, scale)


# --------------------------------------------------------------------------- mLSTM


def mlstm_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    *,
    initial_state: tuple[Tensor, Tensor, Tensor] | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    backend: str | None = None,
    forget_gate: str = "sigmoid",
    eps: float = 1e-6,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor] | None]:
    """:func:`rnnx.ops.mlstm.mlstm` by the stabilised recurrence (xLSTM, arXiv 2405.04517)::

        log f_t = logsigmoid(f̃_t)   (forget_gate "sigmoid"; f̃_t for "exp")
        m_t     = max(log f_t + m_{t-1}, ĩ_t)
        C_t     = e^{log f_t + m_{t-1} − m_t} C_{t-1} + e^{ĩ_t − m_t} k_t v_tᵀ
        n_t     = e^{log f_t + m_{t-1} − m_t} n_{t-1} + e^{ĩ_t − m_t} k_t
        h_t     = scale · C_tᵀ q_t / (max(|scale · n_tᵀ q_t|, e^{−m_t}) + eps)

    ``i, f``: ``(B, T, H)`` gate pre-activations; the state ``(C, n, m)`` of shapes
    ``(B, H, K, V)``, ``(B, H, K)``, ``(B, H)``, zeros when not given.
    """
    state = None if initial_state is None else tuple(initial_state)
    dtype = _float(q, k, v, i, f, *(state or ()))
    H, K = q.shape[2:]
    V = v.shape[-1]
    s = K**-0.5 if scale is None else float(scale)
    f_ = f.to(dtype)
    if forget_gate == "sigmoid":
        logf = F.logsigmoid(f_)
    elif forget_gate == "exp":
        logf = f_
    else:
        raise ValueError(f"forget_gate: expected 'sigmoid' or 'exp', got {forget_gate!r}")

    def step(q, k, v, i, logf, st):
        n_b = q.shape[0]
        if st is None:
            st = tuple(
                torch.zeros(n_b, H, *d, dtype=dtype, device=q.device) for d in ((K, V), (K,), ())
            )
        Cm, n, m = st
        outs = []
        for t in range(q.shape[1]):
            m_new = torch.maximum(logf[:, t] + m, i[:, t])
            decay = torch.exp(logf[:, t] + m - m_new)
            write = torch.exp(i[:, t] - m_new)
            Cm = decay[..., None, None] * Cm + write[..., None, None] * (
                k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
            )
            n = decay[..., None] * n + write[..., None] * k[:, t]
            m = m_new
            num = s * torch.einsum("bhkv,bhk->bhv", Cm, q[:, t])
            den = s * torch.einsum("bhk,bhk->bh", n, q[:, t])
            outs.append(num / (torch.maximum(den.abs(), torch.exp(-m)) + eps).unsqueeze(-1))
        h = (
            torch.stack(outs, 1)
            if outs
            else torch.zeros(n_b, 0, H, V, dtype=dtype, device=q.device)
        )
        return h, (Cm, n, m)

    st0 = None if state is None else tuple(t.to(dtype) for t in state)
    series = [q.to(dtype), k.to(dtype), v.to(dtype), i.to(dtype), logf]
    with torch.autocast(q.device.type, enabled=False):
        h, final = _sequences(step, series, st0, cu_seqlens)
    return h.to(q.dtype), (tuple(final) if output_final_state else None)
