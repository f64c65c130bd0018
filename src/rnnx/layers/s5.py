"""S5: the simplified state-space layer, one MIMO diagonal SSM run by a parallel scan.

"Simplified State Space Layers for Sequence Modeling" (Smith, Warrington, Linderman;
ICLR 2023, arXiv 2208.04933). Unlike S4/S4D (H independent single-input SSMs), S5 has
one state of P complex modes shared by all H features:

    x'(t) = Λ x(t) + B̃ u(t),   y(t) = Re(C̃ x(t)) + D u(t),   B̃ (P, H), C̃ (H, P),

with Λ the eigenvalues of HiPPO-N (the normal part of HiPPO-LegS, :func:`rnnx.ssm.hippo.nplr`)
in ``blocks`` diagonal blocks, B̃ = V^* B and C̃ = C V for random B, C, and a trainable
step per mode, discretised by zero-order hold (default) or the bilinear transform.
With ``conj_sym=True`` (default) only one of each conjugate pair of modes is stored and
y = 2 Re(C̃ x). The output goes through GELU and a position-wise GLU projection.

Modes (all compute the same function; the test matrix checks it):

* ``"scan"``: :func:`rnnx.ops.scan` over the complex diagonal (native CPU kernel), the
  parallel-scan view of the paper;
* ``"recurrent"``: a Python loop over time (the reference and the decoding path).

Continuous time: ``dt`` multiplies every mode's step (a scalar, per sequence, or per
time step: the paper's irregular-sampling setting).

State: complex ``(batch, d_state // 2)`` with ``conj_sym`` (else ``(batch, d_state)``);
complex64, or complex128 for float64 parameters.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnx._checks import require_positive_int
from rnnx.layers import _ssm
from rnnx.layers.base import RecurrentLayer, State, register
from rnnx.ssm.discretize import Discretization, as_discretization, discretize_diagonal

__all__ = ["S5"]


@register("s5")
class S5(RecurrentLayer):
    """Simplified state-space layer (MIMO, diagonalised HiPPO-N, scan), arXiv 2208.04933.

    Args:
        d_model: features H of input and output.
        d_state: number P of complex modes of the (shared) state; even.
        blocks: number J of HiPPO-N blocks in the initialisation (P/J even).
        conj_sym: store one of each conjugate pair (P/2 modes, y = 2 Re(C̃ x)).
        discretization: ``"zoh"`` (default) or ``"bilinear"``.
        dt_min, dt_max: the initial steps Δ (one per mode) are log-uniform in
            [dt_min, dt_max].
        dropout: dropout after the activation.
        ssm_lr: learning rate of Λ, B̃ and Δ (no weight decay), as in S5.
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
    paper: ClassVar[str] = "arXiv 2208.04933"

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        *,
        blocks: int = 1,
        conj_sym: bool = True,
        discretization: Discretization | str = Discretization.ZOH,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dropout: float = 0.0,
        ssm_lr: float = 1e-3,
        mode: str | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(d_model, mode=mode, backend=backend)
        P = _ssm.require_even("d_state", d_state)
        J = require_positive_int("blocks", blocks)
        _ssm.check_dt_range(dt_min, dt_max)
        H = d_model
        self.d_state, self.blocks = P, J
        self.conj_sym = bool(conj_sym)
        self.discretization = as_discretization(discretization)
        Lambda, V = _ssm.hippo_n_diagonal(P, J, self.conj_sym)  # (P_s,), (P, P_s)
        Ps = Lambda.shape[0]
        self.log_A_real = nn.Parameter(torch.log(-Lambda.real).float())
        self.A_imag = nn.Parameter(Lambda.imag.float())
        # B ~ lecun normal (P, H); B̃ = V^* B.  C ~ normal (H, P) / sqrt(P); C̃ = C V.
        B = torch.randn(P, H, dtype=torch.float64) / math.sqrt(H)
        C = torch.randn(H, P, dtype=torch.float64) / math.sqrt(P)
        Bt = V.conj().T @ B.to(V.dtype)
        Ct = C.to(V.dtype) @ V
        self.B = nn.Parameter(torch.view_as_real(Bt.to(torch.complex64)).clone())
        self.C = nn.Parameter(torch.view_as_real(Ct.to(torch.complex64)).clone())
        self.D = nn.Parameter(torch.randn(H))
        self.log_dt = nn.Parameter(_ssm.log_uniform(Ps, dt_min, dt_max))
        _ssm.mark_ssm_parameters([self.log_A_real, self.A_imag, self.B, self.log_dt], ssm_lr)
        self.output = _ssm.GLUOutput(H, H, _ssm.require_probability("dropout", dropout))

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"d_state": 8, "blocks": 2}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, blocks={self.blocks}, "
            f"conj_sym={self.conj_sym}, discretization={self.discretization.value}, "
            f"mode={self.mode!r}" + self._backend_repr()
        )

    @property
    def n_stored(self) -> int:
        """Complex modes held in the state (P/2 with conjugate symmetry, else P)."""
        return self.log_A_real.shape[0]

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> Tensor:
        """Complex zeros ``(batch_size, d_state // 2)`` (``d_state`` without conj_sym)."""
        real = dtype if dtype is not None else self.state_dtype()
        return torch.zeros(
            batch_size,
            self.n_stored,
            device=device if device is not None else self._device(),
            dtype=_ssm.complex_dtype(real),
        )

    def ssm(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(Λ (P_s,), B̃ (P_s, H), C̃ (H, P_s))``, complex."""
        Lambda = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        return Lambda, _ssm.as_complex(self.B), _ssm.as_complex(self.C)

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
        Lambda, B, C = self.ssm()
        step = _ssm.steps(self.log_dt, dt)  # (P_s,) or (B, 1|L, P_s)
        dA, dB = discretize_diagonal(Lambda, step, self.discretization)
        y, new_state = _ssm.diagonal_mimo(
            u,
            state,
            lengths,
            dA,
            dB,
            B,
            C,
            out_scale=2.0 if self.conj_sym else 1.0,
            mode=mode,
            backend=self.backend,
        )
        y = y + u * self.D
        return self.output(y).to(x.dtype), new_state
