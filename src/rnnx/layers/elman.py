"""The Elman RNN on the rnnx contract, a drop-in for torch.nn.RNN (Elman 1990).

    h_t = act(W x_t + b_ih + U h_{t-1} + b_hh),   act = tanh or relu

Weights use torch.nn.RNN's names and layout, so ``Elman.from_torch(m)`` /
``layer.to_torch()`` copy them as they are. Stacking, bidirectional, heads, state
layout and backends: :mod:`rnnx.layers._classic`.

State: h, ``(batch, num_layers * num_directions, hidden_size)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from rnnx._checks import require_choice
from rnnx.layers._classic import ClassicRNN
from rnnx.layers.base import register

__all__ = ["Elman"]


@register("elman")
class Elman(ClassicRNN):
    """Elman recurrent network (Elman 1990, "Finding structure in time").

    Args:
        nonlinearity: ``"tanh"`` (default) or ``"relu"``, as torch.nn.RNN.
        others: as :class:`~rnnx.layers._classic.ClassicRNN`.

    State h, ``(batch, num_layers * num_directions, hidden_size)``.
    """

    paper: ClassVar[str] = "Elman 1990 (Cognitive Science 14(2))"
    num_gates: ClassVar[int] = 1
    torch_class: ClassVar[type[nn.Module]] = nn.RNN

    def __init__(
        self, d_model: int, hidden_size: int | None = None, *, nonlinearity: str = "tanh", **kw: Any
    ) -> None:
        self.nonlinearity = require_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        super().__init__(d_model, hidden_size, **kw)

    def cell(self) -> str:
        return f"elman_{self.nonlinearity}"

    def extra_repr(self) -> str:
        extra = "" if self.nonlinearity == "tanh" else f", nonlinearity={self.nonlinearity!r}"
        return super().extra_repr() + extra

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"nonlinearity": self.nonlinearity}

    @classmethod
    def _from_torch_kwargs(cls, module: nn.Module) -> dict[str, Any]:
        return {"nonlinearity": module.nonlinearity}
