"""ConvS5 (arXiv 2310.19694): a standalone frame loop written from the paper's equations
against both modes and every backend (outputs, final state, every gradient including the
initial state's), gradcheck, bf16 autocast under CUDA's complex rules, one scan call per
forward, and bad arguments. The generated matrix (tests/layers/test_contract.py) covers
the rest of the contract."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from rnnx.layers import ConvS5
from tests.conftest import assert_close, with_native_pairs
from tests.layers.test_autocast_complex import CudaComplexRules

f64 = torch.float64
# the module (rnnx.ops re-exports its function under the same name)
scan_module = importlib.import_module("rnnx.ops.scan")


def reference_conv_s5(layer: ConvS5, x: torch.Tensor, s0: torch.Tensor):
    """The layer written out frame by frame (zero-order hold, dt = 1):
    X_t = e^{ΔΛ} X_{t-1} + Λ^{-1}(e^{ΔΛ} - 1)(B̃ * U_t), Y_t = s Re(C̃ * X_t) + D U_t,
    then GELU and the per-pixel GLU projection. Only the parameters are the layer's."""
    Lam = torch.complex(-layer.log_A_real.exp(), layer.A_imag)
    A_bar = torch.exp(layer.log_dt.exp() * Lam)[:, None, None]
    in_scale = (A_bar - 1) / Lam[:, None, None]
    Bt, Ct = torch.view_as_complex(layer.B), torch.view_as_complex(layer.C)
    pb, pc = layer.kernel_b // 2, layer.kernel_c // 2
    s = 2.0 if layer.conj_sym else 1.0
    X, ys = s0, []
    for u in x.unbind(1):
        Bu = torch.complex(F.conv2d(u, Bt.real, padding=pb), F.conv2d(u, Bt.imag, padding=pb))
        X = A_bar * X + in_scale * Bu
        y = s * (F.conv2d(X.real, Ct.real, padding=pc) - F.conv2d(X.imag, Ct.imag, padding=pc))
        y = y + layer.D[:, None, None] * u
        proj = layer.output.proj
        z = F.linear(F.gelu(y).permute(0, 2, 3, 1), proj.weight, proj.bias)
        ys.append(F.glu(z, -1).permute(0, 3, 1, 2))
    return torch.stack(ys, 1), X


def _layer(seed: int = 0, **kw) -> ConvS5:
    torch.manual_seed(seed)
    return ConvS5(3, **{"d_state": 4, **kw}).to(f64).eval()


def _inputs(layer: ConvS5, batch: int = 2, T: int = 6, size=(5, 4)):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, T, layer.d_model, *size, generator=g, dtype=f64)
    s0 = torch.randn(batch, layer.n_stored, *size, generator=g, dtype=torch.complex128)
    return x, 0.3 * s0


def _run(fn, layer, x, s0):
    """Output, final state and the gradients of a random functional of both with
    respect to x, the initial state and every parameter."""
    x, s0 = x.clone().requires_grad_(), s0.clone().requires_grad_()
    y, s = fn(x, s0)
    g = torch.Generator().manual_seed(7)
    loss = (y * torch.randn(y.shape, generator=g, dtype=f64)).sum()
    loss = loss + (torch.view_as_real(s) * torch.randn((*s.shape, 2), generator=g, dtype=f64)).sum()
    params = list(layer.parameters())
    grads = torch.autograd.grad(loss, [x, s0, *params])
    names = ["x", "initial state", *(n for n, _ in layer.named_parameters())]
    return y, s, dict(zip(names, grads))


@pytest.mark.parametrize(
    ("mode", "backend"),
    with_native_pairs([("recurrent", "torch"), ("scan", "torch"), ("scan", "native")], "scan"),
)
@pytest.mark.parametrize(
    "kw",
    [{}, {"kernel_b": 1, "kernel_c": 5, "conj_sym": False, "blocks": 2}],
    ids=["default", "k1-k5-full"],
)
def test_matches_a_standalone_frame_loop(mode, backend, kw):
    layer = _layer(**kw)
    layer.mode, layer.backend = mode, backend
    x, s0 = _inputs(layer)
    y, s, g = _run(lambda x, s0: layer(x, s0), layer, x, s0)
    y_ref, s_ref, g_ref = _run(lambda x, s0: reference_conv_s5(layer, x, s0), layer, x, s0)
    assert_close(y, y_ref, rtol=1e-10, what="output")
    assert_close(s, s_ref, rtol=1e-10, what="final state")
    for name in g_ref:
        assert_close(g[name], g_ref[name], rtol=1e-10, what=f"gradient of {name}")


