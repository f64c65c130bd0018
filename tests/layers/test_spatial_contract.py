"""The spatial contract's mechanics (:class:`rnnx.layers.SpatialLayer`), on a layer defined
here and not registered: shapes, ``size``, errors, ``lengths`` over frames. The registered
spatial layers get the generated matrix of tests/layers/test_contract.py."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import rnnx.layers as layers
from rnnx.layers._spatial import SpatialLayer, check_size


class PixelEMA(SpatialLayer):
    """h_t = a * h_{t-1} + x_t per pixel and channel; y_t = h_t (test-only)."""

    modes = ("recurrent",)
    default_mode = reference_mode = "recurrent"
    paper = "none"

    def __init__(self, d_model: int, **kw) -> None:
        super().__init__(d_model, **kw)
        self.a = torch.nn.Parameter(torch.full((d_model, 1, 1), 0.5))

    def init_state(self, batch_size, *, device=None, dtype=None, size=None):
        h, w = check_size(size)
        return torch.zeros(
            batch_size,
            self.d_model,
            h,
            w,
            device=device or self.a.device,
            dtype=dtype or self.state_dtype(),
        )

    def _forward(
        self, x: Tensor, state, *, mode: str, lengths: Tensor | None, dt: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        h, ys = state, []
        for t, xt in enumerate(x.unbind(1)):
            new = self.a * h + xt
            if lengths is not None:
                new = torch.where((t < lengths).view(-1, 1, 1, 1), new, h)
            h = new
            ys.append(h)
        return torch.stack(ys, 1).to(x.dtype), h


def test_names_by_kind():
    assert set(layers.names("sequence")) | set(layers.names("spatial")) == set(layers.names())
    assert not set(layers.names("sequence")) & set(layers.names("spatial"))
    with pytest.raises(ValueError, match="kind"):
        layers.names("video")


def test_forward_takes_the_frame_size_from_x():
    layer = PixelEMA(3)
    x = torch.randn(2, 4, 3, 5, 7)
    y, h = layer(x)
    assert y.shape == x.shape and h.shape == (2, 3, 5, 7)
    y2, _ = layer(x[:, 2:], state=layer(x[:, :2])[1])
    torch.testing.assert_close(y2, y[:, 2:])


def test_init_state_needs_size():
    with pytest.raises(TypeError, match=r"size=\(height, width\)"):
        PixelEMA(3).init_state(2)
    for bad in [(0, 3), (3,), "3x3", (2.0, 3)]:
        with pytest.raises(ValueError, match="size: expected"):
            PixelEMA(3).init_state(2, size=bad)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 4, 3, 5), "expected a 5-D tensor"),
        ((2, 4, 2, 5, 5), "channel dimension"),
        ((2, 0, 3, 5, 5), ">= 1 frames"),
        ((2, 4, 3, 0, 5), "height and width"),
    ],
)
def test_bad_input_names_the_shape(shape, match):
    with pytest.raises(ValueError, match=match):
        PixelEMA(3)(torch.randn(*shape))


def test_state_of_another_frame_size_is_refused():
    layer = PixelEMA(3)
    state = layer.init_state(2, size=(4, 4))
    with pytest.raises(ValueError, match=r"size=\(5, 6\)"):
        layer(torch.randn(2, 3, 3, 5, 6), state)


def test_lengths_mask_frames():
    layer = PixelEMA(3)
    x = torch.randn(2, 6, 3, 4, 4)
    y, h = layer(x, lengths=torch.tensor([6, 2]))
    assert torch.all(y[1, 2:] == 0)
    y1, h1 = layer(x[1:, :2])
    torch.testing.assert_close(h[1:], h1)
    torch.testing.assert_close(y[1:, :2], y1)
