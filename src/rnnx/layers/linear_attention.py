"""Linear attention, RetNet and GLA: linear attention with no, fixed and gated decay.

Each layer projects the input to queries, keys and values per head, runs a matrix-valued
linear recurrence (:mod:`rnnx.ops.chunk`) and projects back:

* :class:`LinearAttention` ("Transformers are RNNs", Katharopoulos et al.,
  arXiv 2006.16236): feature map elu + 1 and the normaliser z_t = Σ φ(k_s).
* :class:`RetNet` (multi-scale retention, Sun et al., arXiv 2307.08621): a fixed decay
  γ_h = 1 − 2^{−5−h} per head, rotary (xPos) positions, GroupNorm per head and a swish
  gate.
* :class:`GLA` (gated linear attention, Yang et al., arXiv 2312.06635): a data-dependent
  decay per key dimension from a low-rank projection, RMSNorm per head and a swish gate.

Modes (all compute the same function; the test matrix checks it): ``"chunk"`` (default,
the chunked form: matrix products inside chunks of ``chunk_size`` steps, a scan across
chunks) and ``"recurrent"`` (one step at a time: the reference and the decoding path of
:meth:`step`). Padded steps (``lengths``) get a zero key and no decay, so they leave the
state unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._checks import length_mask, require_positive_int
from rnnx._vocab import REFERENCE
from rnnx.layers._chunked import (
    HeadLayerNorm,
    HeadRMSNorm,
    pick_heads,
    scaled_dim,
    where_valid,
)
from rnnx.layers.base import RecurrentLayer, State, register
from rnnx.ops.chunk import gla, linear_attention, native_available, simple_gla

__all__ = ["GLA", "LinearAttention", "RetNet"]

_MODES = ("chunk", "recurrent")


class _LinearAttentionBase(RecurrentLayer):
    """Modes and state bookkeeping shared by the three layers of this file."""

    modes: ClassVar[tuple[str, ...]] = _MODES
    default_mode: ClassVar[str] = "chunk"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    family: ClassVar[str] = "linear attention"

    num_heads: int
    head_k: int
    head_v: int
    chunk_size: int

    def _state_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size, self.num_heads, self.head_k, self.head_v)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Zeros ``(batch_size, num_heads, head_k, head_v)``: the memory S of each head."""
        return torch.zeros(
            self._state_shape(batch_size),
            device=device if device is not None else self._device(),
            dtype=dtype if dtype is not None else self.state_dtype(),
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, head_k={self.head_k}, "
            f"head_v={self.head_v}, chunk_size={self.chunk_size}, mode={self.mode!r}"
            + self._backend_repr()
        )

    def _op_backend(self, mode: str) -> str:
        """The backend of the chunked op: the layer's in mode ``"chunk"``, the op's
        step-by-step reference in mode ``"recurrent"``."""
        return REFERENCE if mode == "recurrent" else self.backend