@pytest.mark.parametrize("mode", ["recurrent", "scan"])
def test_gradcheck(mode):
    """Every input, the initial state and every parameter, in float64 on a tiny case."""
    torch.manual_seed(0)
    layer = ConvS5(2, d_state=2, mode=mode).to(f64).eval()
    x, s0 = _inputs(layer, batch=1, T=3, size=(3, 2))
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone() for p in layer.parameters()]

    def f(x, s0, *ps):
        y, s = functional_call(layer, dict(zip(names, ps)), (x, s0))
        return y, torch.view_as_real(s)

    args = [t.requires_grad_() for t in (x, s0, *params)]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["recurrent", "scan"])
def test_trains_under_bf16_autocast_with_cuda_rules(mode):
    """Complex states stay complex64 and every gradient is finite under bf16 autocast,
    with CUDA's refusal of bfloat16 in complex ops enforced on the CPU."""
    torch.manual_seed(0)
    layer = ConvS5(4, d_state=4, mode=mode)
    x = torch.randn(2, 5, 4, 6, 5)
    with torch.no_grad():
        y32, s32 = layer(x)
    with CudaComplexRules(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, s = layer(x)
        loss = y.float().square().mean() + s.abs().mean()
    loss.backward()
    assert s.dtype == s32.dtype == torch.complex64
    assert y.dtype == torch.float32
    assert float((y.detach() - y32).norm() / y32.norm()) < 0.05  # bf16 projections, fp32 state
    assert_close(s, s32, rtol=1e-5, what="state (the SSM runs in float32)")
    grads = [p.grad for p in layer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("mode", "calls"), [("scan", 1), ("recurrent", 0)])
def test_scan_mode_is_one_scan_over_all_frames(monkeypatch, mode, calls):
    count = []
    real = scan_module.scan

    def counting(*args, **kwargs):
        count.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(scan_module, "scan", counting)
    layer = _layer(mode=mode)
    x, s0 = _inputs(layer, T=9)
    layer(x, s0)
    assert len(count) == calls
    if calls:
        assert count[0] == (2, 9, layer.n_stored, 5, 4)  # (B, T, P, H, W): time in one call


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_modes_agree_with_a_step_per_frame(discretization):
    layer = _layer(discretization=discretization)
    x, s0 = _inputs(layer)
    dt = 0.3 + torch.rand(2, 6, dtype=f64)
    with torch.no_grad():
        y1, s1 = layer(x, s0, dt=dt)
        with layer.using_mode("recurrent"):
            y2, s2 = layer(x, s0, dt=dt)
    assert_close(y1, y2, rtol=1e-10)
    assert_close(s1, s2, rtol=1e-10)


def test_state_shape_and_default_size():
    layer = ConvS5(3, d_state=8)
    assert layer.init_state(2, size=(5, 7)).shape == (2, 4, 5, 7)
    assert ConvS5(3, d_state=8, conj_sym=False).init_state(1, size=(2, 3)).shape == (1, 8, 2, 3)
    assert layer.init_state(2, size=(5, 7)).dtype == torch.complex64


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kernel_b": 2}, r"kernel_b: expected an odd int >= 1"),
        ({"kernel_c": 0}, r"kernel_c: expected an odd int >= 1"),
        ({"d_state": 7}, r"d_state: expected an even number"),
        ({"d_state": 8, "blocks": 3}, r"blocks: expected d_state / blocks to be an even integer"),
        ({"discretization": "foh"}, r"discretization: expected one of"),
        ({"dt_min": 0.2, "dt_max": 0.1}, r"dt_min, dt_max: expected 0 < dt_min <= dt_max"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ConvS5(4, **kw)
