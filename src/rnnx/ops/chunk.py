"""Chunked linear attention with no, fixed, scalar or vector (gated) decay.

One recurrence, four choices of the decay, each as a recurrent reference (a loop over
time: the oracle of the tests and the decoding path, in :mod:`rnnx.ops.reference`, which
shares no helper with this module) and a chunked form (matrix products
inside chunks, a scan across chunks) for training:

    S_t = diag(α_t) S_{t-1} + k_t v_tᵀ,        o_t = scale · S_tᵀ q_t,

with the state S_t of shape ``(K, V)`` per head and α_t = exp(g_t) in (0, 1]:

* :func:`linear_attention`: α_t = 1 ("Transformers are RNNs", Katharopoulos et al.,
  arXiv 2006.16236);
* :func:`retention`: α_t = γ_h, a fixed decay per head (RetNet, Sun et al.,
  arXiv 2307.08621);
* :func:`simple_gla`: α_t a data-dependent scalar per head and step (the scalar-gated
  form of GLA, as in Mamba-2 and Lightning Attention);
* :func:`gla`: α_t a data-dependent vector over the key dimension (GLA, Yang et al.,
  arXiv 2312.06635).

Every op has the signature of the family (shared with :mod:`rnnx.ops.delta` and
:mod:`rnnx.ops.mlstm`)::

    o, final_state = op(q, k, v, <gates>, *, initial_state=None, output_final_state=False,
                        cu_seqlens=None, chunk_size=64, scale=None, backend="auto")

``backend`` names the implementation of the chunked form: ``"torch"`` (pure PyTorch),
``"native"`` (GLA and mLSTM: the intra-chunk matrix from a C++ kernel) or ``"auto"``;
the recurrence step by step is the op's ``*_reference`` function. (Old names, with a
DeprecationWarning: ``"chunk"`` is ``"torch"``; ``"reference"`` runs the reference.)

with batch-first tensors ``q, k: (B, T, H, K)``, ``v: (B, T, H, V)`` and states
``(B, H, K, V)``. ``cu_seqlens`` (int64, ``(n+1,)``, cumulative starts) packs n
sequences along time in a batch of one; initial and final states then have a leading
dimension n. States and all accumulations are float32 (float64 for float64 inputs); the
output has the dtype of ``q``.

The chunked algorithm (chunk size C, chunk-local cumulative log-decay G_i = Σ_{l≤i} g_l)::

    o_i   = scale·(q_i ⊙ e^{G_i})ᵀ S_0 + Σ_{j≤i} scale·Σ_k q_ik k_jk e^{G_ik − G_jk} v_j
    S_C   = e^{G_C} ⊙ S_0 + Σ_j (k_j ⊙ e^{G_C − G_j}) v_jᵀ

The intra-chunk sum is one C×C matrix per chunk and head; the chunk-to-chunk recurrence
of S is a short diagonal scan over chunks
(:func:`rnnx.ops.chunk_state.chunk_state_scan`). Every exponent above is
<= 0, so nothing overflows whatever the decay. For vector decay the intra-chunk matrix
needs e^{G_ik − G_jk} per key dimension; it is factored through a reference position r
between j and i (e^{G_i − G_r} · e^{G_r − G_j}, both <= 1) for pairs of sub-chunks, and
computed exactly inside each diagonal sub-chunk (as flash-linear-attention's GLA kernel
does, arXiv 2312.06635 §4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnx import _native
from rnnx._amp import fp32_under_autocast
from rnnx._checks import fmt_shape, require_positive_int, require_tensor
from rnnx._native import ops as native_ops
from rnnx._vocab import REFERENCE, op_backend
from rnnx.ops._pack import compute_dtype, from_chunks, pad_time, run_packed, to_chunks
from rnnx.ops.chunk_state import chunk_state_scan
from rnnx.ops.reference import (
    gla_reference,
    linear_attention_reference,
    retention_reference,
    simple_gla_reference,
)

__all__ = [
    "BACKENDS",
    "GLA_BACKENDS",
    "gla",
    "gla_reference",
    "linear_attention",
    "linear_attention_reference",
    "retention",
    "retention_reference",
    "simple_gla",
    "simple_gla_reference",
]

BACKENDS: tuple[str, ...] = ("auto", "torch")
#: :func:`gla` also has ``"native"``: the chunked form with the intra-chunk matrix from
#: a C++ kernel (CPU, float32/float64); ``"torch"`` is the pure-PyTorch form.
GLA_BACKENDS: tuple[str, ...] = ("auto", "native", "torch")

#: Size of the sub-chunks inside which vector-decay (GLA) attention is computed exactly.
GLA_SUBCHUNK = 16


# --------------------------------------------------------------------------- validation


def check_qkv(q: object, k: object, v: object) -> tuple[int, int, int, int, int]:
    """Validate ``q, k: (B, T, H, K)`` and ``v: (B, T, H, V)``; return (B, T, H, K, V)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        t = require_tensor(name, t)
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
        if t.dim() != 4:
            raise ValueError(
                f"{name}: expected a 4-D tensor (batch, time, heads, dim), "
                f"got shape {fmt_shape(t.shape)}"
            )
    assert isinstance(q, Tensor) and isinstance(k, Tensor) and isinstance(v, Tensor)
    if k.shape != q.shape:
        raise ValueError(
            f"k: expected the shape of q {fmt_shape(q.shape)}, got {fmt_shape(k.shape)}"
        )
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"v: expected shape {fmt_shape((*q.shape[:3], v.shape[-1]))} "
            f"(batch, time, heads like q), got {fmt_shape(v.shape)}"
        )
    B, T, H, K = q.shape
    if T == 0 or B == 0:
        raise ValueError(f"q: expected batch and time >= 1, got shape {fmt_shape(q.shape)}")
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} like q, got {t.device}")
    return B, T, H, K, v.shape[-1]


