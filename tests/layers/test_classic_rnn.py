"""Elman, LSTM and GRU against torch.nn.RNN / LSTM / GRU with the same weights.

Outputs and final states agree (1e-5 in float32, 1e-12 in float64) for one and several
layers, one and two directions, batch_first either way, initial states and padded
batches (against torch's packed sequences), on both backends; gradients too. Plus the
features torch.nn has not: heads, and the rnnx state layout.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnx.layers import GRU, LSTM, Elman
from tests.conftest import assert_close, backends_here, with_native

PAIRS = [
    pytest.param(LSTM, nn.LSTM, {}, id="lstm"),
    pytest.param(GRU, nn.GRU, {}, id="gru"),
    pytest.param(Elman, nn.RNN, {}, id="elman-tanh"),
    pytest.param(Elman, nn.RNN, {"nonlinearity": "relu"}, id="elman-relu"),
]
CONFIGS = [  # num_layers, bidirectional, batch_first
    pytest.param(1, False, True, id="1-uni-bf"),
    pytest.param(2, True, True, id="2-bi-bf"),
    pytest.param(3, True, False, id="3-bi-tf"),
    pytest.param(2, False, False, id="2-uni-tf"),
]
IN, HID, B, T = 5, 7, 3, 11


def torch_pair(rcls, tcls, kw, num_layers, bidirectional, batch_first, dtype, seed=0):
    torch.manual_seed(seed)
    ref = tcls(IN, HID, num_layers=num_layers, bidirectional=bidirectional,
               batch_first=batch_first, **kw).to(dtype)  # fmt: skip
    return ref, rcls.from_torch(ref)


def random_hx(tcls, num_layers, directions, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(num_layers * directions, B, HID, generator=g, dtype=dtype)
    if tcls is nn.LSTM:
        return h0, torch.randn(num_layers * directions, B, HID, generator=g, dtype=dtype)
    return h0


def flat(s):
    return list(s) if isinstance(s, tuple) else [s]


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
@pytest.mark.parametrize(("num_layers", "bidirectional", "batch_first"), CONFIGS)
@pytest.mark.parametrize("backend", with_native(["native", "torch"], "rnn"))
def test_outputs_and_states_match_torch(
    rcls, tcls, kw, num_layers, bidirectional, batch_first, backend
):
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        ref, layer = torch_pair(rcls, tcls, kw, num_layers, bidirectional, batch_first, dtype)
        layer.backend = backend
        x = torch.randn((B, T, IN) if batch_first else (T, B, IN), dtype=dtype)
        hx = random_hx(tcls, num_layers, 2 if bidirectional else 1, dtype)
        y_ref, s_ref = ref(x, hx)
        y, s = layer(x, layer.state_from_torch(hx))
        assert_close(y, y_ref, rtol=rtol, what=f"{dtype} outputs")
        for a, b in zip(flat(layer.state_to_torch(s)), flat(s_ref)):
            assert_close(a, b, rtol=rtol, what=f"{dtype} final state")


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
def test_gradients_match_torch(rcls, tcls, kw):
    ref, layer = torch_pair(rcls, tcls, kw, 2, True, True, torch.float64)
    x = torch.randn(B, T, IN, dtype=torch.float64)
    hx = random_hx(tcls, 2, 2, torch.float64)
    w = torch.randn(B, T, 2 * HID, dtype=torch.float64)

    def grads(module, hx):
        xx = x.clone().requires_grad_()
        hx = tuple(h.clone().requires_grad_() for h in flat(hx))
        state = hx if tcls is nn.LSTM else hx[0]
        if module is layer:
            y, _ = module(xx, module.state_from_torch(state))
        else:
            y, _ = module(xx, state)
        params = list(module.parameters())
        return torch.autograd.grad((y * w).sum(), [xx, *hx, *params])

    for a, b in zip(grads(layer, hx), grads(ref, hx)):
        assert_close(a, b, rtol=1e-10, what="gradient")


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
def test_lengths_match_packed_sequences(rcls, tcls, kw):
    """Padded batches with lengths equal torch's packed sequences, both directions."""
    ref, layer = torch_pair(rcls, tcls, kw, 2, True, True, torch.float64)
    x = torch.randn(B, T, IN, dtype=torch.float64)
    lengths = torch.tensor([T, 4, 1])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    y_packed, s_ref = ref(packed)
    y_ref, _ = nn.utils.rnn.pad_packed_sequence(y_packed, batch_first=True, total_length=T)
    y, s = layer(x, lengths=lengths)
    assert_close(y, y_ref, rtol=1e-12, what="outputs (zero at padding)")
    for a, b in zip(flat(layer.state_to_torch(s)), flat(s_ref)):
        assert_close(a, b, rtol=1e-12, what="final state")


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
def test_weights_round_trip(rcls, tcls, kw):
    ref, layer = torch_pair(rcls, tcls, kw, 2, True, False, torch.float32)
    assert layer.batch_first is False and layer.d_output == 2 * HID
    assert list(layer.state_dict()) == list(ref.state_dict())
    back = layer.to_torch()
    assert type(back) is tcls and back.batch_first is False
    for (n1, a), (n2, b) in zip(back.state_dict().items(), ref.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    # a batch_first=False module's weights load into the default (batch-first) layer
    plain = rcls(IN, HID, num_layers=2, bidirectional=True, **kw)
    plain.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, IN)
    assert_close(plain(x)[0], ref(x.transpose(0, 1))[0].transpose(0, 1), rtol=1e-5)


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
def test_from_torch_rejects_the_wrong_module(rcls, tcls, kw):
    other = nn.GRU(3, 4) if tcls is not nn.GRU else nn.LSTM(3, 4)
    with pytest.raises(TypeError, match=r"module: .*from_torch expects a torch.nn"):
        rcls.from_torch(other)


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
def test_dropout_only_between_layers_and_in_training(rcls, tcls, kw):
    layer = rcls(IN, HID, num_layers=2, dropout=0.5, **kw)
    x = torch.randn(B, T, IN)
    layer.eval()
    y_eval, _ = layer(x)
    layer.train()
    y_train, _ = layer(x)
    assert not torch.allclose(y_train, y_eval)
    single = rcls(IN, HID, dropout=0.5, **kw).train()
    assert torch.equal(single(x)[0], single.eval()(x)[0]), "no dropout after the last layer"


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
def test_heads_are_a_block_diagonal_recurrence(rcls, tcls, kw):
    """num_heads=2 equals one head whose recurrent matrix is zero off the diagonal blocks."""
    H, heads = 8, 2
    torch.manual_seed(0)
    multi = rcls(IN, H, num_heads=heads, **kw).double()
    dense = rcls(IN, H, **kw).double()
    with torch.no_grad():
        for name, p in dense.named_parameters():
            q = getattr(multi, name)
            if name.startswith("weight_hh"):
                p.zero_()
                G, DH = p.shape[0] // H, H // heads
                for g in range(G):
                    for hd in range(heads):
                        rows = slice(g * H + hd * DH, g * H + (hd + 1) * DH)
                        p[rows, hd * DH : (hd + 1) * DH] = q[rows]
            else:
                p.copy_(q)
    x = torch.randn(B, T, IN, dtype=torch.float64)
    for backend in backends_here(["native", "torch"], "rnn"):
        multi.backend = dense.backend = backend
        y1, s1 = multi(x)
        y2, s2 = dense(x)
        assert_close(y1, y2, rtol=1e-12, what=f"{backend} outputs")
        for a, b in zip(flat(s1), flat(s2)):
            assert_close(a, b, rtol=1e-12, what=f"{backend} states")
    with pytest.raises(ValueError, match=r"num_heads: torch.nn has no block-diagonal"):
        multi.to_torch()


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
def test_bidirectional_layer_has_no_step(rcls, tcls, kw):
    layer = rcls(IN, HID, bidirectional=True, **kw)
    with pytest.raises(ValueError, match=r"step: .*bidirectional=True.* cannot run step by step"):
        layer.step(torch.randn(2, 1, IN))


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
def test_time_first_step_and_forward(rcls, tcls, kw):
    layer = rcls(IN, HID, num_layers=2, batch_first=False, **kw).double()
    x = torch.randn(T, B, IN, dtype=torch.float64)
    y, s = layer(x)
    y1, s1 = layer.step(x[:4])
    y2, s2 = layer.step(x[4:], s1)
    assert y.shape == (T, B, HID)
    assert_close(torch.cat([y1, y2], 0), y, rtol=1e-12, what="chunked time-first")
    for a, b in zip(flat(s2), flat(s)):
        assert_close(a, b, rtol=1e-12, what="state")


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
def test_bfloat16_inputs_keep_fp32_state(rcls, tcls, kw):
    layer = rcls(IN, HID, num_layers=2, **kw)
    x = torch.randn(B, T, IN)
    y, s = layer(x.bfloat16())
    y32, s32 = layer(x.bfloat16().float())
    assert y.dtype == torch.bfloat16 and all(t.dtype == torch.float32 for t in flat(s))
    assert_close(y.float(), y32, rtol=1e-2, what="bf16 output is the fp32 result rounded")
    for a, b in zip(flat(s), flat(s32)):
        assert torch.equal(a, b)


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match=r"num_heads: expected a divisor of hidden_size=6"):
        LSTM(6, num_heads=4)
    with pytest.raises(ValueError, match=r"dropout: expected a float in \[0, 1\], got 1.5"):
        GRU(6, dropout=1.5)
    with pytest.raises(ValueError, match=r"backend \(of LSTM\): expected one of"):
        LSTM(6, backend="cuda")
    with pytest.raises(ValueError, match=r"nonlinearity: expected one of \('tanh', 'relu'\)"):
        Elman(6, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"proj_size=2 .* is not supported"):
        LSTM.from_torch(nn.LSTM(4, 5, proj_size=2))


