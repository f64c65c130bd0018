"""LSSL: the Linear State-Space Layer, a HiPPO ODE as recurrence, convolution and
continuous-time system.

"Combining Recurrent, Convolutional, and Continuous-time Models with Linear
State-Space Layers" (Gu, Johnson, Goel, Saab, Dao, Rudra, Ré; NeurIPS 2021,
arXiv 2110.13985). Per feature h = 1..H, a dense SSM of state size N,

    x'(t) = A x(t) + B u(t),     y(t) = C x(t) + D u(t)      (M output channels),

with A, B a HiPPO matrix (:mod:`rnnx.ssm.hippo`, measure chosen by
:class:`~rnnx.ssm.hippo.Measure`) that is fixed, shared by all features, or trained
per feature (:class:`Sharing`), a trainable step Δ_h = exp(log_dt_h) per feature,
discretised by the bilinear transform (default) or zero-order hold. The M output
channels of every feature are mixed by a linear layer after a GELU.

Modes (all compute the same function; the test matrix checks it):

* ``"conv"``: y = K * u by FFT, with the kernel K_l = C Ā^l B̄ from the Krylov
  sequence computed by repeated squaring, chunked over time so that long sequences
  never hold an N x L matrix (:func:`rnnx.ops.conv.krylov_kernel`). When the SSM
  parameters are frozen (or gradients are off) the kernel is cached per length, and
  Ā, B̄ for decoding.
* ``"scan"``: the recurrence x_k = Ā x_{k-1} + B̄ u_k by :func:`rnnx.ops.scan` with
  dense transitions (O(N^2) per step and feature).
* ``"recurrent"``: the same recurrence as a Python loop (the reference, and the
  constant-memory decoding path).

Continuous time: ``dt`` multiplies Δ (a scalar, per sequence, or per time step; a
step per time step makes the system time-varying, so ``"conv"`` refuses it).
Bidirectional (``bidirectional=True``): a second set of output channels reads the
sequence backwards (same A, B, Δ), which makes the layer non-causal.

State: real ``(batch, d_model, d_state)`` (float32, or float64 for float64 parameters).
"""

from __future__ import annotations

import enum
from typing import Any

import torch
from torch import Tensor, nn

from rnnx._checks import length_mask, require_positive_int
from rnnx.layers import _ssm
from rnnx.layers.base import register
from rnnx.ops.conv import fft_conv, krylov_kernel, krylov_response, krylov_state, matrix_power_apply
from rnnx.ops.scan import scan
from rnnx.ssm.discretize import Discretization, as_discretization, bilinear_dense, zoh_dense
from rnnx.ssm.hippo import Measure, as_measure, hippo

__all__ = ["LSSL", "Sharing"]


class Sharing(enum.StrEnum):
    """How LSSL holds its A and B."""

    FIXED = "fixed"
    """The HiPPO matrices, not trained (the paper's LSSL-f)."""
    SHARED = "shared"
    """One trainable A, B for all features, initialised from HiPPO."""
    PER_FEATURE = "per_feature"
    """A trainable A, B per feature (H N^2 parameters)."""


def as_sharing(value: Sharing | str) -> Sharing:
    try:
        return Sharing(value)
    except ValueError:
        raise ValueError(
            f"sharing: expected one of {[m.value for m in Sharing]}, got {value!r}"
        ) from None