def check_gate(name: str, g: object, shape: Sequence[int], device: torch.device) -> Tensor:
    """Validate a gate tensor of exactly ``shape`` (floating point, same device)."""
    g = require_tensor(name, g)
    if not g.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {g.dtype}")
    if tuple(g.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {fmt_shape(shape)}, got {fmt_shape(g.shape)}")
    if g.device != device:
        raise ValueError(f"{name}: expected device {device} like q, got {g.device}")
    return g


def check_state(name: str, s: object, shape: Sequence[int], device: torch.device) -> Tensor | None:
    """Validate an initial state of exactly ``shape`` (or None)."""
    if s is None:
        return None
    return check_gate(name, s, shape, device)


def check_options(
    chunk_size: object,
    backend: object,
    cu_seqlens: object,
    B: int,
    T: int,
    device: torch.device,
    backends: Sequence[str] = BACKENDS,
) -> tuple[int, list[int] | None]:
    """Validate ``chunk_size``, ``backend`` and ``cu_seqlens``.

    Returns the chunk size and, with ``cu_seqlens``, its values as a Python list (the
    boundaries decide shapes, so they are read once here).
    """
    chunk = require_positive_int("chunk_size", chunk_size)
    if backend not in backends and backend != REFERENCE:
        raise ValueError(f"backend: expected one of {tuple(backends)}, got {backend!r}")
    if cu_seqlens is None:
        return chunk, None
    cu = require_tensor("cu_seqlens", cu_seqlens)
    if cu.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"cu_seqlens: expected an int64 tensor, got dtype {cu.dtype}")
    if cu.dim() != 1 or cu.shape[0] < 2:
        raise ValueError(
            "cu_seqlens: expected shape (n+1,) with n >= 1 (cumulative sequence starts), "
            f"got shape {fmt_shape(cu.shape)}"
        )
    if B != 1:
        raise ValueError(f"cu_seqlens: packed sequences need a batch of size 1, got batch size {B}")
    bounds = [int(x) for x in cu.tolist()]
    if bounds[0] != 0 or bounds[-1] != T or any(b > a for a, b in zip(bounds[1:], bounds)):
        raise ValueError(
            f"cu_seqlens: expected non-decreasing values from 0 to the length {T}, got {bounds}"
        )
    return chunk, bounds


def default_scale(scale: float | None, K: int) -> float:
    return K**-0.5 if scale is None else float(scale)


# --------------------------------------------------------------------------- chunked


