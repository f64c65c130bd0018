"""sLSTM, the scalar-memory LSTM of xLSTM (Beck et al. 2024, arXiv 2405.04517), on the
rnnx contract, with head-wise block-diagonal recurrence (FlashRNN, arXiv 2412.07752).

Equations (8)-(17) of the paper, with the sigmoid forget gate taken in log space and the
stabiliser state m that keeps the exponential input gate finite:

    z̃, ĩ, f̃, õ = W x_t + R h_{t-1} + b          (R block-diagonal over heads)
    m_t = max(log σ(f̃) + m_{t-1}, ĩ)             (15)
    i'_t = exp(ĩ - m_t),  f'_t = exp(log σ(f̃) + m_{t-1} - m_t)     (16, 17)
    c_t = f'_t c_{t-1} + i'_t tanh(z̃)            (8)
    n_t = f'_t n_{t-1} + i'_t                     (9)
    h_t = σ(õ) c_t / n_t                           (10)

The stabiliser cancels in h_t (c and n are both scaled by exp(-m_t)), so the output is
that of the unstabilised eqs. (8)-(14). The initial state is zeros, m_0 = 0 included: the
reference implementations switch to m_1 = ĩ when "n is all zeros", a test on values that
rnnx does not make; the two agree in h up to rounding.

Gate order of the parameters: i, f, z, o (FlashRNN's). ``weight_ih_l{k}`` ``(4H, D)``,
``weight_hh_l{k}`` ``(4H, H // num_heads)`` (row g*H + j: unit j's weights over its head),
one bias ``bias_l{k}`` ``(4H,)``. This is the recurrent cell only: xLSTM's block around
it (causal convolution, group norm, gated MLP) belongs to the model.

Modes (the same function; the test matrix checks it):

* ``"recurrent"``: the step-by-step recurrence (the native fused CPU kernel, or the
  PyTorch loop elsewhere; see ``backend``). The reference, and :meth:`step`'s mode.
* ``"newton"``: all steps at once by quasi-Newton iterations, each one block scan
  (:mod:`rnnx.ops.slstm_newton`: coordinates (h, c/n, log n + m), the Jacobian's part
  inside each unit, exact adjoint in backward). Converges to the recurrent result within
  ``newton_tol`` in about 10 iterations (float32) at the default initialisation; falls
  back to the step-by-step loop with a warning after ``newton_max_iter`` iterations.
  What the last forward did: :attr:`sLSTM.newton_info`.

``mode="auto"`` (the default) runs ``"recurrent"`` on the CPU, where the fused kernel
walks time faster than any parallel solve, and ``"newton"`` on CUDA, where a Python loop
over time costs a kernel launch per step and gate (:attr:`auto_modes`; ``layer.mode`` says
what runs).

State: ``(h, c, n, m)``, each ``(batch, num_layers * num_directions, hidden_size)``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnx.layers._classic import ClassicRNN
from rnnx.layers.base import State, register
from rnnx.ops.newton import NewtonInfo
from rnnx.ops.slstm_newton import slstm_newton

__all__ = ["sLSTM"]


@register("slstm")
class sLSTM(ClassicRNN):  # the paper's name
    """sLSTM of xLSTM (arXiv 2405.04517): exponential input gate, normaliser and
    stabiliser states, block-diagonal recurrence over ``num_heads`` heads.

    Arguments as :class:`~rnnx.layers._classic.ClassicRNN` (``num_heads`` default 1;
    xLSTM uses 4). Initialisation: weights U(-1/sqrt(H), 1/sqrt(H)); biases zero but the
    forget gate's, linspace(3, 6) over the units (xLSTM's "linspace" forget-bias option,
    so that the cell starts by remembering). State ``(h, c, n, m)``, each
    ``(batch, num_layers * num_directions, hidden_size)``.
    """

    paper: ClassVar[str] = "arXiv 2405.04517"
    modes: ClassVar[tuple[str, ...]] = ("recurrent", "newton")
    auto_modes: ClassVar[dict[str, str]] = {"cuda": "newton"}
    #: no "cudnn": torch's fused RNN op has no sLSTM cell
    backends: ClassVar[tuple[str, ...]] = ("auto", "native", "torch")
    num_gates: ClassVar[int] = 4
    state_names: ClassVar[tuple[str, ...]] = ("h", "c", "n", "m")
    two_biases: ClassVar[bool] = False
    #: Newton stops at this tolerance in float64: 1e-10 on the residual; the test matrix
    #: compares with the recurrent mode at 1e-7.
    equivalence_rtol: ClassVar[float] = 1e-7

    def __init__(self, d_model: int, hidden_size: int | None = None, **kw: Any) -> None:
        super().__init__(d_model, hidden_size, **kw)
        #: Newton settings of mode "newton" (see :func:`rnnx.ops.slstm_newton.slstm_newton`).
        self.newton_max_iter: int = 32
        self.newton_tol: float | None = None
        self.newton_fallback: bool = True
        #: What the last forward in mode "newton" did, one entry per layer and direction
        #: (None for a one-step sequence).
        self.newton_info: list[NewtonInfo | None] = []

    def cell(self) -> str:
        return "slstm"

    def _sequence(self, mode, gx, weight_hh, state, *, bias_hn, lengths, reverse):
        if mode != "newton":
            return super()._sequence(
                mode, gx, weight_hh, state, bias_hn=bias_hn, lengths=lengths, reverse=reverse
            )
        y, final, info = slstm_newton(
            gx,
            weight_hh,
            state,
            lengths=lengths,
            reverse=reverse,
            num_heads=self.num_heads,
            max_iter=self.newton_max_iter,
            tol=self.newton_tol,
            fallback=self.newton_fallback,
            backend=self.backend,
        )
        self.newton_info.append(info)
        return y, final

    def _forward(
        self,
        x: Tensor,
        state: State,
        *,
        mode: str,
        lengths: Tensor | None,
        dt: Tensor | None,
    ) -> tuple[Tensor, State]:
        if mode == "newton":
            self.newton_info = []
        return super()._forward(x, state, mode=mode, lengths=lengths, dt=dt)

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        H = self.hidden_size
        for name, p in self.named_parameters():
            if name.startswith("bias"):
                with torch.no_grad():
                    p.zero_()
                    p[H : 2 * H] = torch.linspace(3.0, 6.0, H)
            else:
                nn.init.uniform_(p, -bound, bound)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {"num_heads": 2}
