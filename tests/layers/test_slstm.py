"""sLSTM against a readable, unstabilised transcription of xLSTM (arXiv 2405.04517).

The layer runs the stabilised eqs. (8)-(17); the oracle below is eqs. (8)-(14) as
written (exp input gate, sigmoid forget gate, no stabiliser), which is exact in float64
for short sequences. The stabiliser must cancel in h, and the stabilised c, n must be the
unstabilised ones times exp(-m).
"""

from __future__ import annotations

import pytest
import torch

from rnnx.layers import sLSTM
from tests.conftest import assert_close, needs_native, with_native


def unstabilised_slstm(layer: sLSTM, x: torch.Tensor):
    """xLSTM eqs. (8)-(14), one layer, one direction, zero initial state."""
    H, NH = layer.hidden_size, layer.num_heads
    DH = H // NH
    W, R, b = layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_l0
    B, T, _ = x.shape
    h = c = n = torch.zeros(B, H, dtype=x.dtype)
    hs, cs, ns = [], [], []
    for t in range(T):
        rec = torch.zeros(B, 4 * H, dtype=x.dtype)
        for g in range(4):  # R h_{t-1}, one dense block per head
            for hd in range(NH):
                units = slice(g * H + hd * DH, g * H + (hd + 1) * DH)
                rec[:, units] = h[:, hd * DH : (hd + 1) * DH] @ R[units].t()
        pre = x[:, t] @ W.t() + rec + b
        i_raw, f_raw, z_raw, o_raw = pre.chunk(4, -1)
        i = torch.exp(i_raw)  # (12) exponential input gate
        f = torch.sigmoid(f_raw)  # (13) sigmoid forget gate
        z = torch.tanh(z_raw)  # (11)
        o = torch.sigmoid(o_raw)  # (14)
        c = f * c + i * z  # (8)
        n = f * n + i  # (9)
        h = o * c / n  # (10)
        hs.append(h)
        cs.append(c)
        ns.append(n)
    return torch.stack(hs, 1), c, n


@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("backend", with_native(["native", "torch"], "rnn"))
def test_matches_the_unstabilised_equations(heads, backend):
    torch.manual_seed(0)
    layer = sLSTM(6, 8, num_heads=heads, backend=backend).double()
    x = torch.randn(3, 12, 6, dtype=torch.float64)
    y_ref, c_ref, n_ref = unstabilised_slstm(layer, x)
    y, (_, c, n, m) = layer(x)
    assert_close(y, y_ref, rtol=1e-12, what="h")
    assert_close(c[:, 0], c_ref * torch.exp(-m[:, 0]), rtol=1e-12, what="c = c_unstab exp(-m)")
    assert_close(n[:, 0], n_ref * torch.exp(-m[:, 0]), rtol=1e-12, what="n = n_unstab exp(-m)")


@pytest.mark.parametrize("backend", with_native(["native", "torch"], "rnn"))
def test_stabiliser_keeps_large_input_gates_finite(backend):
    """exp(80) overflows float32; the stabilised cell does not."""
    layer = sLSTM(4, backend=backend)
    with torch.no_grad():
        layer.bias_l0[:4] = 80.0  # input-gate preactivations around 80
    y, state = layer(torch.randn(2, 50, 4))
    assert torch.isfinite(y).all() and all(torch.isfinite(s).all() for s in state)
    n, m = state[2], state[3]
    assert (n >= 1 - 1e-6).all(), "after a dominant input gate the normaliser is >= 1"
    assert (m > 70).all()


@needs_native("rnn")
def test_native_and_reference_agree_in_float32_with_heads():
    torch.manual_seed(1)
    layer = sLSTM(16, 32, num_heads=4, num_layers=2, bidirectional=True)
    x = torch.randn(4, 20, 16)
    y, s = layer(x)
    layer.backend = "torch"
    y_r, s_r = layer(x)
    assert_close(y, y_r, rtol=1e-5, what="outputs")
    for a, b in zip(s, s_r):
        assert_close(a, b, rtol=1e-5, what="states")


def test_initialisation_and_parameters():
    layer = sLSTM(6, 8, num_heads=2)
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["weight_ih_l0", "weight_hh_l0", "bias_l0"]
    assert layer.weight_hh_l0.shape == (32, 4)
    assert torch.equal(layer.bias_l0[8:16], torch.linspace(3.0, 6.0, 8))
    assert torch.all(layer.bias_l0[:8] == 0) and torch.all(layer.bias_l0[16:] == 0)
    with pytest.raises(TypeError, match=r"sLSTM has no torch.nn counterpart"):
        layer.to_torch()