@register("lssl")
class LSSL(_ssm.ConvolutionalSSM):
    """Linear State-Space Layer (HiPPO A, trainable Δ, Krylov kernel), arXiv 2110.13985.

    Args:
        d_model: features H of input and output.
        d_state: state size N per feature.
        channels: output channels M per feature, mixed by a linear layer.
        measure: the HiPPO measure of A, B (:class:`~rnnx.ssm.hippo.Measure`).
        sharing: A, B fixed, shared or per feature (:class:`Sharing`).
        discretization: ``"bilinear"`` (default, as in the paper) or ``"zoh"``.
        dt_min, dt_max: the initial steps Δ are log-uniform in [dt_min, dt_max].
        bidirectional: add a backward direction (non-causal: no state passing, no step).
        dropout: dropout after the activation.
        ssm_lr: learning rate of A, B and Δ (no weight decay), as in S4.
        mode: ``"conv"`` (default), ``"scan"`` or ``"recurrent"``.
        backend: ``"auto"`` (default), ``"native"`` or ``"torch"``: the
            :func:`rnnx.ops.scan` implementation of mode ``"scan"``.
    """

    paper = "arXiv 2110.13985"

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        channels: int = 1,
        measure: Measure | str = Measure.LEGS,
        sharing: Sharing | str = Sharing.SHARED,
        discretization: Discretization | str = Discretization.BILINEAR,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        ssm_lr: float = 1e-3,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        N = require_positive_int("d_state", d_state)
        M = require_positive_int("channels", channels)
        _ssm.check_dt_range(dt_min, dt_max)
        H = d_model
        self.d_state, self.channels = N, M
        self.measure = as_measure(measure)
        self.sharing = as_sharing(sharing)
        self.discretization = as_discretization(discretization)
        self.bidirectional = bool(bidirectional)
        A, B = hippo(self.measure, N, dtype=torch.float32)
        if self.sharing is Sharing.FIXED:
            self.register_buffer("A", A)
            self.register_buffer("B", B)
            ssm = []
        else:
            if self.sharing is Sharing.PER_FEATURE:
                A, B = A.expand(H, N, N).clone(), B.expand(H, N).clone()
            self.A = nn.Parameter(A)
            self.B = nn.Parameter(B)
            ssm = [self.A, self.B]
        self.log_dt = nn.Parameter(_ssm.log_uniform(H, dt_min, dt_max))
        _ssm.mark_ssm_parameters([*ssm, self.log_dt], ssm_lr)
        n_dir = 2 if self.bidirectional else 1
        self.C = nn.Parameter(torch.randn(H, n_dir * M, N) / N**0.5)
        self.D = nn.Parameter(torch.randn(H, M))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(_ssm.require_probability("dropout", dropout))
        self.out_proj = nn.Linear(H * M, H)
        self._kernel_cache: dict[str, Any] = {}
        self._step_cache: dict[str, Any] = {}

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 4, "channels": 2}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, "
            f"measure={self.measure.value}, sharing={self.sharing.value}, "
            f"discretization={self.discretization.value}, bidirectional={self.bidirectional}, "
            f"mode={self.mode!r}" + self._backend_repr()
        )

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Real zeros ``(batch_size, d_model, d_state)``."""
        return torch.zeros(
            batch_size,
            self.d_model,
            self.d_state,
            device=device if device is not None else self._device(),
            dtype=dtype if dtype is not None else self.state_dtype(),
        )

    # ------------------------------------------------------------------ SSM

    def discretized(self, step: Tensor) -> tuple[Tensor, Tensor]:
        """``(Ā, B̄)`` for steps Δ of shape ``(..., H)``: ``(..., H, N, N)``, ``(..., H, N)``."""
        A, B = self.A.to(step.dtype), self.B.to(step.dtype)
        if self.discretization is Discretization.ZOH:
            return zoh_dense(A, B, step)
        return bilinear_dense(A, B, step)

    def kernel(self, length: int, dt: float = 1.0) -> Tensor:
        """The convolution kernel K_l = C Ā^l B̄ for l < length, with the step Δ·dt.

        Returns ``(d_model, channels, length)`` (``2 * channels`` when bidirectional: the
        backward direction's kernels last), in the parameters' dtype.
        """
        step = torch.exp(self.log_dt) * float(dt)
        return self._conv_parts(length, step, cacheable=dt == 1.0)[2]

    def _mix(self, y: Tensor, u: Tensor) -> Tensor:
        """(B, L, H, M) SSM channels + D u -> GELU -> linear -> (B, L, H)."""
        y = y + u.unsqueeze(-1) * self.D
        y = self.dropout(self.activation(y))
        return self.out_proj(y.flatten(-2))

    def _readout(self, h: Tensor, C: Tensor) -> Tensor:
        return torch.einsum("blhn,hmn->blhm", h, C)

    # ------------------------------------------------------------------ recurrent

    def _recurrent(self, u, state, lengths, dt):
        step = _ssm.steps(self.log_dt, dt)
        if dt is None:  # decoding: Ā, B̄ are cached while the parameters do not change
            key = self._cache_key(0, step.dtype)
            if key is not None and self._step_cache.get("key") == key:
                dA, dB = self._step_cache["value"]
            else:
                dA, dB = self.discretized(step)
                if key is not None:
                    self._step_cache = {"key": key, "value": (dA, dB)}
        else:
            dA, dB = self.discretized(step)  # (H,N,N) | (B,1|L,H,N,N)
        L = u.shape[1]
        M = self.channels
        mask = length_mask(lengths, L)

        def at(t):  # Ā, B̄ of step t, without copying a time-invariant Ā per step
            if dA.dim() == 3:
                return dA, dB
            i = t if dA.shape[1] > 1 else 0
            return dA[:, i], dB[:, i]

        def move(a, s):  # Ā s for Ā (H, N, N) or (B, H, N, N), s (B, H, N)
            if a.dim() == 3:
                return torch.einsum("hnm,bhm->bhn", a, s)
            return torch.einsum("bhnm,bhm->bhn", a, s)

        def run(order, s, C, masked):
            ys = []
            for t in order:
                a_t, b_t = at(t)
                s_new = move(a_t, s) + b_t * u[:, t].unsqueeze(-1)
                if masked and mask is not None:
                    s_new = torch.where(mask[:, t].view(-1, 1, 1), s_new, s)
                s = s_new
                ys.append(torch.einsum("bhn,hmn->bhm", s, C))
            return ys, s

        ys, s = run(range(L), state, self.C[:, :M].to(u.dtype), True)
        y = torch.stack(ys, 1)
        if self.bidirectional:
            back, _ = run(range(L - 1, -1, -1), torch.zeros_like(state), self.C[:, M:], False)
            y = y + torch.stack(back[::-1], 1).to(y.dtype)
        return y, s

    # ------------------------------------------------------------------ scan

    def _scan(self, u, state, lengths, dt):
        step = _ssm.steps(self.log_dt, dt)
        dA, dB = self.discretized(step)
        M = self.channels
        b = dB * _ssm.zero_padding(u, lengths).unsqueeze(-1)  # (B, L, H, N)
        h, _ = scan(dA, b, state, structure="dense", backend=self.backend)
        y = self._readout(h, self.C[:, :M].to(u.dtype))
        if self.bidirectional:
            hb, _ = scan(dA, b, None, structure="dense", reverse=True, backend=self.backend)
            y = y + self._readout(hb, self.C[:, M:].to(u.dtype))
        return y, _ssm.last_valid(h, lengths, state)

    # ------------------------------------------------------------------ conv

    def _cache_key(self, L: int, dtype: torch.dtype) -> tuple | None:
        """A key for the kernel cache, or None when the kernel must stay in the graph."""
        params = [self.A, self.B, self.log_dt, self.C]
        if torch.compiler.is_compiling():
            return None  # a compiled graph recomputes the kernel (no data pointers there)
        if torch.is_grad_enabled() and any(p.requires_grad for p in params):
            return None
        return (L, dtype, *((p.data_ptr(), p._version, p.device) for p in params))

    def _conv_parts(self, L: int, step: Tensor, cacheable: bool):
        """``(Ā, B̄, K)``, K ``(..., H, n_dir*M, L)``; cached when nothing needs gradients."""
        key = self._cache_key(L, step.dtype) if cacheable else None
        if key is not None and self._kernel_cache.get("key") == key:
            return self._kernel_cache["value"]
        dA, dB = self.discretized(step)
        K = krylov_kernel(self.C.to(step.dtype), dA, dB, L)
        if key is not None:
            self._kernel_cache = {"key": key, "value": (dA, dB, K)}
        return dA, dB, K

    def _conv(self, u, state, lengths, dt):
        Bsz, L, _ = u.shape
        M = self.channels
        step = _ssm.time_invariant_steps(self.log_dt, dt)  # (H,) or (B, H)
        dA, dB, K = self._conv_parts(L, step, cacheable=dt is None)
        k_rev = K[..., M:, :] if self.bidirectional else None
        y = fft_conv(u.unsqueeze(-1), K[..., :M, :], k_rev, dim=1)  # (B, L, H, M)
        if not self._fresh_state:  # the initial state's contribution: C Ā^l (Ā x0)
            Ax0 = torch.einsum("...ij,...j->...i", dA, state)
            y = y + krylov_response(self.C[:, :M].to(u.dtype), dA, Ax0, L).permute(0, 3, 1, 2)
        n = torch.full((Bsz,), L, device=u.device) if lengths is None else lengths
        last = krylov_state(dA, dB, _ssm.right_align(u.transpose(1, 2), lengths))
        last = last + matrix_power_apply(dA, n, state, max_n=L)
        return y, last
