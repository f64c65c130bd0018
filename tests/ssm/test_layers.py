"""The linear SSM family (LSSL, S4, S4D, S5, LRU) beyond the generated matrix: modes agree
to 1e-10 in float64 and 1e-4 in float32, the continuous-time view (resampling, per-sequence
and held-input steps), and the bidirectional option of the convolutional layers."""

from __future__ import annotations

import contextlib
import io
import math

import pytest
import torch

import rnnx.layers as layers
from rnnx.cli import main as cli_main
from tests.conftest import assert_close

FAMILY = ["lssl", "s4", "s4d", "s5", "lru"]
CONV = ["lssl", "s4", "s4d"]
H = 5


def _modes(names):
    return [pytest.param(n, m, id=f"{n}-{m}") for n in names for m in layers.get(n).modes]


def _other_modes(names):
    return [
        pytest.param(n, m, id=f"{n}-{m}")
        for n in names
        for m in layers.get(n).modes
        if m != layers.get(n).reference_mode
    ]


def make(name, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    cls = layers.get(name)
    cfg = {"d_state": 8, **kw} if name != "lru" else {"d_state": 8, "r_min": 0.5, **kw}
    return cls(H, **cfg).to(dtype).eval()


def _state_like(layer, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = layer.init_state(batch)
    noise = torch.randn(s.shape, generator=g, dtype=torch.float64)
    if s.is_complex():
        noise = torch.complex(noise, torch.randn(s.shape, generator=g, dtype=torch.float64))
    return (0.3 * noise).to(s.dtype)


def _run(layer, mode, x, s0, **kw):
    x = x.clone().requires_grad_()
    s0 = s0.clone().requires_grad_()
    with layer.using_mode(mode):
        y, s = layer(x, s0, **kw)
    loss = (y * torch.cos(torch.arange(y.numel(), dtype=y.dtype)).view_as(y)).sum()
    loss = loss + (s.abs() ** 2).sum()
    params = [p for p in layer.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [x, s0, *params])
    return y.detach(), s.detach(), grads


@pytest.mark.parametrize(("name", "mode"), _other_modes(FAMILY))
def test_modes_agree_to_1e10_in_float64(name, mode):
    """Outputs, final states and all gradients (initial state included) at 1e-10, with a
    random initial state, a different step per sequence and ragged lengths."""
    layer = make(name)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 41, H, generator=g, dtype=torch.float64)
    s0 = _state_like(layer, 3)
    kw = {
        "dt": torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64),
        "lengths": torch.tensor([41, 30, 7]),
    }
    y_ref, s_ref, g_ref = _run(layer, layer.reference_mode, x, s0, **kw)
    y, s, gr = _run(layer, mode, x, s0, **kw)
    assert_close(y, y_ref, rtol=1e-10, what=f"{name} {mode} output")
    assert_close(s, s_ref, rtol=1e-10, what=f"{name} {mode} state")
    for i, (a, b) in enumerate(zip(gr, g_ref)):
        assert_close(a, b, rtol=1e-10, what=f"{name} {mode} gradient {i}")


@pytest.mark.parametrize("name", FAMILY)
def test_modes_agree_to_1e4_in_float32(name):
    """Default state size (64), float32: every mode within 1e-4 (relative to the output's
    scale) of the recurrent reference, outputs, final state and input gradient."""
    torch.manual_seed(0)
    layer = layers.get(name)(8).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 200, 8, generator=g)
    s0 = _state_like(layer, 2).to(layer.init_state(1).dtype)
    y_ref, s_ref, g_ref = _run(layer, layer.reference_mode, x, s0)
    for mode in layer.modes:
        if mode == layer.reference_mode:
            continue
        y, s, gr = _run(layer, mode, x, s0)
        assert_close(y, y_ref, rtol=1e-4, what=f"{name} {mode} output")
        assert_close(s, s_ref, rtol=1e-4, what=f"{name} {mode} state")
        assert_close(gr[0], g_ref[0], rtol=1e-4, what=f"{name} {mode} input gradient")