def _chunk_scalar_decay(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor | None, S0: Tensor | None, C: int, scale: float
) -> tuple[Tensor, Tensor]:
    """Chunked form for no decay (g None) or a scalar decay per head and step (B,T,H)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    Tp = -(-T // C) * C
    qc = to_chunks(pad_time(q, Tp), C) * scale  # (B, N, H, C, K)
    kc = to_chunks(pad_time(k, Tp), C)
    vc = to_chunks(pad_time(v, Tp), C)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = qc @ kc.transpose(-1, -2)  # (B, N, H, C, C)
    if g is None:
        A = scores.masked_fill(~causal, 0.0)
        U = kc.transpose(-1, -2) @ vc  # (B, N, H, K, V)
        gamma = None
        q_in = qc
    else:
        G = to_chunks(pad_time(g, Tp).unsqueeze(-1), C).squeeze(-1).cumsum(-1)  # (B,N,H,C)
        diff = (G.unsqueeze(-1) - G.unsqueeze(-2)).masked_fill(~causal, -torch.inf)
        A = scores * diff.exp()
        G_last = G[..., -1:]
        U = (kc * (G_last - G).exp().unsqueeze(-1)).transpose(-1, -2) @ vc
        gamma = G_last.exp().unsqueeze(-1)  # (B, N, H, 1, 1)
        q_in = qc * G.exp().unsqueeze(-1)
    S_init = q.new_zeros(B, H, K, V) if S0 is None else S0
    S_in, final = chunk_state_scan(gamma, U, S_init)  # (B, N, H, K, V), (B, H, K, V)
    o = q_in @ S_in + A @ vc
    return from_chunks(o)[:, :T], final


def _gla_intra_torch(qc: Tensor, kc: Tensor, gc: Tensor) -> Tensor:
    """Intra-chunk GLA matrix A_ij = Σ_k q_ik k_jk e^{G_ik − G_jk} (j <= i) in PyTorch.

    ``qc, kc, gc``: ``(..., C, K)`` with ``gc`` the per-step log-decays. Pairs of
    sub-chunks go through a reference position between them (two factors <= 1, one
    matrix product); each diagonal sub-chunk is computed exactly, elementwise.
    """
    *lead, C, K = qc.shape
    c = min(GLA_SUBCHUNK, C)
    while C % c:
        c -= 1
    nb = C // c
    G = gc.cumsum(-2)
    Gs = G.reshape(*lead, nb, c, K)
    sub_causal = torch.ones(c, c, dtype=torch.bool, device=qc.device).tril()
    diff = (Gs.unsqueeze(-2) - Gs.unsqueeze(-3)).masked_fill(~sub_causal[..., None], -torch.inf)
    A_diag = (qc.reshape(*lead, nb, c, 1, K) * kc.reshape(*lead, nb, 1, c, K) * diff.exp()).sum(
        -1
    )  # (..., nb, c, c)
    if nb == 1:
        return A_diag.reshape(*lead, C, C)
    # block a pairs with earlier positions j through r_a = start(a) − 1 (j <= r_a < i)
    starts = torch.arange(nb, device=qc.device) * c
    ref = G[..., torch.clamp(starts - 1, min=0), :]  # (..., nb, K); block 0 has no pairs
    before = torch.arange(C, device=qc.device)[None, :] < starts[:, None]  # (nb, C)
    q_rel = qc.reshape(*lead, nb, c, K) * (Gs - ref.unsqueeze(-2)).exp()
    k_exp = (ref.unsqueeze(-2) - G.unsqueeze(-3)).masked_fill(~before[..., None], -torch.inf)
    k_rel = kc.unsqueeze(-3) * k_exp.exp()  # (..., nb, C, K), zero where j >= start(a)
    A_off = q_rel @ k_rel.transpose(-1, -2)  # (..., nb, c, C); zero on the diagonal blocks
    eye = torch.eye(nb, dtype=A_off.dtype, device=qc.device).view(nb, 1, nb, 1)
    A = A_off.reshape(*lead, nb, c, nb, c) + A_diag.unsqueeze(-2) * eye
    return A.reshape(*lead, C, C)


NATIVE_DTYPES = (torch.float32, torch.float64)


def use_native(backend: str, dtype: torch.dtype, device: torch.device, what: str) -> bool:
    """Whether an op uses its C++ kernel (``_native/chunk.cpp``): decided by backend,
    dtype, device and whether the kernel builds, never by values."""
    if backend not in ("auto", "native"):
        return False
    ok = device.type == "cpu" and dtype in NATIVE_DTYPES
    if backend == "native" and not ok:
        raise ValueError(
            f"backend: 'native' supports CPU tensors of dtype float32/float64, "
            f"got {dtype} on {device}"
        )
    available = ok and _native.available("chunk")
    if backend == "native" and not available:
        raise RuntimeError(
            f"backend: 'native' was requested but the native {what} kernel is unavailable: "
            f"{_native.unavailable_reason('chunk')}"
        )
    return available


def native_available() -> bool:
    """Whether the native kernels are built and loadable here (builds them if needed)."""
    return _native.available("chunk")


def _chunk_vector_decay(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    S0: Tensor | None,
    C: int,
    scale: float,
    native: bool,
) -> tuple[Tensor, Tensor]:
    """Chunked form for a decay vector over the key dimension per head and step."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    Tp = -(-T // C) * C
    qc = to_chunks(pad_time(q, Tp), C) * scale  # (B, N, H, C, K)
    kc = to_chunks(pad_time(k, Tp), C)
    vc = to_chunks(pad_time(v, Tp), C)
    gc = to_chunks(pad_time(g, Tp), C)
    A = native_ops.call("gla_intra", qc, kc, gc) if native else _gla_intra_torch(qc, kc, gc)
    G = gc.cumsum(-2)  # (B, N, H, C, K)
    G_last = G[..., -1:, :]  # (B, N, H, 1, K)
    U = (kc * (G_last - G).exp()).transpose(-1, -2) @ vc  # (B, N, H, K, V)
    gamma = G_last.exp().transpose(-1, -2)  # (B, N, H, K, 1)
    S_init = q.new_zeros(B, H, K, V) if S0 is None else S0
    S_in, final = chunk_state_scan(gamma, U, S_init)
    o = (qc * G.exp()) @ S_in + A @ vc
    return from_chunks(o)[:, :T], final


