"""ConvLSTM (arXiv 1506.04214) and ConvGRU (arXiv 1511.06432) against a per-pixel oracle.

The oracle below is written apart from the layers: at every frame and every pixel it
takes the k x k neighbourhood of the zero-padded [x_t, h_{t-1}] and multiplies it by each
gate's own weight matrix (sliced out of the layer's fused weights), following the papers'
equations one gate at a time. The layers instead run one convolution over all frames for
the input part and one (ConvGRU: two) convolutions per frame for the hidden part. The
generated matrix (tests/layers/test_contract.py) covers step vs forward, chunked
continuation, ``lengths``, dtypes and torch.compile for the registered configuration.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import rnnx.layers as layers
from rnnx.layers import ConvGRU, ConvLSTM
from tests.conftest import assert_close

B, T, C = 2, 3, 2
SIZE = (4, 3)


def conv_same_per_pixel(z: Tensor, weight: Tensor) -> Tensor:
    """A 'same' cross-correlation ``(B, in, H, W) -> (B, out, H, W)``, one pixel at a time:
    out[:, o, i, j] = sum over (channel, a, b) of weight[o, channel, a, b] *
    z_padded[:, channel, i + a, j + b], zero padding of kernel_size // 2."""
    k = weight.shape[-1]
    p = k // 2
    zp = torch.nn.functional.pad(z, (p, p, p, p))
    w = weight.reshape(weight.shape[0], -1)
    rows = []
    for i in range(z.shape[2]):
        row = []
        for j in range(z.shape[3]):
            patch = zp[:, :, i : i + k, j : j + k].reshape(z.shape[0], -1)
            row.append(patch @ w.t())
        rows.append(torch.stack(row, -1))
    return torch.stack(rows, -2)


def project(layer, hs: Tensor) -> Tensor:
    """The output 1x1 convolution as a per-pixel matrix product, or the identity."""
    if layer.output is None:
        return hs
    w = layer.output.weight[:, :, 0, 0]
    return torch.einsum("oc,btchw->btohw", w, hs) + layer.output.bias.view(1, 1, -1, 1, 1)


def conv_lstm_reference(layer: ConvLSTM, x: Tensor, h: Tensor, c: Tensor):
    """Shi et al. (2015) eq. (3), one gate and one pixel at a time."""
    S = layer.d_state
    w = {g: layer.weight[n * S : (n + 1) * S] for n, g in enumerate("ifgo")}
    b = {g: layer.bias[n * S : (n + 1) * S].view(1, S, 1, 1) for n, g in enumerate("ifgo")}
    peep = layer.peephole_weight
    w_ci, w_cf, w_co = (peep[0], peep[1], peep[2]) if peep is not None else (0.0, 0.0, 0.0)
    hs = []
    for t in range(x.shape[1]):
        xh = torch.cat([x[:, t], h], 1)
        pre = {g: conv_same_per_pixel(xh, w[g]) + b[g] for g in "ifgo"}
        i_gate = torch.sigmoid(pre["i"] + w_ci * c)
        f_gate = torch.sigmoid(pre["f"] + w_cf * c)
        c = f_gate * c + i_gate * torch.tanh(pre["g"])
        o_gate = torch.sigmoid(pre["o"] + w_co * c)
        h = o_gate * torch.tanh(c)
        hs.append(h)
    return project(layer, torch.stack(hs, 1)), (h, c)


def conv_gru_reference(layer: ConvGRU, x: Tensor, h: Tensor):
    """Ballas et al. (2015), Section 3, one gate and one pixel at a time."""
    S = layer.d_state
    w_z, w_r = layer.gate_weight[:S], layer.gate_weight[S:]
    b_z, b_r = layer.gate_bias[:S].view(1, S, 1, 1), layer.gate_bias[S:].view(1, S, 1, 1)
    w_xn, w_hn = layer.candidate_x_weight, layer.candidate_h_weight
    b_n = layer.candidate_bias.view(1, S, 1, 1)
    hs = []
    for t in range(x.shape[1]):
        xh = torch.cat([x[:, t], h], 1)
        z = torch.sigmoid(conv_same_per_pixel(xh, w_z) + b_z)
        r = torch.sigmoid(conv_same_per_pixel(xh, w_r) + b_r)
        n = torch.tanh(conv_same_per_pixel(x[:, t], w_xn) + conv_same_per_pixel(r * h, w_hn) + b_n)
        h = (1 - z) * h + z * n
        hs.append(h)
    return project(layer, torch.stack(hs, 1)), h