# ----------------------------------------------------------------------------- continuous time

#: Slow dynamics (relative to the signal): a learned step of 0.01 (LRU: |λ| near 1,
#: small phases). The continuous-time claim holds for any layer whose dynamics are
#: resolved by the coarse sampling.
SLOW = {
    "lssl": {"d_state": 16, "dt_min": 0.01, "dt_max": 0.01},
    "s4": {"d_state": 16, "dt_min": 0.01, "dt_max": 0.01},
    "s4d": {"d_state": 16, "dt_min": 0.01, "dt_max": 0.01},
    "s5": {"d_state": 16, "dt_min": 0.01, "dt_max": 0.01},
    "lru": {"d_state": 16, "r_min": 0.95, "r_max": 0.99, "max_phase": 0.1},
}
#: Relative (max-norm) tolerance of the resampling test.
RESAMPLE_RTOL = 3e-2


def _smooth_signal(t):
    """H smooth channels, periods of about 60 to 100 samples at the coarse rate."""
    return torch.stack(
        [
            torch.sin(2 * math.pi * t / 97 + h) + 0.5 * torch.cos(math.pi * t * (h + 1) / 61)
            for h in range(H)
        ],
        -1,
    )


@pytest.mark.parametrize(("name", "mode"), _modes(FAMILY))
def test_twice_as_dense_with_half_the_step_gives_the_same_output(name, mode):
    """The same smooth signal sampled at t = 1, 2, …, L (dt = 1) and at t = 0.5, 1, …, L
    (dt = 0.5): at the shared times the outputs agree within RESAMPLE_RTOL = 3e-2 of the
    output's scale; ignoring the rate (dt omitted on the dense signal) is off by > 0.2."""
    torch.manual_seed(0)
    layer = layers.get(name)(H, **SLOW[name]).double().eval()
    layer.mode = mode
    L = 400
    coarse = _smooth_signal(torch.arange(1, L + 1, dtype=torch.float64))[None]
    dense = _smooth_signal(torch.arange(1, 2 * L + 1, dtype=torch.float64) / 2)[None]
    with torch.no_grad():
        y1, _ = layer(coarse)
        y2, _ = layer(dense, dt=0.5)
        y_wrong, _ = layer(dense)
    scale = float(y1.abs().max())
    err = float((y2[:, 1::2] - y1).abs().max()) / scale
    err_wrong = float((y_wrong[:, 1::2] - y1).abs().max()) / scale
    assert err < RESAMPLE_RTOL, err
    assert err_wrong > 0.2, err_wrong


@pytest.mark.parametrize(("name", "mode"), _modes(["lssl", "s4d", "s5", "lru"]))
def test_zero_order_hold_is_exact_for_a_held_input(name, mode):
    """Under zero-order hold, two steps of dt/2 on an input held over the step are one step
    of dt: every output at the coarse times and the final state agree to 1e-10."""
    kw = {"discretization": "zoh"} if name == "lssl" else {}
    layer = make(name, **kw)
    layer.mode = mode
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 17, H, generator=g, dtype=torch.float64)
    dt = torch.tensor([0.7, 1.3], dtype=torch.float64)
    with torch.no_grad():
        y1, s1 = layer(x, dt=dt)
        y2, s2 = layer(x.repeat_interleave(2, dim=1), dt=dt / 2)
    assert_close(y2[:, 1::2], y1, rtol=1e-10, what="outputs")
    assert_close(s2, s1, rtol=1e-10, what="final state")


@pytest.mark.parametrize(("name", "mode"), _modes(FAMILY))
def test_a_step_per_sequence_equals_each_sequence_alone(name, mode):
    layer = make(name)
    layer.mode = mode
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 19, H, generator=g, dtype=torch.float64)
    dt = torch.tensor([0.3, 1.0, 2.5], dtype=torch.float64)
    with torch.no_grad():
        y, s = layer(x, dt=dt)
        for b in range(3):
            yb, sb = layer(x[b : b + 1], dt=float(dt[b]))
            assert_close(y[b : b + 1], yb, rtol=1e-12, what=f"sequence {b}")
            assert_close(s[b : b + 1], sb, rtol=1e-12, what=f"state {b}")