# --------------------------------------------------------------------------- public


def _run(
    kind: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor | None,
    initial_state: Tensor | None,
    output_final_state: bool,
    cu_seqlens: Tensor | None,
    chunk_size: int,
    scale: float | None,
    backend: str,
) -> tuple[Tensor, Tensor | None]:
    B, T, H, K, V = check_qkv(q, k, v)
    backends = GLA_BACKENDS if kind == "vector" else BACKENDS
    backend = op_backend(backend, backends, reference="the op's *_reference() function")
    C, bounds = check_options(chunk_size, backend, cu_seqlens, B, T, q.device, backends)
    n = B if bounds is None else len(bounds) - 1
    S0 = check_state("initial_state", initial_state, (n, H, K, V), q.device)
    if backend == REFERENCE:  # the oracle whole (rnnx.ops.reference), on validated inputs
        if g is None:
            return linear_attention_reference(
                q, k, v, initial_state=S0, output_final_state=output_final_state,
                cu_seqlens=cu_seqlens, scale=scale,
            )  # fmt: skip
        ref = gla_reference if kind == "vector" else simple_gla_reference
        return ref(
            q, k, v, g, initial_state=S0, output_final_state=output_final_state,
            cu_seqlens=cu_seqlens, scale=scale,
        )  # fmt: skip
    s = default_scale(scale, K)
    dtype = compute_dtype(q, k, v, g, S0)
    q_, k_, v_ = q.to(dtype), k.to(dtype), v.to(dtype)
    g_ = None if g is None else g.to(dtype)
    S0_ = None if S0 is None else S0.to(dtype)
    native = kind == "vector" and use_native(backend, dtype, q.device, "GLA")

    def fn(q, k, v, *rest):
        if kind == "vector":
            return _chunk_vector_decay(q, k, v, rest[0], S0_, C, s, native)
        return _chunk_scalar_decay(q, k, v, rest[0] if rest else None, S0_, C, s)

    if bounds is None:
        o, final = fn(q_, k_, v_, *([g_] if g_ is not None else []))
    else:
        ts = [(q_, 0.0), (k_, 0.0), (v_, 0.0)] + ([(g_, 0.0)] if g_ is not None else [])
        o, final = run_packed(fn, bounds, ts)
    return o.to(q.dtype), (final if output_final_state else None)


