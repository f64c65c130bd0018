"""LSTM on the rnnx contract (Hochreiter & Schmidhuber 1997; gates as in torch.nn.LSTM).

    i, f, g, o = σ(W_i x + U_i h + b_i), σ(...), tanh(...), σ(...)
    c_t = f c_{t-1} + i g,    h_t = o tanh(c_t)

Weights use torch.nn.LSTM's layout and names (gate order i, f, g, o; ``weight_ih_l0``
``(4H, D)``, ``weight_hh_l0`` ``(4H, H)``, ``bias_ih_l0``, ``bias_hh_l0``), so weights
move between the two without reshuffling.

Mode ``"sequential"``: the input projection for all time steps is one matrix product;
the recurrence is a loop over time (the reference, and the decoding path).

State: ``(h, c)``, each ``(batch, hidden_size)``. Output: h at every step,
``(batch, length, hidden_size)``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnx._checks import require_positive_int
from rnnx.layers.base import RecurrentLayer, register

__all__ = ["LSTM"]


@register("lstm")
class LSTM(RecurrentLayer):
    """Long short-term memory layer.

    Args:
        d_model: input features.
        hidden_size: state and output features (default: d_model).
        bias: whether to use the two bias vectors.
        mode: ``"sequential"``.
    """

    modes: ClassVar[tuple[str, ...]] = ("sequential",)
    default_mode: ClassVar[str] = "sequential"
    reference_mode: ClassVar[str] = "sequential"
    family: ClassVar[str] = "classic nonlinear RNN"
    paper: ClassVar[str] = "Hochreiter & Schmidhuber 1997"

    def __init__(
        self,
        d_model: int,
        hidden_size: int | None = None,
        *,
        bias: bool = True,
        mode: str | None = None,
    ) -> None:
        super().__init__(d_model, mode=mode)
        H = d_model if hidden_size is None else require_positive_int("hidden_size", hidden_size)
        self.hidden_size = H
        self.d_output = H
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * H, d_model))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * H, H))
        if bias:
            self.bias_ih_l0 = nn.Parameter(torch.empty(4 * H))
            self.bias_hh_l0 = nn.Parameter(torch.empty(4 * H))
        else:
            self.register_parameter("bias_ih_l0", None)
            self.register_parameter("bias_hh_l0", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight, as torch.nn.LSTM."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @classmethod
    def tiny_config(cls) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, hidden_size={self.hidden_size}, mode={self.mode!r}"

    def init_state(self, batch_size: int, *, device=None, dtype=None) -> tuple[Tensor, Tensor]:
        """``(h, c)``: zeros ``(batch_size, hidden_size)`` each."""
        kw = {
            "device": device if device is not None else self._device(),
            "dtype": dtype if dtype is not None else self.state_dtype(),
        }
        return (
            torch.zeros(batch_size, self.hidden_size, **kw),
            torch.zeros(batch_size, self.hidden_size, **kw),
        )

    def _forward(self, x, state, *, mode, lengths, dt):
        wdtype = self.state_dtype()
        h, c = (s.to(wdtype) for s in state)
        gx = torch.nn.functional.linear(x.to(wdtype), self.weight_ih_l0, self.bias_ih_l0)
        if self.bias_hh_l0 is not None:
            gx = gx + self.bias_hh_l0
        w_hh_t = self.weight_hh_l0.t()
        ys = []
        for t, gx_t in enumerate(gx.unbind(1)):
            gates = torch.addmm(gx_t, h, w_hh_t)
            i, f, g, o = gates.chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if lengths is not None:
                keep = (t < lengths).unsqueeze(-1)
                c_new = torch.where(keep, c_new, c)
                h_new = torch.where(keep, h_new, h)
            h, c = h_new, c_new
            ys.append(h)
        return torch.stack(ys, 1).to(x.dtype), (h, c)
