"""Device-dependent choices, tested without the device: ``mode="auto"`` and backends.

What a layer runs on CUDA is decided by rules that take the device as an argument
(:meth:`RecurrentLayer.resolve_mode`, :meth:`ClassicRNN.resolved_backend`), so the rules
are checked here on a CPU-only machine; ``scripts/gpu_check.py`` runs the layers on a GPU.
The ``"cudnn"`` backend (torch's fused RNN op) runs on the CPU too (torch's CPU kernel of
the same op), which is how its outputs, final states and every gradient are compared
with the reference loop below.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import pytest
import torch

import rnnx.layers as layers
from rnnx._tree import leaves
from rnnx.layers import GRU, LSTM, Elman, ParaGRU, ParaLSTM, sLSTM
from tests.conftest import assert_close

AUTO = [name for name in layers.names("sequence") if layers.get(name).auto_modes]


def test_layers_with_auto_modes():
    # The layers whose best algorithm differs between the CPU and CUDA.
    assert {"paragru", "paralstm", "slstm", "mamba"} <= set(AUTO)


@pytest.mark.parametrize("name", AUTO)
def test_auto_resolves_per_device_type(name):
    cls = layers.get(name)
    layer = cls(6, **cls.tiny_config())
    assert layer.mode_setting == "auto"
    assert layer.mode == cls.default_mode == cls.resolve_mode("cpu")
    for device, mode in cls.auto_modes.items():
        assert cls.resolve_mode(device) == mode
        assert cls.resolve_mode(f"{device}:1") == mode
    assert cls.resolve_mode("meta") == cls.default_mode


@pytest.mark.parametrize(
    ("cls", "cuda_mode"),
    [(ParaGRU, "newton"), (ParaLSTM, "newton"), (sLSTM, "newton")],
)
def test_default_mode_on_cuda_is_newton(cls, cuda_mode):
    assert cls.resolve_mode("cuda") == cuda_mode
    assert cls.resolve_mode("cpu") == "recurrent"


def test_mamba_runs_chunk_on_cuda():
    assert layers.get("mamba").resolve_mode("cuda") == "chunk"
    assert layers.get("mamba").resolve_mode("cpu") == "scan"


class MetaParaGRU(ParaGRU):
    """ParaGRU as if the meta device were a GPU (meta exists on every machine)."""

    auto_modes: ClassVar[dict[str, str]] = {"meta": "newton"}


def test_auto_follows_the_parameters_device_and_is_logged(caplog):
    layer = MetaParaGRU(4)
    assert layer.mode == "recurrent"
    with caplog.at_level(logging.INFO, logger="rnnx.layers"):
        layer.to("meta")
        assert layer.mode == "newton"
        assert "mode='newton'" in repr(layer)
        layer.to_empty(device="cpu")
        assert layer.mode == "recurrent"
    messages = [r.getMessage() for r in caplog.records]
    assert "MetaParaGRU: mode 'auto' runs 'newton' on meta" in messages
    assert "MetaParaGRU: mode 'auto' runs 'recurrent' on cpu" in messages


def test_explicit_mode_is_never_switched():
    layer = MetaParaGRU(4, mode="recurrent")
    assert layer.mode_setting == "recurrent"
    layer.to("meta")
    assert layer.mode == "recurrent"
    layer.mode = "auto"
    assert layer.mode == "newton" and layer.mode_setting == "auto"


def test_using_mode_restores_auto():
    layer = ParaGRU(4)
    with layer.using_mode("newton"):
        assert layer.mode == "newton"
    assert layer.mode_setting == "auto" and layer.mode == "recurrent"


def test_auto_is_refused_by_layers_without_auto_modes():
    with pytest.raises(ValueError, match=r"mode \(of S4D\): expected one of"):
        layers.get("s4d")(4, mode="auto")


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize("cls", [LSTM, GRU, Elman])
def test_auto_backend_is_cudnn_on_cuda(cls):
    layer = cls(4)
    assert layer.backend == "auto"
    assert layer.resolved_backend("cuda", torch.float32) == "cudnn"
    assert layer.resolved_backend("cpu", torch.float16) == "torch"
    assert layer.resolved_backend("cpu", torch.float32) in ("native", "torch")
    layer.backend = "torch"
    assert layer.resolved_backend("cuda") == "torch"


def test_cudnn_needs_one_head_and_a_torch_cell():
    assert LSTM(4, num_heads=2).resolved_backend("cuda") == "torch"
    assert sLSTM(4).resolved_backend("cuda") == "torch"
    with pytest.raises(ValueError, match=r"backend: 'cudnn' .* needs num_heads=1"):
        LSTM(4, num_heads=2, backend="cudnn")
    with pytest.raises(ValueError, match=r"cell 'slstm'"):
        sLSTM(4, backend="cudnn")
    with pytest.raises(ValueError, match=r"backend \(of GRU\): expected one of"):
        GRU(4, backend="cuda")


CASES = [
    pytest.param(LSTM, {}, id="lstm"),
    pytest.param(GRU, {}, id="gru"),
    pytest.param(Elman, {}, id="elman-tanh"),
    pytest.param(Elman, {"nonlinearity": "relu"}, id="elman-relu"),
    pytest.param(LSTM, {"num_layers": 2, "bidirectional": True}, id="lstm-2-bi"),
    pytest.param(GRU, {"num_layers": 3}, id="gru-3"),
    pytest.param(Elman, {"bias": False, "bidirectional": True}, id="elman-nobias-bi"),
]


def _run(layer, backend, x, s0, lengths):
    layer.backend = backend
    x = x.clone().requires_grad_()
    s0 = tuple(s.clone().requires_grad_() for s in s0)
    y, s = layer(x, s0 if len(s0) > 1 else s0[0], lengths=lengths)
    g = torch.Generator().manual_seed(5)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    for t in leaves(s):
        loss = loss + (t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
    params = list(layer.parameters())
    grads = torch.autograd.grad(loss, [x, *s0, *params])
    return y, leaves(s), grads


@pytest.mark.parametrize(("cls", "kw"), CASES)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_cudnn_backend_equals_the_reference(cls, kw, with_lengths):
    torch.manual_seed(0)
    layer = cls(5, 6, **kw).double()
    B, T = 4, 9
    x = torch.randn(B, T, 5, dtype=torch.float64)
    s0 = tuple(torch.randn_like(t) for t in leaves(layer.init_state(B)))
    lengths = torch.tensor([9, 0, 4, 1]) if with_lengths else None
    ref = _run(layer, "torch", x, s0, lengths)
    got = _run(layer, "cudnn", x, s0, lengths)
    assert_close(got[0], ref[0], rtol=1e-12, what="outputs")
    for a, b in zip(got[1], ref[1], strict=True):
        assert_close(a, b, rtol=1e-12, what="final state")
    names = ["x", *[f"initial state {i}" for i in range(len(s0))]]
    names += [n for n, _ in layer.named_parameters()]
    for n, a, b in zip(names, got[2], ref[2], strict=True):
        assert_close(a, b, rtol=1e-11, what=f"gradient of {n}")


def test_cudnn_backend_float32_and_autocast():
    torch.manual_seed(0)
    layer = LSTM(5, 6)
    x = torch.randn(2, 7, 5)
    layer.backend = "torch"
    y_ref, _ = layer(x)
    layer.backend = "cudnn"
    y, _ = layer(x)
    assert_close(y, y_ref, rtol=1e-5, what="outputs")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, s16 = layer(x)
    # the recurrence runs in float32 under autocast, as every rnnx op
    assert y16.dtype == torch.float32 and s16[0].dtype == torch.float32
    assert_close(y16, y_ref, rtol=1e-5, what="outputs under autocast")


def test_cudnn_backend_decodes_like_forward():
    torch.manual_seed(0)
    layer = GRU(5, 6, num_layers=2, backend="cudnn").double()
    x = torch.randn(2, 8, 5, dtype=torch.float64)
    y, s = layer(x)
    state, ys = None, []
    for t in range(8):
        yt, state = layer.step(x[:, t : t + 1], state)
        ys.append(yt)
    assert_close(torch.cat(ys, 1), y, rtol=1e-12, what="step by step")
    assert_close(state, s, rtol=1e-12, what="final state")


def test_cudnn_backend_dropout_between_layers_trains():
    torch.manual_seed(0)
    layer = LSTM(5, 6, num_layers=2, dropout=0.5, backend="cudnn").train()
    y, _ = layer(torch.randn(2, 7, 5))
    y.sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