def _randomise(layer) -> None:
    """Nonzero peephole weights and biases: their zero start would hide their terms."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "peephole" in name or "bias" in name:
                p.normal_(0, 0.5)


def _grads(layer, y, state, wrt):
    g = torch.Generator().manual_seed(7)
    states = state if isinstance(state, tuple) else (state,)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (y, *states))
    return torch.autograd.grad(loss, [*wrt, *layer.parameters()])


# (d_state, kernel_size, peephole): identity output (d_state == C) and a projection;
# kernel sizes 1, 3, 5 (5 is wider than the frame's width 3).
LSTM_CASES = [(C, 3, False), (3, 1, False), (3, 5, True), (C, 3, True)]
GRU_CASES = [(C, 3), (3, 1), (3, 5)]


@pytest.mark.parametrize(("d_state", "k", "peephole"), LSTM_CASES)
def test_conv_lstm_matches_per_pixel_reference(d_state, k, peephole):
    torch.manual_seed(0)
    kw = {"peephole": True, "frame_size": SIZE} if peephole else {}
    layer = ConvLSTM(C, d_state, kernel_size=k, **kw).double()
    _randomise(layer)
    x = torch.randn(B, T, C, *SIZE, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, d_state, *SIZE, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(B, d_state, *SIZE, dtype=torch.float64, requires_grad=True)
    y, (h, c) = layer(x, (h0, c0))
    y_ref, (h_ref, c_ref) = conv_lstm_reference(layer, x, h0, c0)
    assert_close(y, y_ref, rtol=1e-12, what="y")
    assert_close(h, h_ref, rtol=1e-12, what="final h")
    assert_close(c, c_ref, rtol=1e-12, what="final c")
    got = _grads(layer, y, (h, c), [x, h0, c0])
    want = _grads(layer, y_ref, (h_ref, c_ref), [x, h0, c0])
    names = ["x", "h0", "c0", *(n for n, _ in layer.named_parameters())]
    for name, a, b in zip(names, got, want, strict=True):
        assert_close(a, b, rtol=1e-11, what=f"gradient of {name}")


@pytest.mark.parametrize(("d_state", "k"), GRU_CASES)
def test_conv_gru_matches_per_pixel_reference(d_state, k):
    torch.manual_seed(0)
    layer = ConvGRU(C, d_state, kernel_size=k).double()
    _randomise(layer)
    x = torch.randn(B, T, C, *SIZE, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, d_state, *SIZE, dtype=torch.float64, requires_grad=True)
    y, h = layer(x, h0)
    y_ref, h_ref = conv_gru_reference(layer, x, h0)
    assert_close(y, y_ref, rtol=1e-12, what="y")
    assert_close(h, h_ref, rtol=1e-12, what="final h")
    got = _grads(layer, y, h, [x, h0])
    want = _grads(layer, y_ref, h_ref, [x, h0])
    names = ["x", "h0", *(n for n, _ in layer.named_parameters())]
    for name, a, b in zip(names, got, want, strict=True):
        assert_close(a, b, rtol=1e-11, what=f"gradient of {name}")


def test_conv_lstm_with_1x1_kernel_is_torch_lstm_per_pixel():
    """kernel_size=1 makes every pixel an independent torch.nn.LSTM (same gate order)."""
    torch.manual_seed(1)
    layer = ConvLSTM(C, 3, kernel_size=1).double()
    ref = torch.nn.LSTM(C, 3, batch_first=True).double()
    with torch.no_grad():
        ref.weight_ih_l0.copy_(layer.weight[:, :C, 0, 0])
        ref.weight_hh_l0.copy_(layer.weight[:, C:, 0, 0])
        ref.bias_ih_l0.copy_(layer.bias)
        ref.bias_hh_l0.zero_()
    x = torch.randn(B, T, C, *SIZE, dtype=torch.float64)
    _, (h, c) = layer(x)
    pixels = x.permute(0, 3, 4, 1, 2).reshape(-1, T, C)  # (B*H*W, T, C)
    _, (h_ref, c_ref) = ref(pixels)

    def as_map(s: Tensor) -> Tensor:  # (1, B*H*W, 3) -> (B, 3, H, W)
        return s[0].reshape(B, *SIZE, 3).permute(0, 3, 1, 2)

    assert_close(h, as_map(h_ref), rtol=1e-12, what="h")
    assert_close(c, as_map(c_ref), rtol=1e-12, what="c")


@pytest.mark.parametrize("name", ["conv_lstm", "conv_lstm_peephole", "conv_gru"])
def test_gradcheck_float64(name):
    """torch.autograd.gradcheck over the input, the initial state and every parameter."""
    torch.manual_seed(2)
    if name == "conv_lstm_peephole":
        layer = ConvLSTM(1, 2, peephole=True, frame_size=(3, 2))
    else:
        layer = layers.get(name)(1, 2)
    layer = layer.double()
    _randomise(layer)
    x = torch.randn(1, 2, 1, 3, 2, dtype=torch.float64)
    state = tuple(
        torch.randn_like(s)
        for s in torch.utils._pytree.tree_leaves(layer.init_state(1, size=(3, 2)))
    )
    pnames = [n for n, _ in layer.named_parameters()]

    def fn(x, *rest):
        n_state = len(state)
        s = rest[:n_state] if n_state > 1 else rest[0]
        params = dict(zip(pnames, rest[n_state:], strict=True))
        y, s_new = torch.func.functional_call(layer, params, (x, s))
        return (y, *torch.utils._pytree.tree_leaves(s_new))

    inputs = [x, *state, *(p.detach() for p in layer.parameters())]
    inputs = [t.clone().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


def test_identity_output_when_d_state_equals_d_model():
    for cls in (ConvLSTM, ConvGRU):
        layer = cls(3)
        assert layer.d_state == 3 and layer.output is None
        x = torch.randn(2, 4, 3, 5, 6)
        y, state = layer(x)
        h = state[0] if isinstance(state, tuple) else state
        torch.testing.assert_close(y[:, -1], h, rtol=0, atol=0)
        wide = cls(3, 5)
        assert isinstance(wide.output, torch.nn.Conv2d) and wide.output.kernel_size == (1, 1)
        assert wide(x)[0].shape == x.shape


def test_forget_gate_bias_starts_at_one():
    layer = ConvLSTM(2, 3)
    torch.testing.assert_close(layer.bias[3:6], torch.ones(3))
    assert torch.all(layer.bias[:3] == 0) and torch.all(layer.bias[6:] == 0)


@pytest.mark.parametrize("name", ["conv_lstm", "conv_gru"])
def test_bf16_autocast_keeps_fp32_state(name):
    torch.manual_seed(3)
    layer = layers.get(name)(4, 6)
    x = torch.randn(2, 5, 4, 6, 5)
    y32, _ = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, s = layer(x)
    for a in torch.utils._pytree.tree_leaves(s):
        assert a.dtype == torch.float32
    assert y.dtype == x.dtype
    err = (y - y32).norm() / y32.norm()
    assert err < 0.05, f"relative error {err:.3g} under bf16 autocast"
    y.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


def test_peephole_step_equals_forward():
    """The matrix runs the registered configuration (no peephole); this is the peephole's."""
    torch.manual_seed(4)
    layer = ConvLSTM(2, 3, peephole=True, frame_size=SIZE).double()
    _randomise(layer)
    x = torch.randn(B, 5, 2, *SIZE, dtype=torch.float64)
    y, s = layer(x)
    state, ys = None, []
    for t in range(5):
        yt, state = layer.step(x[:, t : t + 1], state)
        ys.append(yt)
    assert_close(torch.cat(ys, 1), y, rtol=1e-12, what="step outputs")
    for a, b in zip(state, s, strict=True):
        assert_close(a, b, rtol=1e-12, what="step state")


