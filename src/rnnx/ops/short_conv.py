"""Short causal depthwise convolution with a carried state.

Mamba (arXiv 2312.00752), Mamba-2, DeltaNet, Gated DeltaNet and GLA-style layers mix
each channel with its last few inputs before the recurrence:
y_t = Σ_{j<K} w_j x_{t-K+1+j} (+ bias). Its state is the last K-1 inputs, so a sequence
processed in pieces gives the same result as processed whole.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnx._amp import fp32_under_autocast
from rnnx._checks import fmt_shape

__all__ = ["causal_conv1d", "causal_conv1d_reference"]


def _check(x: Tensor, weight: Tensor, state: Tensor | None) -> int:
    if x.dim() != 3:
        raise ValueError(f"x: expected (batch, length, channels), got shape {fmt_shape(x.shape)}")
    B, _, D = x.shape
    if weight.dim() != 2 or weight.shape[0] != D:
        raise ValueError(
            f"weight: expected ({D}, kernel_size) for {D} channels, got {fmt_shape(weight.shape)}"
        )
    K = weight.shape[1]
    if state is not None and tuple(state.shape) != (B, K - 1, D):
        raise ValueError(
            f"state: expected shape {fmt_shape((B, K - 1, D))} (the last kernel_size-1 inputs), "
            f"got {fmt_shape(state.shape)}"
        )
    return K


def _final_state(xp: Tensor, K: int, lengths: Tensor | None) -> Tensor:
    """The last K-1 rows of the padded input before each sequence's end."""
    B, Lp, D = xp.shape
    if K == 1:
        return xp.new_zeros(B, 0, D)
    if lengths is None:
        return xp[:, Lp - (K - 1) :]
    idx = lengths.view(B, 1) + torch.arange(K - 1, device=xp.device).view(1, K - 1)
    return torch.gather(xp, 1, idx.unsqueeze(-1).expand(B, K - 1, D))


@fp32_under_autocast
def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    state: Tensor | None = None,
    *,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Depthwise causal convolution over time, continuing from ``state``.

    Args:
        x: ``(B, L, D)``.
        weight: ``(D, K)``; ``weight[:, -1]`` multiplies the current input.
        bias: ``(D,)`` or None.
        state: ``(B, K-1, D)``, the K-1 inputs before ``x`` (zeros if None).
        lengths: ``(B,)`` valid lengths; the returned state is taken before the padding.

    Returns:
        ``(y, new_state)``: ``y`` ``(B, L, D)`` and the last K-1 (valid) inputs.
    """
    K = _check(x, weight, state)
    B, _, D = x.shape
    if state is None:
        state = x.new_zeros(B, K - 1, D)
    xp = torch.cat([state.to(x.dtype), x], 1)  # (B, K-1+L, D)
    y = F.conv1d(xp.transpose(1, 2), weight.unsqueeze(1).to(x.dtype), bias, groups=D)
    return y.transpose(1, 2), _final_state(xp, K, lengths)


@fp32_under_autocast
def causal_conv1d_reference(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    state: Tensor | None = None,
    *,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The same as :func:`causal_conv1d`, one step at a time (the test oracle)."""
    K = _check(x, weight, state)
    B, _, D = x.shape
    window = list((x.new_zeros(B, K - 1, D) if state is None else state.to(x.dtype)).unbind(1))
    ys = []
    for x_t in x.unbind(1):
        window.append(x_t)
        taps = torch.stack(window[-K:], -1)  # (B, D, K)
        y_t = (taps * weight).sum(-1)
        ys.append(y_t if bias is None else y_t + bias)
    xp = torch.stack(window, 1)
    return torch.stack(ys, 1), _final_state(xp, K, lengths)
