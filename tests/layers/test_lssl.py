"""LSSL: A/B sharing, measures, discretisations, the Krylov kernel as the impulse response,
and the kernel cache for frozen parameters (arXiv 2110.13985)."""

from __future__ import annotations

import pytest
import torch

import rnnx.layers.lssl as lssl_module
from rnnx.layers import LSSL
from rnnx.layers.lssl import Sharing
from rnnx.ssm.hippo import Measure, hippo
from tests.conftest import assert_close

f64 = torch.float64


def _layer(**kw):
    torch.manual_seed(0)
    return LSSL(3, **{"d_state": 6, **kw}).double().eval()


def _modes_agree(layer, x, s0=None):
    outs = {}
    with torch.no_grad():
        for mode in layer.modes:
            with layer.using_mode(mode):
                outs[mode] = layer(x, s0)
    for mode in ("conv", "scan"):
        assert_close(outs[mode][0], outs["recurrent"][0], rtol=1e-10, what=f"{mode} output")
        assert_close(outs[mode][1], outs["recurrent"][1], rtol=1e-10, what=f"{mode} state")


@pytest.mark.parametrize("measure", list(Measure))
@pytest.mark.parametrize("discretization", ["bilinear", "zoh"])
def test_every_measure_and_discretization_runs_in_all_modes(measure, discretization):
    layer = _layer(measure=measure, discretization=discretization)
    x = torch.randn(2, 19, 3, dtype=f64)
    s0 = 0.1 * torch.randn(2, 3, 6, dtype=f64)
    _modes_agree(layer, x, s0)


def test_sharing_options():
    fixed = LSSL(4, d_state=5, sharing="fixed")
    names = dict(fixed.named_parameters())
    assert "A" not in names and "B" not in names
    A, B = hippo("legs", 5, dtype=torch.float32)
    assert torch.equal(fixed.A, A) and torch.equal(fixed.B, B)
    shared = LSSL(4, d_state=5, sharing=Sharing.SHARED)
    assert shared.A.shape == (5, 5) and shared.A.requires_grad
    per = LSSL(4, d_state=5, sharing="per_feature")
    assert per.A.shape == (4, 5, 5) and per.B.shape == (4, 5)
    for p in (per.A, per.B, per.log_dt):
        assert p._optim == {"lr": 1e-3, "weight_decay": 0.0}
    _modes_agree(per.double().eval(), torch.randn(2, 11, 4, dtype=f64))


def test_kernel_is_the_impulse_response():
    layer = _layer(channels=2)
    step = torch.exp(layer.log_dt)
    dA, dB, K = layer._conv_parts(13, step, cacheable=False)
    x = torch.zeros(3, 6, dtype=f64)
    for t in range(13):
        x = (dA @ x.unsqueeze(-1)).squeeze(-1) + dB * (1.0 if t == 0 else 0.0)
        assert_close(torch.einsum("hmn,hn->hm", layer.C, x), K[..., t], rtol=1e-12)


def test_kernel_is_cached_when_frozen(monkeypatch):
    layer = _layer()
    calls = []
    real = lssl_module.krylov_kernel
    monkeypatch.setattr(
        lssl_module, "krylov_kernel", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    x = torch.randn(2, 9, 3, dtype=f64)
    y1, _ = layer(x)  # parameters need gradients: no cache
    y1, _ = layer(x)
    assert len(calls) == 2
    for p in layer.parameters():
        p.requires_grad_(False)
    calls.clear()
    y2, _ = layer(x)
    y3, _ = layer(x)
    assert len(calls) == 1  # computed once, then cached
    assert_close(y2, y1, rtol=1e-12) and assert_close(y3, y1, rtol=0)
    with torch.no_grad():
        layer.C.mul_(2.0)  # an in-place update invalidates the cache
    calls.clear()
    layer(x)
    assert len(calls) == 1
    layer(x, dt=0.5)  # a rescaled step is not cached
    layer(x, dt=0.5)
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"sharing": "tied"}, ValueError, r"sharing: expected one of \['fixed', 'shared'"),
        ({"measure": "cheb"}, ValueError, r"measure: expected one of"),
        ({"discretization": "euler"}, ValueError, r"discretization: expected one of"),
        ({"channels": 0}, ValueError, r"channels: expected an int >= 1"),
        ({"dt_min": 0.2, "dt_max": 0.1}, ValueError, r"dt_min, dt_max"),
        ({"dropout": 1.0}, ValueError, r"dropout: expected a value in \[0, 1\)"),
    ],
)
def test_bad_arguments(kw, err, match):
    with pytest.raises(err, match=match):
        LSSL(4, **kw)


def test_decoding_reuses_the_discretisation_while_parameters_do_not_change(monkeypatch):
    layer = _layer()
    calls = []
    real = LSSL.discretized
    monkeypatch.setattr(LSSL, "discretized", lambda self, st: calls.append(1) or real(self, st))
    x = torch.randn(2, 1, 3, dtype=f64)
    with torch.no_grad():
        _, s = layer.step(x)
        y2, _ = layer.step(x, s)
        assert len(calls) == 1
        layer.log_dt.add_(0.1)  # an in-place update invalidates the cache
        y3, _ = layer.step(x, s)
        assert len(calls) == 2
    ref, _ = layer.step(x, s)
    assert_close(y3, ref, rtol=1e-12) and not torch.allclose(y2, y3)
