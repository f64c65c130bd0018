"""Dtype promotion, packed sequences and chunk layouts shared by the ops.

One promotion rule for every op (:func:`compute_dtype`): states and accumulations are
float32, or float64 when any floating-point input is float64 (DESIGN.md: "States and
reductions accumulate in fp32 whatever the input dtype"); half-precision inputs are
computed in float32 and outputs cast back to the input's dtype by the op.

Packed sequences: ``cu_seqlens`` (int64 ``(n+1,)``, cumulative starts) packs n sequences
along time in a batch of one, as in flash-linear-attention and mamba. The chunked forms
run on a padded batch ``(n, max_len, ...)``: :func:`packed_to_padded` pads (with a value
that makes a padded step the identity of the recurrence, so each final state is the state
after the sequence's own last step) and :func:`padded_to_packed` drops the padding again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rnnx._checks import fmt_shape, require_tensor

__all__ = [
    "check_cu_seqlens",
    "compute_dtype",
    "from_chunks",
    "packed_to_padded",
    "pad_time",
    "padded_to_packed",
    "run_packed",
    "to_chunks",
]


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """The dtype of states and sums: float64 if any floating-point input is float64, else
    float32 (None and non-floating inputs are ignored)."""
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def check_cu_seqlens(cu_seqlens: object, batch: int, length: int) -> Tensor:
    """Validate ``cu_seqlens`` for a batch of 1 of ``length`` steps; return it as an int64
    CPU tensor (its values decide shapes, so they are read on the host once)."""
    cu = require_tensor("cu_seqlens", cu_seqlens)
    if cu.dtype not in (torch.int64, torch.int32) or cu.dim() != 1 or cu.numel() < 2:
        raise ValueError(
            "cu_seqlens: expected a 1-D int64 tensor (n + 1,) of cumulative sequence starts, "
            f"got dtype {cu.dtype} and shape {fmt_shape(cu.shape)}"
        )
    if batch != 1:
        raise ValueError(
            f"cu_seqlens: packed sequences need a batch of 1 (all sequences one after another "
            f"along time), got batch {batch}"
        )
    cu_cpu = cu.detach().to("cpu", torch.int64)
    if int(cu_cpu[0]) != 0 or int(cu_cpu[-1]) != length or bool((cu_cpu[1:] < cu_cpu[:-1]).any()):
        raise ValueError(
            f"cu_seqlens: expected non-decreasing offsets from 0 to the length {length}, "
            f"got {cu_cpu.tolist()}"
        )
    return cu_cpu


def packed_to_padded(
    x: Tensor, cu: Tensor | Sequence[int], fill: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Packed ``(1, T, ...)`` with sequence starts ``cu`` (a CPU tensor or a list of ints)
    to padded ``(n, max_len, ...)`` filled with ``fill`` after each sequence's end, and the
    mask of real steps ``(n, max_len)`` (both on x's device)."""
    bounds = cu.tolist() if isinstance(cu, Tensor) else list(cu)
    starts = torch.tensor(bounds[:-1], dtype=torch.int64)
    lengths = torch.tensor([b - a for a, b in itertools.pairwise(bounds)], dtype=torch.int64)
    max_len = max(max(lengths.tolist()), 1)
    t = torch.arange(max_len)
    mask = (t[None, :] < lengths[:, None]).to(x.device)
    idx = (starts[:, None] + t[None, :]).clamp(max=max(x.shape[1] - 1, 0)).to(x.device)
    padded = x[0, idx]
    keep = mask.view(*mask.shape, *([1] * (x.dim() - 2)))
    return torch.where(keep, padded, torch.full((), fill, dtype=x.dtype)), mask


def padded_to_packed(x: Tensor, mask: Tensor) -> Tensor:
    """Padded ``(n, max_len, ...)`` back to packed ``(1, T, ...)``: the steps under ``mask``."""
    return x[mask].unsqueeze(0)


def run_packed(
    fn: Callable[..., tuple[Tensor, Tensor | tuple | None]],
    bounds: Sequence[int],
    tensors: Sequence[tuple[Tensor, float]],
    **kwargs,
):
    """Run a padded-batch op on packed sequences.

    ``tensors`` are ``(x, fill)`` pairs; ``fill`` makes a padded step the identity of the
    recurrence (zero key, zero log-decay, zero β, ...), so each final state is the state
    after the sequence's own last step.
    """
    padded = [packed_to_padded(x, bounds, fill) for x, fill in tensors]
    o, state = fn(*(p for p, _ in padded), **kwargs)
    return padded_to_packed(o, padded[0][1]), state


def to_chunks(x: Tensor, C: int) -> Tensor:
    """``(B, T, H, *d)`` with T a multiple of C to ``(B, N, H, C, *d)`` (contiguous)."""
    B, T, H = x.shape[:3]
    return x.reshape(B, T // C, C, H, *x.shape[3:]).transpose(2, 3).contiguous()


def from_chunks(x: Tensor) -> Tensor:
    """``(B, N, H, C, *d)`` to ``(B, N*C, H, *d)``."""
    B, N, H, C = x.shape[:4]
    return x.transpose(2, 3).reshape(B, N * C, H, *x.shape[4:])


def pad_time(x: Tensor, T_pad: int, fill: float = 0.0) -> Tensor:
    """Pad dimension 1 to length ``T_pad`` with ``fill``."""
    T = x.shape[1]
    if T_pad == T:
        return x
    pad = x.new_full((x.shape[0], T_pad - T, *x.shape[2:]), fill)
    return torch.cat([x, pad], 1)
