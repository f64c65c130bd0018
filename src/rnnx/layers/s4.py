"""S4: the structured state-space layer with a diagonal-plus-low-rank A.

"Efficiently Modeling Long Sequences with Structured State Spaces" (Gu, Goel, Ré;
ICLR 2022, arXiv 2111.00396). Per feature h = 1..H, a real SSM of state size N
written in the eigenbasis of the normal part of a HiPPO matrix
(:func:`rnnx.ssm.hippo.nplr`), one of each conjugate pair of modes stored:

    A = diag(Λ) - P P^*  (rank r),   B, C complex,   y = 2 Re(C x) + D u,

discretised by the bilinear transform with a trainable step Δ_h = exp(log_dt_h).
Re Λ = -exp(·) keeps the normal part stable. The M output channels go through GELU
and a position-wise GLU projection, like the reference S4 block.

Modes (all compute the same function; the test matrix checks it):

* ``"conv"``: y = K * u by FFT. The kernel's generating function at the roots of
  unity is a Cauchy kernel combined by the Woodbury identity
  (:func:`rnnx.ops.conv.dplr_bilinear_kernel`), with C̃ = C (I - Ā^L) computed from
  Ā^L by repeated squaring; no power Ā^l is materialised per step.
* ``"scan"``: the recurrence by :func:`rnnx.ops.scan` with dense real N x N
  transitions (Ā in the real basis [Re x, Im x], built from the O(N r) step).
* ``"recurrent"``: the O(N r) DPLR step of :class:`rnnx.ssm.discretize.DPLRStep`
  as a Python loop (the reference, and the constant-memory decoding path).

Continuous time: ``dt`` multiplies Δ (a scalar, per sequence, or per time step;
``"conv"`` refuses a per-time-step step). Bidirectional (``bidirectional=True``): a
second set of output channels reads the sequence backwards (same A, B, Δ).

State: complex ``(batch, d_model, d_state // 2)`` (complex64, or complex128 for float64
parameters): one of each conjugate pair of modes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnnx._checks import length_mask, require_positive_int
from rnnx.layers import _ssm
from rnnx.layers.base import register
from rnnx.ops.conv import (
    dplr_bilinear_kernel,
    fft_conv,
    krylov_response,
    krylov_state,
    matrix_power_apply,
)
from rnnx.ops.scan import scan
from rnnx.ssm.discretize import DPLRStep
from rnnx.ssm.hippo import Measure, as_measure, nplr

__all__ = ["S4"]


def half_to_real(x: Tensor) -> Tensor:
    """One of each conjugate pair ``(..., N/2)`` complex -> ``(..., N)`` real [Re, Im]."""
    return torch.cat([x.real, x.imag], -1)


def real_to_half(z: Tensor) -> Tensor:
    n = z.shape[-1] // 2
    return torch.complex(z[..., :n], z[..., n:])


def row_to_real(C: Tensor) -> Tensor:
    """A row acting as y = 2 Re(C x) -> the real row acting on [Re x, Im x]."""
    return torch.cat([2 * C.real, -2 * C.imag], -1)


def real_to_row(C: Tensor) -> Tensor:
    n = C.shape[-1] // 2
    return torch.complex(C[..., :n], -C[..., n:]) / 2


@register("s4")
class S4(_ssm.ConvolutionalSSM):
    """Structured state-space layer (DPLR HiPPO, bilinear, Cauchy kernel), arXiv 2111.00396.

    Args:
        d_model: features H of input and output.
        d_state: state size N per feature (even; N/2 complex modes are stored).
        channels: output channels M per feature.
        measure: HiPPO measure of the initialisation (:class:`~rnnx.ssm.hippo.Measure`).
        rank: rank r of the low-rank term (default: the measure's, 1 or 2).
        dt_min, dt_max: the initial steps Δ are log-uniform in [dt_min, dt_max].
        bidirectional: add a backward direction (non-causal: no state passing, no step).
        dropout: dropout after the activation.
        ssm_lr: learning rate of Λ, P, B and Δ (no weight decay), as in S4.
        mode: ``"conv"`` (default), ``"scan"`` or ``"recurrent"``.
        backend: ``"auto"`` (default), ``"native"`` or ``"torch"``: the
            :func:`rnnx.ops.scan` implementation of mode ``"scan"``.
    """

    paper = "arXiv 2111.00396"

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        channels: int = 1,
        measure: Measure | str = Measure.LEGS,
        rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        ssm_lr: float = 1e-3,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        N = _ssm.require_even("d_state", d_state)
        M = require_positive_int("channels", channels)
        _ssm.check_dt_range(dt_min, dt_max)
        H, N2 = d_model, d_state // 2
        self.d_state, self.channels = N, M
        self.measure = as_measure(measure)
        self.bidirectional = bool(bidirectional)
        init = nplr(self.measure, N)
        r0 = init.P.shape[0]
        r = r0 if rank is None else require_positive_int("rank", rank)
        if r < r0:
            raise ValueError(
                f"rank: the {self.measure.value} measure needs rank >= {r0} to be normal "
                f"plus low rank, got {r}"
            )
        self.rank = r
        P = torch.cat([init.P, torch.zeros(r - r0, N2, dtype=init.P.dtype)])
        self.log_dt = nn.Parameter(_ssm.log_uniform(H, dt_min, dt_max))
        # Re Λ = -exp(log_A_real); LegT and Fourier have Re Λ = 0, kept just below.
        real = init.Lambda.real.clamp(max=-1e-4).float()
        self.log_A_real = nn.Parameter(torch.log(-real).expand(H, N2).clone())
        self.A_imag = nn.Parameter(init.Lambda.imag.float().expand(H, N2).clone())
        P_real = torch.view_as_real(P.to(torch.complex64))
        B_real = torch.view_as_real(init.B.to(torch.complex64))
        self.P = nn.Parameter(P_real.expand(H, r, N2, 2).clone())
        self.B = nn.Parameter(B_real.expand(H, N2, 2).clone())
        ssm = [self.log_dt, self.log_A_real, self.A_imag, self.P, self.B]
        _ssm.mark_ssm_parameters(ssm, ssm_lr)
        n_dir = 2 if self.bidirectional else 1
        self.C = _ssm.complex_param(H, n_dir * M, N2, std=1.0)
        self.D = nn.Parameter(torch.randn(H, M))
        self.dropout_p = _ssm.require_probability("dropout", dropout)
        self.output = _ssm.GLUOutput(H * M, H, self.dropout_p)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 4, "channels": 2}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, "
            f"measure={self.measure.value}, rank={self.rank}, "
            f"bidirectional={self.bidirectional}, mode={self.mode!r}" + self._backend_repr()
        )

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Complex zeros ``(batch_size, d_model, d_state // 2)``."""
        real = dtype if dtype is not None else self.state_dtype()
        return torch.zeros(
            batch_size,
            self.d_model,
            self.d_state // 2,
            device=device if device is not None else self._device(),
            dtype=_ssm.complex_dtype(real),
        )

    # ------------------------------------------------------------------ SSM parameters

    def ssm(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(Λ (H, N/2), P (H, r, N/2), B (H, N/2), C (H, n_dir*M, N/2))``, complex."""
        Lambda = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        return Lambda, _ssm.as_complex(self.P), _ssm.as_complex(self.B), _ssm.as_complex(self.C)

    def stepper(self, step: Tensor) -> DPLRStep:
        """The bilinear DPLR step for Δ of shape ``(..., H)``."""
        Lambda, P, B, _ = self.ssm()
        return DPLRStep(Lambda, P, P, B, step.unsqueeze(-1), conj_sym=True)

    def dense(self, step: Tensor) -> tuple[Tensor, Tensor]:
        """Ā, B̄ in the real basis [Re x, Im x]: ``(..., H, N, N)``, ``(..., H, N)``."""
        Lambda, P, B, _ = self.ssm()
        N2 = Lambda.shape[-1]
        eye = torch.eye(N2, dtype=Lambda.dtype, device=Lambda.device)
        basis = torch.cat([eye, 1j * eye])  # (N, N2): the images of e_j and i e_j
        st = DPLRStep(
            Lambda.unsqueeze(-2),
            P.unsqueeze(-3),
            P.unsqueeze(-3),
            B.unsqueeze(-2),
            step[..., None, None],
            conj_sym=True,
        )
        zero_u = torch.zeros((), dtype=step.dtype, device=step.device)
        dA = half_to_real(st(basis, zero_u)).transpose(-1, -2)
        one = torch.ones((), dtype=step.dtype, device=step.device)
        dB = half_to_real(self.stepper(step)(torch.zeros_like(B), one))
        return dA, dB

    def _mix(self, y: Tensor, u: Tensor) -> Tensor:
        y = y + u.unsqueeze(-1) * self.D
        return self.output(y.flatten(-2))

    # ------------------------------------------------------------------ recurrent

    def _recurrent(self, u, state, lengths, dt):
        L = u.shape[1]
        M = self.channels
        step = _ssm.steps(self.log_dt, dt)  # (H,) | (B, 1|L, H)
        C = self.ssm()[3]
        per_step = step.dim() == 3 and step.shape[1] > 1
        fixed = None if per_step else self.stepper(step if step.dim() == 1 else step[:, 0])
        mask = length_mask(lengths, L)

        def run(order, s, Cd):
            ys = []
            for t in order:
                st = fixed if fixed is not None else self.stepper(step[:, t])
                s_new = st(s, u[:, t])
                if mask is not None:
                    s_new = torch.where(mask[:, t].view(-1, 1, 1), s_new, s)
                s = s_new
                ys.append(2 * torch.einsum("bhn,hmn->bhm", s, Cd).real)
            return ys, s

        ys, s = run(range(L), state, C[:, :M])
        y = torch.stack(ys, 1)
        if self.bidirectional:
            back, _ = run(range(L - 1, -1, -1), torch.zeros_like(state), C[:, M:])
            y = y + torch.stack(back[::-1], 1)
        return y, s

    # ------------------------------------------------------------------ scan

    def _scan(self, u, state, lengths, dt):
        M = self.channels
        step = _ssm.steps(self.log_dt, dt)
        dA, dB = self.dense(step)  # (H,N,N) | (B,1|L,H,N,N)
        Cr = row_to_real(self.ssm()[3])  # (H, n_dir*M, N)
        b = dB * _ssm.zero_padding(u, lengths).unsqueeze(-1)
        z0 = half_to_real(state)
        h, _ = scan(dA, b, z0, structure="dense", backend=self.backend)
        y = torch.einsum("blhn,hmn->blhm", h, Cr[:, :M])
        if self.bidirectional:
            hb, _ = scan(dA, b, None, structure="dense", reverse=True, backend=self.backend)
            y = y + torch.einsum("blhn,hmn->blhm", hb, Cr[:, M:])
        return y, real_to_half(_ssm.last_valid(h, lengths, z0))

    # ------------------------------------------------------------------ conv

    def _conv(self, u, state, lengths, dt):
        Bsz, L, _ = u.shape
        M = self.channels
        step = _ssm.time_invariant_steps(self.log_dt, dt)  # (H,) or (B, H)
        Lambda, P, B, C = self.ssm()
        dA, dB = self.dense(step)
        Cr = row_to_real(C)
        # C̃ = C (I - Ā^L): the kernel of length L is then the generating function at the
        # L-th roots of unity, with no wrap-around of the infinite impulse response.
        C_tilde = real_to_row(Cr - Cr @ torch.linalg.matrix_power(dA, L))
        K = dplr_bilinear_kernel(C_tilde, Lambda, P, P, B, step, L)  # (..., H, n_dir*M, L)
        k_rev = K[..., M:, :] if self.bidirectional else None
        y = fft_conv(u.unsqueeze(-1), K[..., :M, :], k_rev, dim=1)  # (B, L, H, M)
        z0 = half_to_real(state)
        if not self._fresh_state:  # the initial state's contribution: C Ā^l (Ā x0)
            Az0 = torch.einsum("...ij,...j->...i", dA, z0)
            y = y + krylov_response(Cr[:, :M], dA, Az0, L).permute(0, 3, 1, 2)
        n = torch.full((Bsz,), L, device=u.device) if lengths is None else lengths
        last = krylov_state(dA, dB, _ssm.right_align(u.transpose(1, 2), lengths))
        last = last + matrix_power_apply(dA, n, z0, max_n=L)
        return y, real_to_half(last)
