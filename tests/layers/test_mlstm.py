"""The mLSTM block: options the generated matrix does not cover."""

from __future__ import annotations

import pytest
import torch

import rnnx.layers as layers
from tests.conftest import assert_close
from tests.layers.test_contract import inputs, random_state, run


@pytest.mark.parametrize("kwargs", [{"forget_gate": "exp"}, {"num_heads": 1, "chunk_size": 16}])
def test_chunk_matches_recurrent_with_options(kwargs):
    torch.manual_seed(0)
    cfg = {"num_heads": 2, "proj_factor": 1.0, "chunk_size": 4, **kwargs}
    layer = layers.get("mlstm")(6, **cfg).double().eval()
    with torch.no_grad():  # gates that depend on the input
        layer.igate.weight.normal_(0, 0.5)
        layer.fgate.weight.normal_(0, 0.5)
    x, s0 = inputs(), random_state(layer)
    y, s, g = run(layer, x, s0, "chunk")
    y_r, s_r, g_r = run(layer, x, s0, "recurrent")
    assert_close(y, y_r, rtol=1e-9)
    for key in s:
        assert_close(s[key], s_r[key], rtol=1e-9, what=key)
    for (n, a), (_, b) in zip(g, g_r):
        assert_close(a, b, rtol=1e-9, what=n)


def test_state_shapes_and_stabiliser():
    layer = layers.get("mlstm")(16)
    s = layer.init_state(3)
    assert s["C"].shape == (3, 1, 32, 32) and s["n"].shape == (3, 1, 32)
    assert s["m"].shape == (3, 1) and s["conv"].shape == (3, 3, 32)
    _, s = layer(torch.randn(3, 20, 16))
    assert torch.isfinite(s["m"]).all()