@register("linear_attention")
class LinearAttention(_LinearAttentionBase):
    """Causal linear attention with the elu + 1 feature map (arXiv 2006.16236).

    y_t = W_o [S_tᵀ φ(q_t) / (z_tᵀ φ(q_t) + eps)] per head, S_t = S_{t-1} + φ(k_t) v_tᵀ,
    z_t = z_{t-1} + φ(k_t), φ(x) = elu(x) + 1.

    Args:
        d_model: input and output features.
        num_heads: heads (default: about one per 64 features).
        normalize: divide by z_tᵀ φ(q_t) as in the paper (else no normaliser).
        eps: added to the normaliser.
        chunk_size: chunk length of mode ``"chunk"``.
        mode: ``"chunk"`` (default) or ``"recurrent"``.
        backend: ``"auto"`` (default) or ``"torch"``: see :attr:`RecurrentLayer.backend`.

    State: ``(batch, num_heads, head_dim, head_dim + 1)`` with ``normalize`` (the last
    column is z), else ``(batch, num_heads, head_dim, head_dim)``.
    """

    paper: ClassVar[str] = "arXiv 2006.16236"

    def __init__(
        self,
        d_model: int,
        num_heads: int | None = None,
        *,
        normalize: bool = True,
        eps: float = 1e-6,
        chunk_size: int = 64,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        H = pick_heads(d_model, d_model, num_heads=num_heads)
        self.num_heads, self.normalize, self.eps = H, bool(normalize), float(eps)
        self.chunk_size = require_positive_int("chunk_size", chunk_size)
        self.head_k = d_model // H
        self.head_v = d_model // H + (1 if self.normalize else 0)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"num_heads": 2, "chunk_size": 4}

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        B, L, _ = x.shape
        H, dk = self.num_heads, self.head_k
        u = x.to(self.state_dtype())
        q = F.elu(self.q_proj(u).view(B, L, H, dk)) + 1
        k = F.elu(self.k_proj(u).view(B, L, H, dk)) + 1
        v = self.v_proj(u).view(B, L, H, dk)
        if self.normalize:
            v = torch.cat([v, torch.ones_like(v[..., :1])], -1)
        k = where_valid(length_mask(lengths, L), k, 0.0)
        o, new_state = linear_attention(
            q, k, v, initial_state=state, output_final_state=True,
            chunk_size=self.chunk_size, scale=1.0, backend=self._op_backend(mode),
        )  # fmt: skip
        if self.normalize:
            o = o[..., :dk] / (o[..., dk:] + self.eps)
        y = self.o_proj(o.reshape(B, L, H * dk))
        return y.to(x.dtype), new_state


def _rotate(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate the pairs (x_i, x_{i+h}) of the last dimension by ``angles`` (..., h);
    features past 2h (an odd head size) are left alone."""
    h = angles.shape[-1]
    x1, x2, rest = x[..., :h], x[..., h : 2 * h], x[..., 2 * h :]
    c, s = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c, rest], -1)


@register("retnet")
class RetNet(_LinearAttentionBase):
    """Multi-scale retention (RetNet, arXiv 2307.08621).

    Per head h, with γ_h = 1 − 2^{−5−h} and rotary angles θ (xPos without its scale):

        o_n = Σ_{m≤n} γ_h^{n−m} (R_{nθ} q_n)ᵀ (R_{mθ} k_m) v_m / sqrt(d_k),
        y_n = W_o (swish(W_g x_n) ⊙ GroupNorm(o_n)).

    The state is kept in the frame of the current position,
    S̃_n = Σ_{m≤n} γ^{n−m} R_{(m−n)θ} k_m v_mᵀ = γ R_{−θ} S̃_{n−1} + k_n v_nᵀ, so it does
    not depend on absolute positions and a sequence continues from any split point.
    Mode ``"recurrent"`` runs exactly this recurrence; mode ``"chunk"`` rotates q and k by
    their positions inside the call and runs the chunked retention (as
    :func:`rnnx.ops.chunk.simple_gla`, so that padded steps do not decay), then turns
    the final state back into the current frame.

    Args:
        d_model: input and output features (also the total key size).
        num_heads: heads (default: about one per 64 features).
        expand_v: value (and gate) size as a multiple of d_model (the paper: 2).
        chunk_size: chunk length of mode ``"chunk"``.
        mode: ``"chunk"`` (default) or ``"recurrent"``.
        backend: ``"auto"`` (default) or ``"torch"``: see :attr:`RecurrentLayer.backend`.

    State: ``(batch, num_heads, d_model // num_heads, value size // num_heads)``.
    """

    paper: ClassVar[str] = "arXiv 2307.08621"

    log_decay: Tensor  # a buffer (fixed decays)

    def __init__(
        self,
        d_model: int,
        num_heads: int | None = None,
        *,
        expand_v: float = 2.0,
        chunk_size: int = 64,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        dv_total = scaled_dim("expand_v", d_model, expand_v)
        H = pick_heads(d_model, d_model, dv_total, num_heads=num_heads)
        self.num_heads = H
        self.chunk_size = require_positive_int("chunk_size", chunk_size)
        self.head_k, self.head_v = d_model // H, dv_total // H
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, dv_total, bias=False)
        self.g_proj = nn.Linear(d_model, dv_total, bias=False)
        self.o_proj = nn.Linear(dv_total, d_model, bias=False)
        self.norm = HeadLayerNorm(H, self.head_v)
        # fixed decays (not trained), as in the paper
        gammas = 1 - torch.exp2(-5.0 - torch.arange(H, dtype=torch.float64))
        self.register_buffer("log_decay", torch.log(gammas).float(), persistent=False)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"num_heads": 2, "chunk_size": 4}

    def _theta(self) -> Tensor:
        """Rotation frequencies (head_k // 2,), in float64 (positions times them)."""
        half = self.head_k // 2
        return 10000.0 ** (-torch.arange(half, dtype=torch.float64) / max(half, 1))

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        B, L, _ = x.shape
        H, dk, dv = self.num_heads, self.head_k, self.head_v
        u = x.to(self.state_dtype())
        q = self.q_proj(u).view(B, L, H, dk)
        k = self.k_proj(u).view(B, L, H, dk)
        v = self.v_proj(u).view(B, L, H, dv)
        valid = length_mask(lengths, L)
        log_decay = self.log_decay.to(u.dtype)
        theta = self._theta().to(x.device)
        scale = dk**-0.5
        if mode == "recurrent":
            o, new_state = self._recurrent(q, k, v, state, log_decay, theta, scale, valid)
        else:
            pos = torch.arange(1, L + 1, dtype=torch.float64, device=x.device)
            ang = (pos[:, None] * theta).view(1, L, 1, -1)
            qr = _rotate(q, ang)
            kr = where_valid(valid, _rotate(k, ang), 0.0)
            # padded steps must not decay the state: the fixed decay as a per-step gate
            g = where_valid(valid, log_decay.expand(B, L, H), 0.0)
            o, s = simple_gla(
                qr, kr, v, g, initial_state=state, output_final_state=True,
                chunk_size=self.chunk_size, scale=scale, backend=self.backend,
            )  # fmt: skip
            n = torch.full((B,), float(L), dtype=torch.float64, device=x.device)
            if lengths is not None:
                n = lengths.to(torch.float64)
            back = (-n[:, None] * theta).view(B, 1, 1, -1)
            assert s is not None  # output_final_state=True
            new_state = _rotate(s.transpose(-1, -2), back).transpose(-1, -2)
        y = self.norm(o) * F.silu(self.g_proj(u)).view(B, L, H, dv)
        return self.o_proj(y.reshape(B, L, H * dv)).to(x.dtype), new_state

    def _recurrent(self, q, k, v, S, log_decay, theta, scale, valid):
        """S̃_n = γ R_{−θ} S̃_{n−1} + k_n v_nᵀ, o_n = S̃_nᵀ q_n · scale, one step at a time."""
        gamma = log_decay.exp().view(1, -1, 1, 1)
        back = (-theta).view(1, 1, 1, -1)
        outs = []
        for t, (q_t, k_t, v_t) in enumerate(zip(q.unbind(1), k.unbind(1), v.unbind(1))):
            S_new = gamma * _rotate(S.transpose(-1, -2), back).transpose(-1, -2)
            S_new = S_new + k_t.unsqueeze(-1) * v_t.unsqueeze(-2)
            S = S_new if valid is None else torch.where(valid[:, t, None, None, None], S_new, S)
            outs.append(torch.einsum("bhk,bhkv->bhv", q_t * scale, S))
        return torch.stack(outs, 1), S


@register("gla")
class GLA(_LinearAttentionBase):
    """Gated linear attention (GLA, arXiv 2312.06635).

    Per head: S_t = diag(α_t) S_{t-1} + k_t v_tᵀ, o_t = S_tᵀ q_t / sqrt(d_k) with the
    decay α_t = σ(W_α2 W_α1 x_t + b)^{1/τ} (low-rank, τ = ``gate_logit_normalizer``),
    and y_t = W_o (swish(W_r x_t) ⊙ RMSNorm(o_t)).

    Args:
        d_model: input and output features.
        num_heads: heads (default: about one per 64 features).
        expand_k, expand_v: key and value sizes as multiples of d_model (paper: 0.5, 1).
        gate_low_rank_dim: rank of the decay projection (paper: 16).
        gate_logit_normalizer: τ (paper: 16).
        chunk_size: chunk length of mode ``"chunk"``.
        mode: ``"chunk"`` (default) or ``"recurrent"``.
        backend: ``"auto"`` (default), ``"native"`` (the intra-chunk matrix from a C++
            kernel, CPU) or ``"torch"``: the implementation of mode ``"chunk"``.

    State: ``(batch, num_heads, key size // num_heads, value size // num_heads)``.
    """

    paper: ClassVar[str] = "arXiv 2312.06635"
    backends: ClassVar[tuple[str, ...]] = ("auto", "native", "torch")

    def native_available(self) -> bool:
        """Whether the native chunk kernels build and load here."""
        return native_available()

    def __init__(
        self,
        d_model: int,
        num_heads: int | None = None,
        *,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: float = 16.0,
        chunk_size: int = 64,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        dk_total = scaled_dim("expand_k", d_model, expand_k)
        dv_total = scaled_dim("expand_v", d_model, expand_v)
        H = pick_heads(d_model, dk_total, dv_total, num_heads=num_heads)
        require_positive_int("gate_low_rank_dim", gate_low_rank_dim)
        if not gate_logit_normalizer > 0:
            raise ValueError(
                f"gate_logit_normalizer: expected a positive number, got {gate_logit_normalizer}"
            )
        self.num_heads = H
        self.chunk_size = require_positive_int("chunk_size", chunk_size)
        self.head_k, self.head_v = dk_total // H, dv_total // H
        self.gate_logit_normalizer = float(gate_logit_normalizer)
        self.q_proj = nn.Linear(d_model, dk_total, bias=False)
        self.k_proj = nn.Linear(d_model, dk_total, bias=False)
        self.v_proj = nn.Linear(d_model, dv_total, bias=False)
        gk_down = nn.Linear(d_model, gate_low_rank_dim, bias=False)
        gk_up = nn.Linear(gate_low_rank_dim, dk_total, bias=True)
        self.gk_proj = nn.Sequential(gk_down, gk_up)
        self.g_proj = nn.Linear(d_model, dv_total, bias=False)
        self.o_proj = nn.Linear(dv_total, d_model, bias=False)
        self.norm = HeadRMSNorm(self.head_v)
        nn.init.xavier_uniform_(gk_down.weight, gain=2**-2.5)
        nn.init.xavier_uniform_(gk_up.weight, gain=2**-2.5)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"num_heads": 2, "expand_k": 1.0, "gate_low_rank_dim": 4, "chunk_size": 4}

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        B, L, _ = x.shape
        H, dk, dv = self.num_heads, self.head_k, self.head_v
        u = x.to(self.state_dtype())
        valid = length_mask(lengths, L)
        q = self.q_proj(u).view(B, L, H, dk)
        k = where_valid(valid, self.k_proj(u).view(B, L, H, dk), 0.0)
        v = self.v_proj(u).view(B, L, H, dv)
        g = F.logsigmoid(self.gk_proj(u)).view(B, L, H, dk) / self.gate_logit_normalizer
        g = where_valid(valid, g, 0.0)
        o, new_state = gla(
            q, k, v, g, initial_state=state, output_final_state=True,
            chunk_size=self.chunk_size, scale=dk**-0.5, backend=self._op_backend(mode),
        )  # fmt: skip
        y = self.norm(o) * F.silu(self.g_proj(u)).view(B, L, H, dv)
        return self.o_proj(y.reshape(B, L, H * dv)).to(x.dtype), new_state