def test_peephole_needs_its_frame_size():
    with pytest.raises(ValueError, match="frame_size"):
        ConvLSTM(2, peephole=True)
    with pytest.raises(ValueError, match="frame_size"):
        ConvLSTM(2, frame_size=(4, 4))
    with pytest.raises(ValueError, match=r"frame_size: expected \(height, width\)"):
        ConvLSTM(2, peephole=True, frame_size=(4, 0))
    layer = ConvLSTM(2, peephole=True, frame_size=(4, 3))
    assert layer.peephole_weight is not None and layer.peephole_weight.shape == (3, 2, 4, 3)
    with pytest.raises(ValueError, match=r"size: .*\(4, 3\).*\(5, 3\)"):
        layer(torch.randn(1, 2, 2, 5, 3))


@pytest.mark.parametrize("cls", [ConvLSTM, ConvGRU])
@pytest.mark.parametrize("k", [0, -1, 2, 4, 3.0, True, "3"])
def test_bad_kernel_size(cls, k):
    with pytest.raises(ValueError, match="kernel_size: expected an odd int >= 1"):
        cls(4, kernel_size=k)


def test_any_odd_kernel_and_frame_size_keep_the_shape():
    for k in (1, 3, 7):
        for size in ((1, 1), (6, 2)):
            x = torch.randn(1, 2, 3, *size)
            for cls in (ConvLSTM, ConvGRU):
                y, _ = cls(3, 2, kernel_size=k)(x)
                assert y.shape == x.shape
