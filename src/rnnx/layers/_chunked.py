"""Pieces shared by the linear-attention layers (linear attention, RetNet, GLA,
DeltaNet, Gated DeltaNet, mLSTM): head counts, per-head norms, padding masks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnx._checks import require_positive_int


def pick_heads(d_model: int, *dims: int, num_heads: int | None = None) -> int:
    """``num_heads`` checked against ``dims``, or the default: the largest divisor of every
    dim that is at most ``max(1, d_model // 64)`` (heads of about 64 features)."""
    if num_heads is not None:
        require_positive_int("num_heads", num_heads)
        for d in dims:
            if d % num_heads:
                raise ValueError(
                    f"num_heads: expected a divisor of the projected sizes {dims}, got {num_heads}"
                )
        return num_heads
    for h in range(max(1, d_model // 64), 0, -1):
        if all(d % h == 0 for d in dims):
            return h
    return 1


def scaled_dim(name: str, d_model: int, factor: float) -> int:
    """``round(d_model * factor)``, at least 1."""
    if not factor > 0:
        raise ValueError(f"{name}: expected a positive factor, got {factor}")
    return max(1, round(d_model * factor))


class HeadRMSNorm(nn.Module):
    """RMSNorm over the last dimension (one head's features), with a learned gain."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class HeadLayerNorm(nn.Module):
    """LayerNorm of each head's features ``(..., heads, dim)`` with a learned gain (and
    bias) per channel: RetNet's GroupNorm with one group per head, xLSTM's multi-head
    LayerNorm."""

    def __init__(self, heads: int, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(heads, dim))
        self.bias = nn.Parameter(torch.zeros(heads, dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(-1, keepdim=True)
        var = (x - mu).pow(2).mean(-1, keepdim=True)
        y = (x - mu) * torch.rsqrt(var + self.eps) * self.weight
        return y if self.bias is None else y + self.bias


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(|x|² + eps) over the last dimension (a smooth unit-norm map)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def where_valid(valid: Tensor | None, x: Tensor, fill: float) -> Tensor:
    """``x`` at real steps, ``fill`` at padded ones; ``x`` is ``(B, L, ...)``, ``valid``
    the padding mask :func:`rnnx._checks.length_mask` (or None: no padding)."""
    if valid is None:
        return x
    mask = valid.view(*valid.shape, *([1] * (x.dim() - 2)))
    return torch.where(mask, x, torch.full((), fill, dtype=x.dtype, device=x.device))
