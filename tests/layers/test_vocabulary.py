"""One vocabulary (docs/contract.md): modes name algorithms, backends implementations.

The registry refuses other words; every layer has a ``backend`` with the same semantics;
every backend of a layer computes the same function; ``"torch"`` never touches a native
kernel; and each old name (mode ``"sequential"``, ``"chunked"``, ``"fused"``, backend
``"reference"``, ``"chunked"``, ``"chunk"``) still works, with one DeprecationWarning
naming the new spelling, in layers, ops and the run configuration.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import rnnx.layers as layers
from rnnx import _native
from rnnx._native import ops as native_ops
from rnnx._tree import leaves
from rnnx._vocab import BACKENDS, MODES, OLD_BACKENDS, OLD_MODES, op_backend
from rnnx.layers.base import RecurrentLayer, register
from tests.conftest import assert_close

NAMES = layers.names("sequence")


# --------------------------------------------------------------------------- registry


def test_every_layer_speaks_the_vocabulary():
    for name in NAMES:
        cls = layers.get(name)
        assert set(cls.modes) <= set(MODES), name
        assert set(cls.backends) <= set(BACKENDS), name
        assert {"auto", "torch"} <= set(cls.backends), name


def _layer_class(**attrs):
    body = {"modes": ("recurrent",), "default_mode": "recurrent", "reference_mode": "recurrent"}
    body.update(attrs)
    return type("Odd", (RecurrentLayer,), {"__doc__": "x", **body})


def test_register_refuses_words_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"Odd\.modes: 'parallel' is not a mode"):
        register("vocab_mode_test")(
            _layer_class(modes=("parallel", "recurrent"), default_mode="parallel")
        )
    with pytest.raises(ValueError, match=r"'sequential' is not a mode .*\(now 'recurrent'\)"):
        register("vocab_old_test")(
            _layer_class(
                modes=("sequential",), default_mode="sequential", reference_mode="sequential"
            )
        )
    with pytest.raises(ValueError, match=r"Odd\.backends: 'reference' is not a backend"):
        register("vocab_backend_test")(_layer_class(backends=("auto", "torch", "reference")))
    with pytest.raises(ValueError, match=r"Odd\.backends: expected 'auto' and 'torch'"):
        register("vocab_auto_test")(_layer_class(backends=("native",)))
    with pytest.raises(ValueError, match=r"Odd\.mode_aliases\['old'\]: expected a mode"):
        register("vocab_alias_test")(_layer_class(mode_aliases={"old": ("scan", None)}))
    assert not any(n.startswith("vocab_") for n in layers.names("sequence"))


# --------------------------------------------------------------------------- backend attribute


@pytest.mark.parametrize("name", NAMES)
def test_backend_attribute_is_settable_validated_and_resolved(name):
    cls = layers.get(name)
    layer = cls(6, **cls.tiny_config())
    assert layer.backend == "auto"
    assert layer.resolved_backend() in cls.backends and layer.resolved_backend() != "auto"
    assert layer.resolved_backend("cpu", torch.float16) in ("torch", "cudnn")
    layer.backend = "torch"
    assert layer.backend == "torch" and layer.resolved_backend() == "torch"
    assert "backend='torch'" in repr(layer)
    with pytest.raises(ValueError, match=rf"backend \(of {cls.__name__}\): expected one of"):
        layer.backend = "gpu"
    assert cls(6, **cls.tiny_config(), backend="torch").backend == "torch"


def _float64_case(name):
    cls = layers.get(name)
    torch.manual_seed(0)
    layer = cls(6, **cls.tiny_config()).double().eval()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    return layer, x


def _run(layer, x, mode, backend):
    old = layer.backend
    layer.backend = backend
    with torch.no_grad(), layer.using_mode(mode):
        y, s = layer(x)
    layer.backend = old
    return y, s


def _backend_cases():
    out = []
    for name in NAMES:
        cls = layers.get(name)
        for backend in cls.backends:
            if backend in ("torch", "cudnn"):  # cudnn: tests/layers/test_devices.py
                continue
            for mode in dict.fromkeys((cls.default_mode, cls.reference_mode)):
                out.append(pytest.param(name, mode, backend, id=f"{name}-{mode}-{backend}"))
    return out


@pytest.mark.parametrize(("name", "mode", "backend"), _backend_cases())
def test_every_backend_computes_what_torch_computes(name, mode, backend):
    layer, x = _float64_case(name)
    if backend == "native" and layer.resolved_backend() != "native":
        pytest.skip("native kernels unavailable here")
    y, s = _run(layer, x, mode, backend)
    y_t, s_t = _run(layer, x, mode, "torch")
    rtol = max(layer.equivalence_rtol, 1e-9)
    assert_close(y, y_t, rtol=rtol, what=f"{backend} output")
    for a, b in zip(leaves(s), leaves(s_t), strict=True):
        assert_close(a, b, rtol=rtol, what=f"{backend} state")


@pytest.mark.parametrize("name", NAMES)
def test_torch_backend_never_calls_a_native_kernel(name, monkeypatch):
    layer, x = _float64_case(name)
    layer.backend = "torch"

    def refuse(*args, **kwargs):
        raise AssertionError(f"backend 'torch' called the native kernel {args[0]!r}")

    monkeypatch.setattr(native_ops, "call", refuse)
    for mode in layer.modes:
        with layer.using_mode(mode):
            y, _ = layer(x)
        assert torch.isfinite(y).all()


def test_explicit_native_backend_fails_loudly_where_it_cannot_run(monkeypatch):
    layer = layers.get("paragru")(4, backend="native")
    monkeypatch.setattr(_native, "load", lambda name: None)
    with pytest.raises(RuntimeError, match="backend: 'native' was requested"):
        layer(torch.randn(2, 3, 4))


# --------------------------------------------------------------------------- old names


def _old_mode_cases():
    out = []
    for name in NAMES:
        cls = layers.get(name)
        for old in sorted({*OLD_MODES, *cls.mode_aliases}):
            alias = cls.old_mode(old)
            if alias is not None:
                out.append(pytest.param(name, old, alias, id=f"{name}-{old}"))
    return out


OLD_MODE_CASES = _old_mode_cases()


def test_old_mode_names_cover_every_family():
    ids = {p.id for p in OLD_MODE_CASES}
    assert {"lstm-sequential", "slstm-sequential", "paragru-sequential", "paragru-fused"} <= ids
    assert {"mamba-chunked", "mamba2-chunked"} <= ids


@pytest.mark.parametrize(("name", "old", "alias"), OLD_MODE_CASES)
def test_old_mode_name_warns_and_maps(name, old, alias):
    cls = layers.get(name)
    mode, backend = alias
    layer = cls(6, **cls.tiny_config())
    with pytest.warns(DeprecationWarning, match=rf"mode \(of {cls.__name__}\) '{old}'") as rec:
        layer.mode = old
    assert len(rec) == 1 and f"mode={mode!r}" in str(rec[0].message)
    assert layer.mode == mode and layer.mode_setting == mode
    assert layer.backend == (backend or "auto")
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated"):
        built = cls(6, **cls.tiny_config(), mode=old)
    assert built.mode == mode and built.backend == (backend or "auto")
    fresh = cls(6, **cls.tiny_config())
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated"), fresh.using_mode(old):
        assert fresh.mode == mode
    assert fresh.mode_setting == cls(6, **cls.tiny_config()).mode_setting
    assert fresh.backend == "auto"


def test_old_mode_names_compute_what_they_computed():
    # ParaRNN's "sequential" was the Python loop, "fused" the native loop where it runs;
    # Mamba's "chunked" was the selective scan in PyTorch.
    for name, old, backend in (("paragru", "sequential", "torch"), ("mamba", "chunked", "torch")):
        layer, x = _float64_case(name)
        with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated"):
            y_old, _ = _run(layer, x, old, "auto")
        mode = layer.old_mode(old)[0]
        y_new, _ = _run(layer, x, mode, backend)
        assert torch.equal(y_old, y_new), name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("old", sorted(OLD_BACKENDS))
def test_old_backend_name_warns_and_maps(name, old):
    cls = layers.get(name)
    layer = cls(6, **cls.tiny_config())
    with pytest.warns(DeprecationWarning, match=rf"backend \(of {cls.__name__}\) '{old}'"):
        layer.backend = old
    assert layer.backend == "torch"


def test_unknown_mode_is_still_an_error_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"mode \(of S4D\): expected one of"):
            layers.get("s4d")(4, mode="chunked")  # S4D never had a chunked mode


# --------------------------------------------------------------------------- ops


def test_op_backend_maps_old_names():
    assert op_backend("torch", ("auto", "torch")) == "torch"
    with pytest.warns(DeprecationWarning, match=r"backend 'chunked' .* use backend='torch'"):
        assert op_backend("chunked", ("auto", "native", "torch")) == "torch"
    with pytest.warns(DeprecationWarning, match=r"use f\(\) \(the step-by-step oracle\)"):
        assert op_backend("reference", ("auto", "torch"), reference="f()") == "_reference"
    with pytest.warns(DeprecationWarning, match=r"use backend='torch'"):
        assert op_backend("reference", ("auto", "native", "torch")) == "torch"
    with pytest.raises(ValueError, match=r"backend: expected one of \('auto', 'torch'\)"):
        op_backend("native", ("auto", "torch"))


def _op_cases():
    from rnnx.ops import chunk, delta, mlstm, rnn, selective_scan, ssd
    from rnnx.ops.scan import scan, scan_reference

    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    B, T, H, K = 2, 7, 2, 3
    q, k, v = r(B, T, H, K), torch.nn.functional.normalize(r(B, T, H, K), dim=-1), r(B, T, H, K)
    gate = -torch.rand(B, T, H, generator=g, dtype=torch.float64)
    beta = torch.rand(B, T, H, generator=g, dtype=torch.float64)
    a, b = 0.9 * torch.rand(B, T, 4, generator=g, dtype=torch.float64), r(B, T, 4)
    u, dlt = r(B, T, 4), r(B, T, 4)
    A4, Bs, Cs = -torch.rand(4, 3, generator=g, dtype=torch.float64), r(B, T, 3), r(B, T, 3)
    gx, w, h0 = r(B, T, 4), r(4, 4), r(B, 4)
    ssd_args = (q, gate.exp(), -torch.ones(H, dtype=torch.float64), r(B, T, 3), r(B, T, 3))
    gla_g = gate.unsqueeze(-1).expand(B, T, H, K)
    sel = (u, dlt, A4, Bs, Cs)
    return [
        ("scan", lambda be: scan(a, b, backend=be)[0],
         lambda: scan_reference(a, b)[0], ("chunked",)),
        ("selective_scan", lambda be: selective_scan.selective_scan(*sel, backend=be)[0],
         lambda: selective_scan.selective_scan_reference(*sel)[0], ("chunked",)),
        ("ssd", lambda be: ssd.ssd(*ssd_args, backend=be)[0],
         lambda: ssd.ssd_reference(*ssd_args)[0], ("chunked",)),
        ("linear_attention", lambda be: chunk.linear_attention(q, k, v, backend=be)[0],
         lambda: chunk.linear_attention_reference(q, k, v)[0], ("chunk",)),
        ("gla", lambda be: chunk.gla(q, k, v, gla_g, backend=be)[0],
         lambda: chunk.gla_reference(q, k, v, gla_g)[0], ("chunk",)),
        ("delta_rule", lambda be: delta.delta_rule(q, k, v, beta, backend=be)[0],
         lambda: delta.delta_rule_reference(q, k, v, beta)[0], ("chunk",)),
        ("mlstm", lambda be: mlstm.mlstm(q, k, v, gate, gate, backend=be)[0],
         lambda: mlstm.mlstm_reference(q, k, v, gate, gate)[0], ("chunk",)),
        ("rnn", lambda be: rnn.rnn_sequence("elman_tanh", gx, w, (h0,), backend=be)[0],
         None, ()),
    ]  # fmt: skip


@pytest.mark.parametrize("case", _op_cases(), ids=lambda c: c[0])
def test_old_op_backend_names_warn_and_compute_the_same(case):
    _, fn, reference, old_fast = case
    torch.manual_seed(0)
    y_torch = fn("torch")
    for old in old_fast:
        with pytest.warns(DeprecationWarning, match=rf"backend '{old}' .* backend='torch'"):
            assert torch.equal(fn(old), y_torch)
    with pytest.warns(DeprecationWarning, match="backend 'reference' is deprecated"):
        y_ref = fn("reference")
    if reference is not None:  # the old backend ran the op's *_reference oracle
        assert torch.equal(y_ref, reference())
    else:
        assert_close(y_ref, y_torch, rtol=1e-9)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("layer", "old", "mode", "backend"),
    [
        ("lstm", "sequential", "recurrent", None),
        ("paragru", "fused", "recurrent", "auto"),
        ("paragru", "sequential", "recurrent", "torch"),
        ("mamba", "chunked", "scan", "torch"),
        ("mamba2", "chunked", "chunk", None),
    ],
)
def test_config_maps_old_mode_names(layer, old, mode, backend):
    from rnnx.train.config import resolve

    with pytest.warns(DeprecationWarning, match=rf"\[model\] mode '{old}'"):
        cfg = resolve({"model": {"layer": layer, "mode": old}, "task": {"name": "parity"}})
    assert cfg.model.mode == mode and cfg.model.backend == backend


def test_config_backend_is_validated_and_old_names_map():
    from rnnx.train.config import ConfigError, resolve

    with pytest.warns(DeprecationWarning, match=r"\[model\] backend 'reference'"):
        cfg = resolve({"model": {"layer": "gru", "backend": "reference"}})
    assert cfg.model.backend == "torch"
    with pytest.raises(ConfigError, match=r"\[model\] backend: layer 's4d' has no backend 'cudnn'"):
        resolve({"model": {"layer": "s4d", "backend": "cudnn"}})


def test_deprecation_warnings_point_at_the_callers_line():
    """An old name warns at the user's line, not inside rnnx or torch (a layer's mode
    setter runs under nn.Module.__setattr__; an op's check under its autocast wrapper)."""
    from rnnx.ops.ssd import ssd

    layer = layers.get("lstm")(d_model=4)
    x, dt = torch.randn(1, 3, 2, 4), torch.rand(1, 3, 2)
    A, B = -torch.rand(2), torch.randn(1, 3, 1, 4)
    with pytest.warns(DeprecationWarning, match="'sequential' is deprecated") as mode_warning:
        layer.mode = "sequential"
    with pytest.warns(DeprecationWarning, match="'reference' is deprecated") as op_warning:
        ssd(x, dt, A, B, B, backend="reference")
    assert [w.filename for w in (*mode_warning, *op_warning)] == [__file__, __file__]
