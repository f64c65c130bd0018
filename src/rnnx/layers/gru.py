"""GRU on the rnnx contract, a drop-in for torch.nn.GRU (Cho et al. 2014, arXiv 1406.1078).

    r = σ(W_r x + b_ir + U_r h + b_hr),   z = σ(W_z x + b_iz + U_z h + b_hz)
    n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)),   h_t = (1 - z) n + z h_{t-1}

Weights use torch.nn.GRU's names and layout (gate order r, z, n), so
``GRU.from_torch(m)`` / ``layer.to_torch()`` copy them as they are. Stacking,
bidirectional, heads, state layout and backends: :mod:`rnnx.layers._classic`.

State: h, ``(batch, num_layers * num_directions, hidden_size)``.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from rnnx.layers._classic import ClassicRNN
from rnnx.layers.base import register

__all__ = ["GRU"]


@register("gru")
class GRU(ClassicRNN):
    """Gated recurrent unit (Cho et al. 2014, arXiv 1406.1078), gates as torch.nn.GRU.

    Arguments as :class:`~rnnx.layers._classic.ClassicRNN`. State h,
    ``(batch, num_layers * num_directions, hidden_size)``.
    """

    paper: ClassVar[str] = "arXiv 1406.1078"
    num_gates: ClassVar[int] = 3
    torch_class: ClassVar[type[nn.Module]] = nn.GRU

    def cell(self) -> str:
        return "gru"
