"""LSTM specifics: torch.nn.LSTM / LSTMCell agreement, state layout, no-bias variant."""

from __future__ import annotations

import torch

from rnnx.layers import LSTM
from tests.conftest import assert_close


def test_matches_torch_nn_lstm_via_load_state_dict():
    ref = torch.nn.LSTM(5, 7, batch_first=True).double()
    layer = LSTM(5, hidden_size=7).double()
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(3, 11, 5, dtype=torch.float64)
    h0 = torch.randn(3, 1, 7, dtype=torch.float64)
    c0 = torch.randn(3, 1, 7, dtype=torch.float64)
    y_ref, (h_ref, c_ref) = ref(x, (h0.transpose(0, 1), c0.transpose(0, 1)))
    y, (h, c) = layer(x, (h0, c0))
    assert_close(y, y_ref, rtol=1e-12)
    assert_close(h, h_ref.transpose(0, 1), rtol=1e-12)
    assert_close(c, c_ref.transpose(0, 1), rtol=1e-12)


def test_state_layout_is_batch_first_torch_order():
    """Entry k * num_directions + d of dim 1 is layer k, direction d (torch's index)."""
    layer = LSTM(4, 6, num_layers=3, bidirectional=True)
    h, c = layer.init_state(5)
    assert h.shape == c.shape == (5, 6, 6)
    ref = layer.to_torch()
    x = torch.randn(5, 9, 4)
    _, (h_ref, _) = ref(x)
    _, (h, _) = layer(x)
    assert_close(layer.state_to_torch(h), h_ref, rtol=1e-5, what="h_n in torch layout")
    assert torch.equal(layer.state_from_torch(layer.state_to_torch(h)), h)


def test_step_matches_lstm_cell_decoding():
    cell = torch.nn.LSTMCell(6, 6).double()
    layer = LSTM(6).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").copy_(getattr(cell, name))
    x = torch.randn(1, 5, 6, dtype=torch.float64)
    hc = (torch.zeros(1, 6, dtype=torch.float64), torch.zeros(1, 6, dtype=torch.float64))
    state = layer.init_state(1)
    for t in range(5):
        hc = cell(x[:, t], hc)
        y, state = layer.step(x[:, t : t + 1], state)
        assert_close(y[:, 0], hc[0], rtol=1e-12, what=f"step {t}")
    assert_close(state[1][:, 0], hc[1], rtol=1e-12, what="c")


def test_without_bias():
    layer = LSTM(4, bias=False)
    assert layer.bias_ih_l0 is None and len(list(layer.parameters())) == 2
    y, _ = layer(torch.randn(2, 3, 4))
    assert y.shape == (2, 3, 4)
    ref = layer.to_torch()
    x = torch.randn(2, 3, 4)
    assert_close(layer(x)[0], ref(x)[0], rtol=1e-5)
