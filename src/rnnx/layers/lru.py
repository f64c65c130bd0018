"""LRU: the Linear Recurrent Unit, a complex diagonal recurrence with a stable
exponential parameterisation and normalised inputs.

"Resurrecting Recurrent Neural Networks for Long Sequences" (Orvieto, Smith, Gu,
Fernando, Gulcehre, Pascanu, De; ICML 2023, arXiv 2303.06349). One state of P
complex modes shared by the H features:

    x_k = diag(λ) x_{k-1} + γ ⊙ (B u_k),   y_k = Re(C x_k) + D u_k,
    λ = exp(-exp(ν) + i exp(θ)),            γ = exp(γ_log), initially sqrt(1 - |λ|^2),

with |λ| initialised uniformly on the ring [r_min, r_max] and the phase in
[0, max_phase]. γ keeps the state's variance independent of |λ| (the paper's
normalisation). The output goes through GELU and a position-wise GLU projection.

Modes: ``"scan"`` (:func:`rnnx.ops.scan`, native complex kernel on CPU; default) and
``"recurrent"`` (a loop over time: the reference and the decoding path).

Continuous time. The LRU is a discrete-time model; rnnx reads it as the zero-order-hold
discretisation, at the training step (dt = 1), of x' = a x + B_c u with
a = log λ = -exp(ν) + i exp(θ). A step dt then gives

    λ(dt) = exp(dt a),   B̄(dt) = γ B (exp(dt a) - 1) / (exp(a) - 1),

which is exactly the LRU at dt = 1 and, for an input held constant over a step, two
steps of dt = 1/2 equal one step of dt = 1.

State: complex ``(batch, d_state)`` (complex64, or complex128 for float64 parameters).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnx._checks import require_positive_int
from rnnx.layers import _ssm
from rnnx.layers.base import RecurrentLayer, State, register

__all__ = ["LRU"]


@register("lru")
class LRU(RecurrentLayer):
    """Linear Recurrent Unit (exp-parameterised diagonal λ, γ-normalised), arXiv 2303.06349.

    Args:
        d_model: features H of input and output.
        d_state: number P of complex modes.
        r_min, r_max: |λ| is initialised uniformly on the ring r_min <= |λ| <= r_max.
        max_phase: arg λ is initialised uniformly in [0, max_phase].
        dropout: dropout after the activation.
        ssm_lr: learning rate of ν, θ and γ (no weight decay).
        mode: ``"scan"`` (default) or ``"recurrent"``.
        backend: ``"auto"`` (default), ``"native"`` or ``"torch"``: the
            :func:`rnnx.ops.scan` implementation of mode ``"scan"``.
    """

    modes: ClassVar[tuple[str, ...]] = ("scan", "recurrent")
    default_mode: ClassVar[str] = "scan"
    reference_mode: ClassVar[str] = "recurrent"
    step_mode: ClassVar[str] = "recurrent"
    backends: ClassVar[tuple[str, ...]] = _ssm.SCAN_BACKENDS

    def native_available(self) -> bool:
        return _ssm.scan_native_available()

    continuous_time: ClassVar[bool] = True
    family: ClassVar[str] = "linear time-invariant SSM"
    paper: ClassVar[str] = "arXiv 2303.06349"

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 2 * math.pi,
        dropout: float = 0.0,
        ssm_lr: float = 1e-3,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        P = require_positive_int("d_state", d_state)
        if not (0.0 <= r_min < r_max <= 1.0):
            raise ValueError(
                f"r_min, r_max: expected 0 <= r_min < r_max <= 1, got {r_min}, {r_max}"
            )
        if not (0.0 < max_phase <= 2 * math.pi):
            raise ValueError(f"max_phase: expected a value in (0, 2π], got {max_phase}")
        H = d_model
        self.d_state = P
        u1, u2 = torch.rand(P, dtype=torch.float64), torch.rand(P, dtype=torch.float64)
        # |λ|^2 uniform on [r_min^2, r_max^2]; ν = -log|λ| > 0 (kept away from 0).
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        nu = nu.clamp(min=1e-6)
        theta = (max_phase * u2).clamp(min=1e-6)
        self.nu_log = nn.Parameter(torch.log(nu).float())
        self.theta_log = nn.Parameter(torch.log(theta).float())
        modulus = torch.exp(-nu)
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - modulus**2)).float())
        self.B = nn.Parameter(torch.randn(P, H, 2) / math.sqrt(2 * H))
        self.C = nn.Parameter(torch.randn(H, P, 2) / math.sqrt(P))
        self.D = nn.Parameter(torch.randn(H))
        _ssm.mark_ssm_parameters([self.nu_log, self.theta_log, self.gamma_log], ssm_lr)
        self.output = _ssm.GLUOutput(H, H, _ssm.require_probability("dropout", dropout))

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 4, "r_min": 0.5, "r_max": 0.95}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, mode={self.mode!r}"
            + self._backend_repr()
        )

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Complex zeros ``(batch_size, d_state)``."""
        real = dtype if dtype is not None else self.state_dtype()
        return torch.zeros(
            batch_size,
            self.d_state,
            device=device if device is not None else self._device(),
            dtype=_ssm.complex_dtype(real),
        )

    def log_lambda(self) -> Tensor:
        """a = log λ = -exp(ν) + i exp(θ), ``(P,)``."""
        return torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log))

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        u = x.to(self.state_dtype())
        a = self.log_lambda()
        gamma = torch.exp(self.gamma_log)
        if dt is None:
            dA, dB = torch.exp(a), gamma.to(a.dtype)
        else:
            dta = dt.unsqueeze(-1) * a  # (B, 1|L, P)
            dA = torch.exp(dta)
            dB = gamma * torch.expm1(dta) / torch.expm1(a)
        y, new_state = _ssm.diagonal_mimo(
            u,
            state,
            lengths,
            dA,
            dB,
            _ssm.as_complex(self.B),
            _ssm.as_complex(self.C),
            out_scale=1.0,
            mode=mode,
            backend=self.backend,
        )
        y = y + u * self.D
        return self.output(y).to(x.dtype), new_state