@pytest.mark.parametrize(("rcls", "tcls", "kw"), PAIRS)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_single_token_steps_equal_the_kernel(rcls, tcls, kw, num_layers):
    """One-token steps (torch's fused cells) agree with the native kernel's forward on
    outputs, states and gradients (parameters and initial state)."""
    torch.manual_seed(0)
    layer = rcls(IN, HID, num_layers=num_layers, **kw).double()
    x = torch.randn(B, T, IN, dtype=torch.float64)
    s0 = tuple(t.requires_grad_() for t in flat(layer.init_state(B, dtype=torch.float64)))
    s0_arg = s0 if len(s0) > 1 else s0[0]
    y_full, s_full = layer(x, s0_arg)
    assert layer._can_decode_with_torch_cells(x[:, :1], None, torch.float64)
    s, ys = s0_arg, []
    for xt in x.unbind(1):
        y, s = layer.step(xt.unsqueeze(1), s)
        ys.append(y)
    y_step = torch.cat(ys, 1)
    assert_close(y_step, y_full, rtol=1e-10, what="outputs")
    for a, b in zip(flat(s), flat(s_full)):
        assert_close(a, b, rtol=1e-10, what="final state")
    params = [*layer.parameters(), *s0]
    loss = lambda y, s: y.square().sum() + sum(t.sum() for t in flat(s))  # noqa: E731
    g_full = torch.autograd.grad(loss(y_full, s_full), params)
    g_step = torch.autograd.grad(loss(y_step, s), params)
    for a, b in zip(g_step, g_full):
        assert_close(a, b, rtol=1e-9, what="gradient")
