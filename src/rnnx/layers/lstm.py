"""LSTM on the rnnx contract, a drop-in for torch.nn.LSTM (Hochreiter & Schmidhuber 1997).

    i, f, g, o = σ(W_i x + U_i h + b_i), σ(...), tanh(...), σ(...)
    c_t = f c_{t-1} + i g,    h_t = o tanh(c_t)

Weights use torch.nn.LSTM's names and layout (gate order i, f, g, o; ``weight_ih_l0``
``(4H, D)``, ``weight_hh_l0`` ``(4H, H)``, ``bias_ih_l0``, ``bias_hh_l0``, ``_reverse``
for the second direction), so ``LSTM.from_torch(m)`` / ``layer.to_torch()`` copy them
as they are. Stacking, bidirectional, heads, state layout and backends:
:mod:`rnnx.layers._classic`; the time loop: :mod:`rnnx.ops.rnn`.

State: ``(h, c)``, each ``(batch, num_layers * num_directions, hidden_size)``.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from rnnx.layers._classic import ClassicRNN
from rnnx.layers.base import register

__all__ = ["LSTM"]


@register("lstm")
class LSTM(ClassicRNN):
    """Long short-term memory layer (Hochreiter & Schmidhuber 1997), gates as torch.nn.LSTM.

    Arguments as :class:`~rnnx.layers._classic.ClassicRNN`: ``d_model``,
    ``hidden_size``, ``num_layers``, ``num_heads``, ``bias``, ``dropout``,
    ``bidirectional``, ``batch_first``, ``backend``, ``mode``. State ``(h, c)``, each
    ``(batch, num_layers * num_directions, hidden_size)``.
    """

    paper: ClassVar[str] = "Hochreiter & Schmidhuber 1997 (Neural Computation 9(8))"
    num_gates: ClassVar[int] = 4
    state_names: ClassVar[tuple[str, ...]] = ("h", "c")
    torch_class: ClassVar[type[nn.Module]] = nn.LSTM

    def cell(self) -> str:
        return "lstm"
