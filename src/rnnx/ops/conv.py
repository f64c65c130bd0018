"""Causal convolutions by FFT, and the kernels of diagonal state-space models.

A linear time-invariant SSM is the causal convolution y = K * u with
K_l = C Ā^l B̄ (LSSL, arXiv 2110.13985, Section 3.2). For diagonal Ā the kernel is a
Vandermonde product (S4D, arXiv 2206.11893): K_l = 2 Re(Σ_n C_n B̄_n Ā_n^l), with one
of each conjugate pair of modes stored.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["causal_conv_fft", "vandermonde_kernel", "vandermonde_state"]


def _fft_size(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()


def causal_conv_fft(u: Tensor, k: Tensor) -> Tensor:
    """Causal convolution y_t = Σ_{s<=t} k_{t-s} u_s along the time axis, by FFT.

    Args:
        u: ``(B, L, H)`` inputs, batch-first.
        k: ``(H, Lk)`` or ``(B, H, Lk)`` real kernels, Lk >= 1; lags beyond Lk are zero.

    Returns:
        ``(B, L, H)``, in O(L log L) per channel. The FFT runs in at least float32.
    """
    L = u.shape[1]
    n = _fft_size(L + min(k.shape[-1], L))
    work = torch.promote_types(u.dtype, torch.float32)
    uf = torch.fft.rfft(u.to(work).transpose(1, 2), n=n)
    kf = torch.fft.rfft(k[..., :L].to(work), n=n)
    y = torch.fft.irfft(uf * kf, n=n)[..., :L]
    return y.transpose(1, 2).to(u.dtype)


def vandermonde_kernel(coef: Tensor, log_base: Tensor, length: int, *, offset: int = 0) -> Tensor:
    """K_l = 2 Re(Σ_n coef_n exp(log_base_n (l + offset))) for l < length.

    Args:
        coef, log_base: complex ``(..., N)`` (broadcastable); ``log_base`` is ΔA.
        offset: shift of the exponent (``offset=1`` gives the response to an initial
            state, whose first output has seen one step).

    Returns:
        Real ``(..., length)``.
    """
    pos = torch.arange(offset, offset + length, device=log_base.device, dtype=log_base.real.dtype)
    vander = torch.exp(log_base.unsqueeze(-1) * pos)  # (..., N, L)
    return 2 * torch.einsum("...n,...nl->...l", coef, vander).real


def vandermonde_state(u: Tensor, log_base: Tensor, dB: Tensor) -> Tensor:
    """The state after a sequence: x_L = Σ_s exp(ΔA (L-1-s)) B̄ u_s (zero initial state).

    Args:
        u: real ``(B, H, L)``.
        log_base: ΔA, complex ``(H, N)`` or ``(B, H, N)``.
        dB: B̄, complex, broadcastable to ``log_base``.

    Returns:
        Complex ``(B, H, N)``.
    """
    L = u.shape[-1]
    pos = torch.arange(L - 1, -1, -1, device=u.device, dtype=log_base.real.dtype)
    vander = torch.exp(log_base.unsqueeze(-1) * pos)  # (..., H, N, L)
    uc = u.to(vander.dtype)
    if vander.dim() == 3:
        return torch.einsum("bhl,hnl->bhn", uc, vander) * dB
    return torch.einsum("bhl,bhnl->bhn", uc, vander) * dB
