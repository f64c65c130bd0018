"""DeltaNet and Gated DeltaNet: linear attention that writes with the delta rule.

* :class:`DeltaNet` (Schlag et al., arXiv 2102.11174; trained in parallel over the
  sequence by Yang et al., arXiv 2406.06484): S_t = (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ.
* :class:`GatedDeltaNet` (Yang, Kautz, Hatamizadeh, arXiv 2412.06464):
  S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ with a Mamba-2 style decay
  α_t = exp(−e^{A_log} softplus(W_a x_t + dt_bias)).

Both as in flash-linear-attention's layers: q, k, v projections each followed by a short
causal depthwise convolution (kernel 4) and SiLU, L2-normalised q and k per head,
β_t = σ(W_β x_t), an RMSNorm per head (Gated DeltaNet: times a SiLU output gate) and an
output projection.

Negative eigenvalues (Grazzi et al., arXiv 2411.12537): with ``allow_neg_eigval=True``
β_t = 2σ(W_β x_t) ∈ (0, 2), so the transition I − β k kᵀ (unit k) has eigenvalues in
(−1, 1] instead of (0, 1]: the state can flip sign, which lets the layer track parity and
counts modulo m.

Modes: ``"chunk"`` (default; the WY/UT chunked form of :mod:`rnnx.ops.delta`) and
``"recurrent"`` (one step at a time; the reference and the decoding path of
:meth:`step`). Padded steps (``lengths``) get β = 0 and no decay: they leave the memory
unchanged, and the convolution state is taken before them.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._checks import length_mask, require_positive_int
from rnnx._vocab import REFERENCE
from rnnx.layers._chunked import (
    HeadRMSNorm,
    l2norm,
    pick_heads,
    scaled_dim,
    where_valid,
)
from rnnx.layers.base import RecurrentLayer, State, register
from rnnx.ops.delta import delta_rule, gated_delta_rule
from rnnx.ops.short_conv import causal_conv1d

__all__ = ["DeltaNet", "GatedDeltaNet"]


class _DeltaBase(RecurrentLayer):
    """Projections, short convolution, norms and state shared by both layers."""

    modes: ClassVar[tuple[str, ...]] = ("chunk", "recurrent")
    default_mode: ClassVar[str] = "chunk"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    family: ClassVar[str] = "linear attention"

    def __init__(
        self,
        d_model: int,
        num_heads: int | None,
        *,
        expand_v: float,
        conv_size: int,
        allow_neg_eigval: bool,
        chunk_size: int,
        mode: str | None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        dv_total = scaled_dim("expand_v", d_model, expand_v)
        H = pick_heads(d_model, d_model, dv_total, num_heads=num_heads)
        self.num_heads = H
        self.head_k, self.head_v = d_model // H, dv_total // H
        self.conv_size = require_positive_int("conv_size", conv_size)
        self.chunk_size = require_positive_int("chunk_size", chunk_size)
        self.allow_neg_eigval = bool(allow_neg_eigval)
        self.conv_channels = 2 * d_model + dv_total
        self.qkv_proj = nn.Linear(d_model, self.conv_channels, bias=False)
        bound = 1 / math.sqrt(conv_size)  # nn.Conv1d's default for a depthwise kernel
        self.conv_weight = nn.Parameter(
            torch.empty(self.conv_channels, conv_size).uniform_(-bound, bound)
        )
        self.b_proj = nn.Linear(d_model, H, bias=True)
        self.norm = HeadRMSNorm(self.head_v)
        self.o_proj = nn.Linear(dv_total, d_model, bias=False)

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> dict[str, Tensor]:
        """``{"conv": (batch, conv_size − 1, 2·d_model + value size)`` (the last inputs of
        the q/k/v convolution), ``"memory": (batch, num_heads, head_k, head_v)}``, zeros."""
        device = device if device is not None else self._device()
        dtype = dtype if dtype is not None else self.state_dtype()
        return {
            "conv": torch.zeros(
                batch_size, self.conv_size - 1, self.conv_channels, device=device, dtype=dtype
            ),
            "memory": torch.zeros(
                batch_size, self.num_heads, self.head_k, self.head_v, device=device, dtype=dtype
            ),
        }

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, num_heads={self.num_heads}, head_k={self.head_k}, "
            f"head_v={self.head_v}, allow_neg_eigval={self.allow_neg_eigval}, "
            f"chunk_size={self.chunk_size}, mode={self.mode!r}" + self._backend_repr()
        )

    def _qkv_beta(self, u: Tensor, state: dict[str, Tensor], lengths: Tensor | None):
        """Normalised q, k, v per head, β (0 at padding) and the new convolution state."""
        B, L, _ = u.shape
        H, dk, dv = self.num_heads, self.head_k, self.head_v
        qkv, conv_state = causal_conv1d(
            self.qkv_proj(u), self.conv_weight, None, state["conv"], lengths=lengths
        )
        qkv = F.silu(qkv)
        q, k, v = qkv.split([H * dk, H * dk, H * dv], -1)
        q = l2norm(q.reshape(B, L, H, dk))
        k = l2norm(k.reshape(B, L, H, dk))
        v = v.reshape(B, L, H, dv)
        beta = torch.sigmoid(self.b_proj(u))
        if self.allow_neg_eigval:
            beta = 2 * beta
        valid = length_mask(lengths, L)
        return q, k, v, where_valid(valid, beta, 0.0), valid, conv_state

    def transition_eigenvalues(self, x: Tensor) -> Tensor:
        """Eigenvalues 1 − β_t |k_t|² of the transitions I − β_t k_t k_tᵀ along the
        direction k_t (the others are 1), ``(batch, length, num_heads)``, for input
        ``x`` from the zero state: in [0, 1], or [−1, 1] with ``allow_neg_eigval``."""
        u = x.to(self.state_dtype())
        _, k, _, beta, _, _ = self._qkv_beta(u, self.init_state(x.shape[0], device=x.device), None)
        return 1 - beta * k.pow(2).sum(-1)


@register("deltanet")
class DeltaNet(_DeltaBase):
    """DeltaNet: linear attention with the delta rule (arXiv 2406.06484, 2102.11174).

    Args:
        d_model: input and output features (also the total key size).
        num_heads: heads (default: about one per 64 features).
        expand_v: value size as a multiple of d_model.
        conv_size: kernel size of the short convolution on q, k, v.
        allow_neg_eigval: β in (0, 2) instead of (0, 1): transition eigenvalues in
            (−1, 1] (arXiv 2411.12537).
        chunk_size: chunk length of mode ``"chunk"``.
        mode: ``"chunk"`` (default) or ``"recurrent"``.
        backend: ``"auto"`` (default) or ``"torch"``: see :attr:`RecurrentLayer.backend`.

    State: ``{"conv", "memory"}``, see :meth:`init_state`.
    """

    paper: ClassVar[str] = "arXiv 2406.06484"

    def __init__(
        self,
        d_model: int,
        num_heads: int | None = None,
        *,
        expand_v: float = 1.0,
        conv_size: int = 4,
        allow_neg_eigval: bool = False,
        chunk_size: int = 64,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            d_model, num_heads, expand_v=expand_v, conv_size=conv_size,
            allow_neg_eigval=allow_neg_eigval, chunk_size=chunk_size, mode=mode,
            backend=backend,
        )  # fmt: skip

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"num_heads": 2, "chunk_size": 4, "allow_neg_eigval": True}

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
        u = x.to(self.state_dtype())
        q, k, v, beta, _, conv_state = self._qkv_beta(u, state, lengths)
        o, memory = delta_rule(
            q, k, v, beta, initial_state=state["memory"], output_final_state=True,
            chunk_size=self.chunk_size, scale=self.head_k**-0.5,
            backend=REFERENCE if mode == "recurrent" else self.backend,
        )  # fmt: skip
        y = self.o_proj(self.norm(o).reshape(B, L, -1))
        return y.to(x.dtype), {"conv": conv_state, "memory": memory}


@register("gated_deltanet")
class GatedDeltaNet(_DeltaBase):
    """Gated DeltaNet: the delta rule with a data-dependent decay (arXiv 2412.06464).

    Args:
        d_model: input and output features (also the total key size).
        num_heads: heads (default: about one per 64 features).
        expand_v: value size as a multiple of d_model.
        conv_size: kernel size of the short convolution on q, k, v.
        allow_neg_eigval: β in (0, 2) instead of (0, 1): transition eigenvalues in
            (−1, 1] times the decay (arXiv 2411.12537).
        dt_min, dt_max: the initial softplus steps of the decay are log-uniform in this
            range (as Mamba-2's Δ).
        chunk_size: chunk length of mode ``"chunk"``.
        mode: ``"chunk"`` (default) or ``"recurrent"``.
        backend: ``"auto"`` (default) or ``"torch"``: see :attr:`RecurrentLayer.backend`.

    State: ``{"conv", "memory"}``, see :meth:`init_state`.
    """

    paper: ClassVar[str] = "arXiv 2412.06464"

    def __init__(
        self,
        d_model: int,
        num_heads: int | None = None,
        *,
        expand_v: float = 1.0,
        conv_size: int = 4,
        allow_neg_eigval: bool = False,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        chunk_size: int = 64,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(
            d_model, num_heads, expand_v=expand_v, conv_size=conv_size,
            allow_neg_eigval=allow_neg_eigval, chunk_size=chunk_size, mode=mode,
            backend=backend,
        )  # fmt: skip
        if not (0 < dt_min <= dt_max):
            raise ValueError(
                f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}"
            )
        H = self.num_heads
        self.a_proj = nn.Linear(d_model, H, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(1, 16)))
        dt = torch.exp(
            torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        for p in (self.A_log, self.dt_bias):
            # a plain attribute on the tensor, read by parameter_groups; torch types none
            p._optim = {"weight_decay": 0.0}  # type: ignore[attr-defined]
        self.g_proj = nn.Linear(d_model, H * self.head_v, bias=False)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"num_heads": 2, "chunk_size": 4, "allow_neg_eigval": True}

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
        H, dv = self.num_heads, self.head_v
        u = x.to(self.state_dtype())
        q, k, v, beta, valid, conv_state = self._qkv_beta(u, state, lengths)
        g = -torch.exp(self.A_log) * F.softplus(self.a_proj(u) + self.dt_bias)
        g = where_valid(valid, g, 0.0)
        o, memory = gated_delta_rule(
            q, k, v, g, beta, initial_state=state["memory"], output_final_state=True,
            chunk_size=self.chunk_size, scale=self.head_k**-0.5,
            backend=REFERENCE if mode == "recurrent" else self.backend,
        )  # fmt: skip
        o = self.norm(o) * F.silu(self.g_proj(u)).view(B, L, H, dv)
        y = self.o_proj(o.reshape(B, L, H * dv))
        return y.to(x.dtype), {"conv": conv_state, "memory": memory}
