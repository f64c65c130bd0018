"""S4D: the diagonal structured state-space layer, in three equivalent views.

"On the Parameterization and Initialization of Diagonal State Space Models"
(Gu, Gupta, Goel, Ré 2022, arXiv 2206.11893). Per feature h = 1..H, a diagonal complex
SSM of N/2 modes (one of each conjugate pair; the output takes twice the real part):

    x'(t) = A x(t) + B u(t),   y(t) = 2 Re(C x(t)) + D u(t),   A_n = -exp(a_n) + i b_n,

discretised by zero-order hold with a trainable step Δ_h = exp(log_dt_h). B is fixed to
1 (its role is taken by C, as in the paper's minimal S4D). A is initialised by one of
the paper's rules (:class:`~rnnx.ssm.hippo.S4DInit`: S4D-Lin by default, S4D-Inv,
S4D-LegS, S4D-Real). The SSM output goes through GELU and a position-wise GLU
projection, like the reference S4D block.

Modes (all compute the same function; the test matrix checks it):

* ``"conv"``: y = K * u with the Vandermonde kernel K_l = 2 Re(Σ C_n B̄_n Ā_n^l),
  by FFT in O(L log L); the final state by one transposed Vandermonde product.
* ``"scan"``: the recurrence x_k = Ā x_{k-1} + B̄ u_k by :func:`rnnx.ops.scan`.
* ``"recurrent"``: the same recurrence as a Python loop, one step at a time (the
  reference, and the constant-memory decoding path).

Continuous time: ``dt`` multiplies Δ (a scalar, per sequence, or per time step for
irregular sampling; per-time-step steps make the system time-varying, so ``"conv"``
refuses them and ``"scan"`` / ``"recurrent"`` handle them).

Bidirectional (``bidirectional=True``): a second C reads the sequence backwards (same A
and Δ); the layer is then non-causal (no state passing, no ``step``).

State: complex ``(batch, d_model, d_state // 2)`` (complex64, or complex128 for float64
parameters).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnx._checks import require_positive_int
from rnnx.layers import _ssm
from rnnx.layers.base import RecurrentLayer, register
from rnnx.ops.conv import causal_conv_fft, vandermonde_kernel, vandermonde_state
from rnnx.ops.scan import scan
from rnnx.ssm.discretize import zoh_diagonal
from rnnx.ssm.hippo import S4DInit, s4d_init

__all__ = ["S4D"]


@register("s4d")
class S4D(_ssm.BidirectionalMixin, RecurrentLayer):
    """Diagonal state-space layer (S4D initialisations, ZOH, trainable log-step).

    Args:
        d_model: features H of input and output.
        d_state: state size N per feature (even; N/2 complex modes are stored).
        init: initialisation of A (:class:`~rnnx.ssm.hippo.S4DInit`), default S4D-Lin.
        dt_min, dt_max: the initial steps Δ are log-uniform in [dt_min, dt_max].
        bidirectional: add a backward direction (non-causal: no state passing, no step).
        dropout: dropout after the activation.
        ssm_lr: learning rate of A and Δ (no weight decay), as in S4.
        mode: ``"conv"`` (default), ``"scan"`` or ``"recurrent"``.
    """

    modes: ClassVar[tuple[str, ...]] = ("conv", "scan", "recurrent")
    default_mode: ClassVar[str] = "conv"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    continuous_time: ClassVar[bool] = True
    family: ClassVar[str] = "linear time-invariant SSM"
    paper: ClassVar[str] = "arXiv 2206.11893"

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        init: S4DInit | str = S4DInit.LIN,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        ssm_lr: float = 1e-3,
        mode: str | None = None,
    ) -> None:
        super().__init__(d_model, mode=mode)
        require_positive_int("d_state", d_state)
        if d_state % 2:
            raise ValueError(f"d_state: expected an even number (conjugate pairs), got {d_state}")
        if not (0 < dt_min <= dt_max):
            raise ValueError(
                f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}"
            )
        H, N2 = d_model, d_state // 2
        self.d_state = d_state
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        re, im = s4d_init(init, N2)  # validates init
        self.init = S4DInit(init)
        self.bidirectional = bool(bidirectional)
        self.log_A_real = nn.Parameter(torch.log(-re).expand(H, N2).clone())
        self.A_imag = nn.Parameter(im.expand(H, N2).clone())
        self.C = nn.Parameter(torch.randn(H, N2, 2) * math.sqrt(0.5))  # complex, as (re, im)
        if self.bidirectional:  # the backward direction's C
            self.C_rev = nn.Parameter(torch.randn(H, N2, 2) * math.sqrt(0.5))
        self.D = nn.Parameter(torch.randn(H))
        # The S4 convention: the SSM's A and step train with a small learning rate and
        # no weight decay (read by rnnx.train.module.parameter_groups).
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            p._optim = {"lr": ssm_lr, "weight_decay": 0.0}
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(H, 2 * H)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 8}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, init={self.init.value}, "
            f"bidirectional={self.bidirectional}, mode={self.mode!r}"
        )

    # ------------------------------------------------------------------ SSM parameters

    def _A(self) -> Tensor:
        return torch.complex(-torch.exp(self.log_A_real), self.A_imag)

    def _C(self) -> Tensor:
        return torch.view_as_complex(self.C.contiguous())

    def _C_rev(self) -> Tensor:
        return torch.view_as_complex(self.C_rev.contiguous())

    def _dt(self, dt: Tensor | None) -> Tensor:
        """Δ of shape (H,), (B, 1, H) or (B, L, H)."""
        step = torch.exp(self.log_dt)
        return step if dt is None else dt.unsqueeze(-1) * step

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Complex zeros ``(batch_size, d_model, d_state // 2)``."""
        real = dtype if dtype is not None else self.state_dtype()
        cdtype = torch.complex128 if real == torch.float64 else torch.complex64
        return torch.zeros(
            batch_size,
            self.d_model,
            self.d_state // 2,
            device=device if device is not None else self._device(),
            dtype=cdtype,
        )

    # ------------------------------------------------------------------ forward

    def _forward(self, x, state, *, mode, lengths, dt):
        u = x.to(self.state_dtype())
        if self.bidirectional:
            u = _ssm.zero_padding(u, lengths)
        if mode == "conv":
            y, new_state = self._conv(u, state, lengths, dt)
        elif mode == "scan":
            y, new_state = self._scan(u, state, lengths, dt)
        else:
            y, new_state = self._recurrent(u, state, lengths, dt)
        y = y + u * self.D
        y = self.dropout(self.activation(y))
        y = F.glu(self.out_proj(y), dim=-1)
        return y.to(x.dtype), new_state

    def _recurrent(self, u, state, lengths, dt):
        A, C = self._A(), self._C()
        dA, dB = zoh_diagonal(A, self._dt(dt).unsqueeze(-1))  # (H, N2) or (B, 1|L, H, N2)
        B, L, H = u.shape
        dA = dA.expand(B, L, H, A.shape[-1])
        dB = dB.expand(B, L, H, A.shape[-1])
        s = state.to(A.dtype)
        ys = []
        for t, (a_t, b_t, u_t) in enumerate(zip(dA.unbind(1), dB.unbind(1), u.unbind(1))):
            s_new = a_t * s + b_t * u_t.unsqueeze(-1)
            if lengths is not None:
                s_new = torch.where((t < lengths).view(-1, 1, 1), s_new, s)
            s = s_new
            ys.append(2 * (s * C).sum(-1).real)
        y = torch.stack(ys, 1)
        if self.bidirectional:
            Cb, sb, back = self._C_rev(), torch.zeros_like(s), []
            for a_t, b_t, u_t in zip(dA.unbind(1)[::-1], dB.unbind(1)[::-1], u.unbind(1)[::-1]):
                sb = a_t * sb + b_t * u_t.unsqueeze(-1)
                back.append(2 * (sb * Cb).sum(-1).real)
            y = y + torch.stack(back[::-1], 1)
        return y, s

    def _scan(self, u, state, lengths, dt):
        A, C = self._A(), self._C()
        dA, dB = zoh_diagonal(A, self._dt(dt).unsqueeze(-1))  # (H,N2) | (B,1|L,H,N2)
        b = dB * u.unsqueeze(-1)  # (B, L, H, N2)
        a = dA
        if lengths is not None:
            valid = (torch.arange(u.shape[1], device=u.device) < lengths[:, None])[..., None, None]
            a = torch.where(valid, a, torch.ones((), dtype=a.dtype, device=a.device))
            b = torch.where(valid, b, torch.zeros((), dtype=b.dtype, device=b.device))
        h, last = scan(a, b, state.to(b.dtype))
        y = 2 * torch.einsum("blhn,hn->blh", h, C).real
        if self.bidirectional:
            hb, _ = scan(a, b, None, reverse=True)
            y = y + 2 * torch.einsum("blhn,hn->blh", hb, self._C_rev()).real
        return y, last

    def _conv(self, u, state, lengths, dt):
        if dt is not None and dt.shape[1] > 1:
            raise ValueError(
                "dt: mode 'conv' needs a time-invariant step (a scalar or one per sequence); "
                "a step per time step makes the system time-varying: use mode 'scan' or "
                "'recurrent' (layer.mode = 'scan')"
            )
        B, L, H = u.shape
        A, C = self._A(), self._C()
        step = self._dt(dt)  # (H,) or (1|B, 1, H)
        if step.dim() == 3:
            step = step[0, 0] if step.shape[0] == 1 else step[:, 0]  # (H,) or (B, H)
        dtA = step.unsqueeze(-1) * A  # (H, N2) or (B, H, N2)
        _, dB = zoh_diagonal(A, step.unsqueeze(-1))
        s0 = state.to(dtA.dtype)
        k = vandermonde_kernel(C * dB, dtA, L)  # (H, L) or (B, H, L)
        y = causal_conv_fft(u, k)
        if self.bidirectional:
            k_rev = vandermonde_kernel(self._C_rev() * dB, dtA, L)
            y = y + causal_conv_fft(u.flip(1), k_rev).flip(1)
        # the initial state's contribution: y_t += 2 Re(Σ_n C_n Ā_n^{t+1} s0_n); zero
        # (and skipped) when forward was called without a state
        if not self._fresh_state:
            y = y + vandermonde_kernel(C * s0, dtA, L, offset=1).transpose(1, 2)
        # final state: right-align each sequence so that its last valid step is at L-1
        n = torch.full((B,), L, device=u.device, dtype=torch.long) if lengths is None else lengths
        ut = u.transpose(1, 2)  # (B, H, L)
        if lengths is not None:
            shift = (L - n).view(B, 1, 1)
            idx = (torch.arange(L, device=u.device).view(1, 1, L) - shift) % L
            ut = torch.gather(ut, 2, idx.expand(B, H, L))
            ut = ut * (torch.arange(L, device=u.device).view(1, 1, L) >= shift)
        last = vandermonde_state(ut, dtA, dB)
        powers = torch.exp(dtA * n.view(B, 1, 1).to(dtA.real.dtype))  # Ā^{n_b}
        last = last + powers * s0
        return y, last
