"""LSTM against torch.nn.LSTM with the same weights."""

from __future__ import annotations

import torch

from rnnx.layers import LSTM
from tests.conftest import assert_close


def test_matches_torch_nn_lstm():
    ref = torch.nn.LSTM(5, 7, batch_first=True).double()
    layer = LSTM(5, hidden_size=7).double()
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    h0 = torch.randn(3, 7, dtype=torch.float64)
    c0 = torch.randn(3, 7, dtype=torch.float64)
    y_ref, (h_ref, c_ref) = ref(x, (h0[None], c0[None]))
    y, (h, c) = layer(x, (h0, c0))
    assert_close(y, y_ref, rtol=1e-12)
    assert_close(h, h_ref[0], rtol=1e-12)
    assert_close(c, c_ref[0], rtol=1e-12)


def test_without_bias():
    layer = LSTM(4, bias=False)
    assert layer.bias_ih_l0 is None and len(list(layer.parameters())) == 2
    y, _ = layer(torch.randn(2, 3, 4))
    assert y.shape == (2, 3, 4)
