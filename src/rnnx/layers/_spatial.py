"""The contract of layers over space and time: a recurrence over frames of feature maps.

.. code-block:: python

    layer = rnnx.layers.get("conv_lstm")(d_model=C)    # C channels in and out
    state = layer.init_state(batch_size, size=(H, W))  # per-pixel state, fp32
    y, state = layer(x)                                # x: (B, T, C, H, W)
    y, state = layer(x, state=state)                   # continue where it stopped
    y, state = layer.step(x_frames, state)             # (B, T>=1, C, H, W)
    y, state = layer(x, lengths=lengths)               # (B,): frames per sequence

A spatial layer is a :class:`~rnnx.layers.base.RecurrentLayer` whose time step is a
feature map instead of a vector: everything the contract promises (modes that agree with
the recurrent reference, ``step`` equal to ``forward``, chunked continuation at any
split in outputs, final state and every gradient, ``lengths``, fp32 states, clear
errors) holds unchanged, and the same generated test matrix checks it. Only the shapes
differ: ``x`` is ``(batch, time, d_model, height, width)`` and each state tensor has the
frame's ``(height, width)`` as its last two dimensions, so :meth:`init_state` takes
``size=(height, width)`` (``forward`` takes it from ``x`` when ``state`` is None). The
layers use "same" padding: any frame size runs, and one layer serves every resolution.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from rnnx._checks import check_video_input
from rnnx._tree import State
from rnnx.layers.base import RecurrentLayer

__all__ = ["SpatialLayer", "check_size"]


def check_size(size: object) -> tuple[int, int]:
    """``size`` as ``(height, width)`` of positive ints, or a clear error."""
    if size is None:
        raise TypeError(
            "size: a spatial layer's init_state needs the frame size, "
            "init_state(batch_size, size=(height, width))"
        )
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ValueError(f"size: expected (height, width), two ints >= 1, got {size!r}")
    return int(size[0]), int(size[1])


class SpatialLayer(RecurrentLayer):
    """Base class of the layers over ``(batch, time, d_model, height, width)``.

    A subclass implements :meth:`init_state` (with ``size``) and
    :meth:`~rnnx.layers.base.RecurrentLayer._forward`, whose ``x`` is 5-D.
    """

    kind: ClassVar[str] = "spatial"

    def init_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        size: tuple[int, int] | None = None,
    ) -> State:
        """The state before the first frame, for ``batch_size`` sequences of frames of
        ``size=(height, width)`` (required). Each layer documents the shapes."""
        raise NotImplementedError

    def _check_input(self, arg: str, x: object) -> Tensor:
        return check_video_input(arg, x, self.d_model)

    def _state_kwargs(self, x: Tensor) -> dict[str, Any]:
        return {"size": (int(x.shape[3]), int(x.shape[4]))}
