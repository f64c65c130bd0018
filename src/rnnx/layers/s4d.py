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

from typing import Any

import torch
from torch import Tensor, nn

from rnnx._checks import length_mask
from rnnx.layers import _ssm
from rnnx.layers.base import register
from rnnx.ops.conv import fft_conv, vandermonde_kernel, vandermonde_state
from rnnx.ops.scan import scan
from rnnx.ssm.discretize import zoh_diagonal
from rnnx.ssm.hippo import S4DInit, s4d_init

__all__ = ["S4D"]


@register("s4d")
class S4D(_ssm.ConvolutionalSSM):
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
        backend: ``"auto"`` (default), ``"native"`` or ``"torch"``: the
            :func:`rnnx.ops.scan` implementation of mode ``"scan"``.
    """

    paper = "arXiv 2206.11893"

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
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        _ssm.require_even("d_state", d_state)
        _ssm.check_dt_range(dt_min, dt_max)
        H, N2 = d_model, d_state // 2
        self.d_state = d_state
        self.log_dt = nn.Parameter(_ssm.log_uniform(H, dt_min, dt_max))
        re, im = s4d_init(init, N2)  # validates init
        self.init = S4DInit(init)
        self.bidirectional = bool(bidirectional)
        self.log_A_real = nn.Parameter(torch.log(-re).expand(H, N2).clone())
        self.A_imag = nn.Parameter(im.expand(H, N2).clone())
        _ssm.mark_ssm_parameters([self.log_dt, self.log_A_real, self.A_imag], ssm_lr)
        self.C = _ssm.complex_param(H, N2)
        if self.bidirectional:  # the backward direction's C
            self.C_rev = _ssm.complex_param(H, N2)
        self.D = nn.Parameter(torch.randn(H))
        self.output = _ssm.GLUOutput(H, H, _ssm.require_probability("dropout", dropout))

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 8}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, init={self.init.value}, "
            f"bidirectional={self.bidirectional}, mode={self.mode!r}" + self._backend_repr()
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before S4D used the shared output block name its
        # projection ``out_proj``
        for name in ("weight", "bias"):
            old = f"{prefix}out_proj.{name}"
            if old in state_dict:
                state_dict[f"{prefix}output.proj.{name}"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ SSM parameters

    def _A(self) -> Tensor:
        return torch.complex(-torch.exp(self.log_A_real), self.A_imag)

    def _C(self) -> Tensor:
        return _ssm.as_complex(self.C)

    def _C_rev(self) -> Tensor:
        return _ssm.as_complex(self.C_rev)

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

    # ------------------------------------------------------------------ forward

    def _mix(self, y: Tensor, u: Tensor) -> Tensor:
        return self.output(y + u * self.D)

    def _recurrent(self, u, state, lengths, dt):
        A, C = self._A(), self._C()
        dA, dB = zoh_diagonal(A, _ssm.steps(self.log_dt, dt).unsqueeze(-1))  # (H,N2)|(B,1|L,H,N2)
        B, L, H = u.shape
        dA = dA.expand(B, L, H, A.shape[-1])
        dB = dB.expand(B, L, H, A.shape[-1])
        mask = length_mask(lengths, L)
        s = state.to(A.dtype)
        ys = []
        for t, (a_t, b_t, u_t) in enumerate(zip(dA.unbind(1), dB.unbind(1), u.unbind(1))):
            s_new = a_t * s + b_t * u_t.unsqueeze(-1)
            if mask is not None:
                s_new = torch.where(mask[:, t].view(-1, 1, 1), s_new, s)
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
        dA, dB = zoh_diagonal(A, _ssm.steps(self.log_dt, dt).unsqueeze(-1))  # (H,N2)|(B,1|L,H,N2)
        b = dB * u.unsqueeze(-1)  # (B, L, H, N2)
        a = dA
        mask = length_mask(lengths, u.shape[1])
        if mask is not None:  # padded steps: the identity map
            valid = mask[..., None, None]
            a = torch.where(valid, a, torch.ones((), dtype=a.dtype, device=a.device))
            b = torch.where(valid, b, torch.zeros((), dtype=b.dtype, device=b.device))
        h, last = scan(a, b, state.to(b.dtype), backend=self.backend)
        y = 2 * torch.einsum("blhn,hn->blh", h, C).real
        if self.bidirectional:
            hb, _ = scan(a, b, None, reverse=True, backend=self.backend)
            y = y + 2 * torch.einsum("blhn,hn->blh", hb, self._C_rev()).real
        return y, last

    def _conv(self, u, state, lengths, dt):
        B, L, _ = u.shape
        A, C = self._A(), self._C()
        step = _ssm.time_invariant_steps(self.log_dt, dt)  # (H,) or (B, H)
        dtA = step.unsqueeze(-1) * A  # (H, N2) or (B, H, N2)
        _, dB = zoh_diagonal(A, step.unsqueeze(-1))
        s0 = state.to(dtA.dtype)
        if self.bidirectional:  # both kernels from one set of exponentials
            coef = torch.stack([C * dB, self._C_rev() * dB])  # (2, H, N2) or (2, B, H, N2)
            k, k_rev = vandermonde_kernel(coef, dtA, L).unbind(0)
        else:
            k, k_rev = vandermonde_kernel(C * dB, dtA, L), None  # (H, L) or (B, H, L)
        y = fft_conv(u, k, k_rev, dim=1)  # (B, L, H)
        # the initial state's contribution: y_t += 2 Re(Σ_n C_n Ā_n^{t+1} s0_n); zero
        # (and skipped) when forward was called without a state
        if not self._fresh_state:
            y = y + vandermonde_kernel(C * s0, dtA, L, offset=1).transpose(1, 2)
        # final state: right-align each sequence so that its last valid step is at L-1
        n = torch.full((B,), L, device=u.device, dtype=torch.long) if lengths is None else lengths
        last = vandermonde_state(_ssm.right_align(u.transpose(1, 2), lengths), dtA, dB)
        powers = torch.exp(dtA * n.view(B, 1, 1).to(dtA.real.dtype))  # Ā^{n_b}
        last = last + powers * s0
        return y, last