# ----------------------------------------------------------------------------- bidirectional


def _zero_forward_direction(name, layer):
    """Zero the forward direction's output weights, leaving only the backward one."""
    with torch.no_grad():
        if name == "s4d":
            layer.C.zero_()
        else:
            layer.C[:, : layer.channels].zero_()


def _unidirectional_twin(name, bi):
    """A causal layer with the same A, B, Δ, D and output block, and C := C_rev."""
    uni = make(name)
    state = {k: v for k, v in bi.state_dict().items() if k not in ("C", "C_rev")}
    uni.load_state_dict(state, strict=False)
    with torch.no_grad():
        uni.C.copy_(bi.C_rev if name == "s4d" else bi.C[:, bi.channels :])
    return uni


@pytest.mark.parametrize(("name", "mode"), _modes(CONV))
def test_bidirectional_backward_direction_is_a_reversed_causal_run(name, mode):
    bi = make(name, bidirectional=True)
    bi.mode = mode
    _zero_forward_direction(name, bi)
    uni = _unidirectional_twin(name, bi)
    uni.mode = "scan"
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 23, H, generator=g, dtype=torch.float64)
    with torch.no_grad():
        y_bi, _ = bi(x)
        y_rev, _ = uni(x.flip(1))
    assert_close(y_bi, y_rev.flip(1), rtol=1e-10)


@pytest.mark.parametrize(("name", "mode"), _other_modes(CONV))
def test_bidirectional_modes_agree_with_lengths_and_dt(name, mode):
    layer = make(name, bidirectional=True)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 23, H, generator=g, dtype=torch.float64)
    lengths = torch.tensor([23, 9, 1])
    garbage = x.clone()
    garbage[1, 9:] = 1e3
    garbage[2, 1:] = -7.0
    dt = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    with torch.no_grad():
        y, _s = layer(garbage, lengths=lengths, dt=dt)
        with layer.using_mode(layer.reference_mode):
            y_ref, s_ref = layer(x, lengths=lengths, dt=dt)
        layer.mode = mode
        y_mode, s_mode = layer(x, lengths=lengths, dt=dt)
        for b, n in enumerate(lengths.tolist()):
            yb, _ = layer(x[b : b + 1, :n], dt=float(dt[b]))
            assert_close(y[b, :n], yb[0], rtol=1e-10, what=f"sequence {b} alone")
    assert_close(y_mode, y_ref, rtol=1e-10, what=f"{mode} vs reference")
    assert_close(s_mode, s_ref, rtol=1e-10, what=f"{mode} state vs reference")
    assert_close(y, y_mode, rtol=1e-10, what="padding ignored")


@pytest.mark.parametrize("name", CONV)
def test_bidirectional_is_non_causal_and_refuses_state_and_step(name):
    layer = make(name, bidirectional=True)
    x = torch.randn(1, 12, H, dtype=torch.float64)
    x2 = x.clone()
    x2[0, -1] += 1.0
    with torch.no_grad():
        y1, s = layer(x)
        y2, _ = layer(x2)
    assert float((y1[0, 0] - y2[0, 0]).abs().max()) > 1e-6, "the future reaches the past"
    with pytest.raises(ValueError, match=r"state: .*bidirectional=True\) is non-causal"):
        layer(x, s)
    with pytest.raises(RuntimeError, match=r"step: .*non-causal.*decoding is not defined"):
        layer.step(x[:, :1])


def test_rnnx_list_shows_the_family_with_modes():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["list"]) == 0
    text = out.getvalue()
    for name, modes in [
        ("lssl", "conv*, scan, recurrent"),
        ("s4", "conv*, scan, recurrent"),
        ("s4d", "conv*, scan, recurrent"),
        ("s5", "scan*, recurrent"),
        ("lru", "scan*, recurrent"),
    ]:
        line = next(ln for ln in text.splitlines() if ln.split()[0] == name)
        assert modes in line and "yes" in line and "arXiv" in line