@fp32_under_autocast
def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Causal linear attention without decay (Katharopoulos et al., arXiv 2006.16236).

    S_t = S_{t-1} + k_t v_tᵀ, o_t = scale · S_tᵀ q_t (no normaliser: a layer that wants
    one appends a column of ones to ``v``). Feature maps are the caller's.

    Args:
        q, k: ``(B, T, H, K)``; v: ``(B, T, H, V)``.
        initial_state: ``(B, H, K, V)`` (``(n, H, K, V)`` with ``cu_seqlens``) or None.
        output_final_state: return the state after the last step.
        cu_seqlens: int64 ``(n+1,)`` cumulative starts of n sequences packed in batch 1.
        chunk_size: the chunk length C of the chunked form.
        scale: multiplies ``q``; default ``K ** -0.5``.
        backend: ``"torch"`` (and ``"auto"``); :func:`linear_attention_reference` is the
            recurrence.

    Returns:
        ``(o, final_state)``: ``o`` ``(B, T, H, V)`` in ``q``'s dtype; the final state
        ``(B, H, K, V)`` in float32 (float64 for float64 inputs), or None.
    """
    return _run(
        "none", q, k, v, None, initial_state, output_final_state, cu_seqlens,
        chunk_size, scale, backend,
    )  # fmt: skip


@fp32_under_autocast
def retention(
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
    backend: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Retention with a fixed decay per head (RetNet, Sun et al., arXiv 2307.08621).

    S_t = γ_h S_{t-1} + k_t v_tᵀ with ``log_decay[h] = log γ_h`` (<= 0; RetNet uses
    γ_h = 1 − 2^{−5−h}). Rotations (xPos) are applied to q and k by the caller.
    ``log_decay``: ``(H,)``. Everything else as in :func:`linear_attention`.
    """
    B, T, H, _, _ = check_qkv(q, k, v)
    log_decay = check_gate("log_decay", log_decay, (H,), q.device)
    g = log_decay.expand(B, T, H)
    return _run(
        "scalar", q, k, v, g, initial_state, output_final_state, cu_seqlens,
        chunk_size, scale, backend,
    )  # fmt: skip


@fp32_under_autocast
def simple_gla(
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
    backend: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Linear attention with a data-dependent scalar decay per head and step.

    S_t = e^{g_t} S_{t-1} + k_t v_tᵀ with ``g``: ``(B, T, H)`` log-decays (<= 0 for a
    contraction; any real value is computed exactly, but chunks multiply by e^{Σg}).
    The scalar-gated GLA (arXiv 2312.06635) and the SSD form of Mamba-2 (arXiv
    2405.21060). Everything else as in :func:`linear_attention`.
    """
    B, T, H, _, _ = check_qkv(q, k, v)
    g = check_gate("g", g, (B, T, H), q.device)
    return _run(
        "scalar", q, k, v, g, initial_state, output_final_state, cu_seqlens,
        chunk_size, scale, backend,
    )  # fmt: skip


@fp32_under_autocast
def gla(
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
    backend: str = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Gated linear attention (GLA, Yang et al., arXiv 2312.06635): vector decay.

    S_t = diag(e^{g_t}) S_{t-1} + k_t v_tᵀ with ``g``: ``(B, T, H, K)`` log-decays
    (<= 0), one per key dimension.

    ``backend``: ``"auto"`` uses ``"native"`` (the intra-chunk matrix from a C++ kernel,
    exact running products of the decays) for float32/float64 CPU tensors when the
    kernel builds, else ``"torch"`` (pure PyTorch: pairs of sub-chunks by matrix
    products, diagonal sub-chunks elementwise); :func:`gla_reference` is the recurrence.
    Everything else as in :func:`linear_attention`.
    """
    B, T, H, K, _ = check_qkv(q, k, v)
    g = check_gate("g", g, (B, T, H, K), q.device)
    return _run(
        "vector", q, k, v, g, initial_state, output_final_state, cu_seqlens,
        chunk_size, scale, backend,
    )  # fmt: skip
