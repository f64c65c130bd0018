"""HiPPO-derived initialisations of diagonal state matrices.

S4D-Lin (arXiv 2206.11893, Section 4): A_n = -1/2 + i π n, n = 0..N/2-1, the diagonal
approximation of HiPPO-LegS' normal part; one of each conjugate pair is kept.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rnnx._checks import require_positive_int

__all__ = ["s4d_lin"]


def s4d_lin(n_half: int, *, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """S4D-Lin: ``(real, imag)`` parts of A_n = -1/2 + i π n for n < n_half."""
    require_positive_int("n_half", n_half)
    real = torch.full((n_half,), -0.5, dtype=dtype)
    imag = math.pi * torch.arange(n_half, dtype=dtype)
    return real, imag
