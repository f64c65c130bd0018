"""rnnx._native: the table of operators, their registrations, argument checks and the loader.

Every operator ``torch.ops.rnnx.*`` passes ``torch.library.opcheck`` (schema, fake
implementation against the CPU one, autograd registration, AOT dispatch); a wrong call
raises a clear error instead of reaching C; the loader builds once, warns once per
reason and says why a kernel is unavailable. The numerics of each kernel are tested with
its op (tests/ops/).
"""

from __future__ import annotations

import ctypes
import subprocess
import warnings

import pytest
import torch

from rnnx import RnnxWarning, _native
from rnnx._native import ops as native_ops

F64 = torch.float64


def _t(*shape, dtype=F64, grad=False, seed=0, positive=False):
    g = torch.Generator().manual_seed(seed + sum(shape))
    t = torch.randn(*shape, generator=g, dtype=torch.float64)
    t = (t.abs() + 0.1 if positive else t).to(dtype)
    return t.requires_grad_(grad)


def _detached(args: tuple) -> tuple:
    return tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)


def _samples() -> dict[str, tuple]:
    """Arguments of a small valid call of every operator (float64); the tensors of the
    differentiable operators require grad."""
    B, T, H, G = 2, 5, 4, 4
    lengths = torch.tensor([5, 3])
    w = (_t(G * H, H) * 0.3).requires_grad_()
    rnn = ("lstm", _t(B, T, G * H, grad=True), w, None, _t(2, B, H, grad=True), lengths, 1,
           False, False)  # fmt: skip
    y, _, stseq, saved = torch.ops.rnnx.rnn_fwd(*_detached(rnn))
    R, D, N, Gs = 6, 4, 3, 2
    offsets = torch.tensor([0, 4, 6])
    sscan = (
        _t(R, D, grad=True), _t(R, D, grad=True), -_t(D, N, positive=True),
        _t(R, Gs, N, grad=True), _t(R, Gs, N, grad=True), _t(D, grad=True),
        _t(R, D, grad=True), _t(D, grad=True), _t(2, D, N, grad=True), offsets, True, 2, False,
    )  # fmt: skip
    _, _, ckpt, ckpt_off = torch.ops.rnnx.selective_scan_fwd(*_detached(sscan))
    C, K = 4, 3
    q, k = _t(2, C, K, grad=True), _t(2, C, K, grad=True)
    g = (-_t(2, C, K, positive=True) * 0.2).requires_grad_()
    scores, Ic, m_in = _t(2, C, C, grad=True), _t(2, C, grad=True), _t(2, grad=True)
    Fc = (-_t(2, C).abs()).cumsum(-1).requires_grad_()
    mlstm = (scores, Fc, Ic, m_in)
    _, _, m, arg = torch.ops.rnnx.mlstm_intra_fwd(*_detached(mlstm))
    Hp = 3
    u, a, p = _t(B, T, 3 * Hp, grad=True), _t(3, Hp, grad=True), _t(2, Hp, grad=True)
    para = ("lstm", u, a, p, _t(B, Hp, 2, grad=True), lengths)
    s = torch.ops.rnnx.pararnn(*_detached(para))
    h2 = _t(B, T, 2 * Hp)
    return {
        "rnn": rnn,
        "rnn_fwd": _detached(rnn),
        "rnn_bwd": (
            "lstm",
            w.detach(),
            rnn[4].detach(),
            lengths,
            y,
            stseq,
            saved,
            _t(B, T, H),
            _t(2, B, H),
            1,
            False,
            False,
        ),
        "scan": (
            (_t(1, T, 3) * 0.5).requires_grad_(),
            _t(B, T, 3, grad=True),
            _t(B, 3, grad=True),
            False,
        ),
        "scan_adjoint": (
            _t(1, T, 3),
            _t(B, T, 3),
            _t(B, 3),
            _t(B, T, 3),
            _t(B, 3),
            True,
            True,
            True,
        ),
        "selective_scan": sscan,
        "selective_scan_fwd": _detached(sscan),
        "selective_scan_bwd": (
            *_detached(sscan[:8]),
            ckpt,
            ckpt_off,
            offsets,
            _t(R, D),
            _t(2, D, N),
            True,
            2,
            False,
            True,
        ),
        "gla_intra": (q, k, g),
        "gla_intra_fwd": _detached((q, k, g)),
        "gla_intra_bwd": (*_detached((q, k)), g.detach().exp(), _t(2, C, C)),
        "mlstm_intra": mlstm,
        "mlstm_intra_fwd": _detached(mlstm),
        "mlstm_intra_bwd": (*_detached(mlstm[:3]), m, arg, _t(2, C, C), _t(2, C), _t(2, C)),
        "pararnn": para,
        "pararnn_bwd": (*_detached(para), s, _t(B, T, Hp, 2)),
        "pararnn_cell": ("gru", _t(B, T, Hp, grad=True), u, a, None),
        "pararnn_cell_vjp": ("lstm", h2, *_detached((u, a, p)), _t(B, T, 2 * Hp)),
        "pararnn_cell_jacobian": ("lstm", h2, *_detached((u, a, p))),
    }


needs_native = pytest.mark.skipif(
    not all(_native.available(name) for name in _native.LIBRARIES),
    reason="native kernels unavailable here",
)


def test_every_operator_is_in_the_table_and_registered():
    for name, op in native_ops.OPS.items():
        assert hasattr(torch.ops.rnnx, name), name
        assert op.library in _native.LIBRARIES
        assert op.library in native_ops.SIGNATURES
    differentiable = {n for n, op in native_ops.OPS.items() if op.autograd is not None}
    assert differentiable == {
        "rnn", "scan", "selective_scan", "gla_intra", "mlstm_intra", "pararnn", "pararnn_cell"
    }  # fmt: skip


@needs_native
def test_the_samples_cover_every_operator():
    assert set(_samples()) == set(native_ops.OPS)


@needs_native
def test_every_signature_names_an_exported_function():
    for library, symbols in native_ops.SIGNATURES.items():
        lib = _native.load(library)
        for symbol in symbols:
            assert isinstance(getattr(lib, symbol), ctypes._CFuncPtr), f"{library}: {symbol}"


@needs_native
@pytest.mark.parametrize("name", sorted(native_ops.OPS))
def test_opcheck(name):
    """Schema, fake against CPU implementation, autograd registration, AOT dispatch."""
    args = _samples()[name]
    tests = ["test_schema", "test_faketensor", "test_aot_dispatch_static"]
    if native_ops.OPS[name].autograd is not None:
        tests.append("test_autograd_registration")
    torch.library.opcheck(getattr(torch.ops.rnnx, name).default, args, test_utils=tests)


@needs_native
@pytest.mark.parametrize("name", ["rnn", "scan", "selective_scan", "gla_intra", "mlstm_intra",
                                  "pararnn", "pararnn_cell"])  # fmt: skip
def test_autograd_formula_gradcheck(name):
    args = _samples()[name]
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    op = getattr(torch.ops.rnnx, name)

    def f(*diff):
        full = list(args)
        for i, t in zip(tensors, diff):
            full[i] = t
        out = op(*full)
        return out if isinstance(out, tuple) else (out,)

    torch.autograd.gradcheck(f, [args[i].detach().requires_grad_() for i in tensors])


@needs_native
def test_helper_operators_refuse_to_be_differentiated():
    args = list(_samples()["rnn_fwd"])
    args[1] = args[1].clone().requires_grad_()
    with pytest.raises(RuntimeError, match=r"rnnx::rnn_fwd is not differentiable"):
        torch.ops.rnnx.rnn_fwd(*args)
    with torch.no_grad():
        torch.ops.rnnx.rnn_fwd(*args)


@needs_native
@pytest.mark.parametrize(
    ("name", "position", "value", "message"),
    [
        ("rnn", 0, "tanh", r"rnnx::rnn: cell: expected one of"),
        ("rnn", 1, torch.zeros(2, 5, 7, dtype=F64), r"rnnx::rnn: gx: expected last dimension"),
        ("rnn", 2, torch.zeros(16, 3, dtype=F64), r"rnnx::rnn: weight_hh: expected shape"),
        ("rnn", 5, torch.tensor([5, 3], dtype=torch.int32), r"lengths: expected dtype torch.int64"),
        ("rnn", 1, torch.zeros(2, 5, 16), r"rnnx::rnn: state0: expected dtype torch.float32"),
        ("scan", 0, torch.zeros(3, 5, 3, dtype=F64), r"rnnx::scan: a: expected shape \(1 or 2"),
        ("scan", 2, torch.zeros(2, 4, dtype=F64), r"rnnx::scan: h0: expected shape"),
        ("selective_scan", 9, torch.tensor([0, 7, 6]), r"offsets: expected non-decreasing"),
        ("selective_scan", 3, torch.zeros(6, 3, 3, dtype=F64), r"B: expected shape \(6, G, 3\)"),
        ("gla_intra", 1, torch.zeros(2, 4, 2, dtype=F64), r"rnnx::gla_intra: k: expected shape"),
        ("mlstm_intra", 3, torch.zeros(3, dtype=F64), r"m_in: expected shape"),
        ("pararnn", 0, "rnn", r"rnnx::pararnn: kind: expected one of"),
        ("pararnn", 3, None, r"rnnx::pararnn: p: expected a tensor"),
        ("pararnn_cell", 1, torch.zeros(2, 5, 4, dtype=F64), r"pararnn_cell: h: expected shape"),
    ],
)
def test_a_wrong_call_raises_a_clear_error(name, position, value, message):
    """Arguments are checked in Python before any pointer reaches C, on real and on fake
    (meta) tensors alike."""
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in _samples()[name]]
    args[position] = value
    op = getattr(torch.ops.rnnx, name)
    with pytest.raises((ValueError, TypeError), match=message), torch.no_grad():
        op(*args)
    if "offsets" in message:
        return  # a check of values: the CPU kernel's, not the fake one's
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises((ValueError, TypeError), match=message):
        op(*meta)


def test_availability_is_folded_by_dynamo():
    """``available`` carries the marker of torch.compiler.assume_constant_result (set
    directly to keep torch._dynamo out of `import rnnx`): check it is still the one."""

    def probe() -> bool:
        return True

    marked = torch.compiler.assume_constant_result(probe)
    markers = {k for k in vars(marked) if k.startswith("_dynamo")}
    assert markers and all(getattr(_native.available, k) == v for k, v in vars(marked).items())


# ---------------------------------------------------------------------------- the loader


def _without_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setenv("PATH", str(tmp_path))  # no c++, g++ or clang++ on it
    monkeypatch.setenv("RNNX_CACHE_DIR", str(tmp_path / "cache"))


@needs_native
def test_no_compiler_warns_once_for_all_kernels(monkeypatch, tmp_path):
    args = _samples()["rnn_fwd"]
    with _native.preserved():
        _native.reset()
        _without_compiler(monkeypatch, tmp_path)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            missing = _native.preload()
            _native.preload()
        ours = [str(w.message) for w in record if issubclass(w.category, RnnxWarning)]
        assert len(ours) == 1, ours
        assert "native CPU kernels could not be built" in ours[0]
        assert "no C++ compiler found" in ours[0]
        assert set(missing) == set(_native.LIBRARIES)
        assert not _native.available("rnn")
        with pytest.raises(RuntimeError, match=r"rnnx::rnn: the native kernel 'rnn' is unavail"):
            torch.ops.rnnx.rnn(*args)


def test_disabled_by_environment_is_silent(monkeypatch):
    with _native.preserved():
        monkeypatch.setenv("RNNX_NATIVE", "0")
        _native.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert _native.preload() == {n: "disabled by RNNX_NATIVE=0" for n in _native.LIBRARIES}


def test_header_text_is_part_of_the_cache_key(monkeypatch, tmp_path):
    """Editing the shared header rebuilds the kernels (the key hashes its text). The
    "compiler" here writes an empty file: only the cache key is under test."""
    builds = []

    def fake_run(cmd, *args, **kwargs):
        if "-o" in cmd:
            builds.append(cmd)
            open(cmd[cmd.index("-o") + 1], "w").close()
        return subprocess.CompletedProcess(cmd, 0, stdout="c++ 1.0", stderr="")

    monkeypatch.setattr(_native.subprocess, "run", fake_run)
    monkeypatch.setattr(_native, "_compiler", lambda: "c++")
    monkeypatch.setenv("RNNX_CACHE_DIR", str(tmp_path))
    text = "// a\n"
    monkeypatch.setattr(_native, "_headers", lambda: text)
    first = _native._build("scan")
    assert _native._build("scan") == first and len(builds) == 1  # cached
    text = "// b\n"
    second = _native._build("scan")
    assert second != first and len(builds) == 2
    assert any(arg.startswith("-I") for arg in builds[0])  # the header's folder


def test_real_headers_are_read():
    assert "namespace rnnx" in _native._headers()  # common.h


@needs_native
def test_double_backward_raises_instead_of_missing_terms():
    args = _samples()["rnn"]
    y, _ = torch.ops.rnnx.rnn(*args)
    (g,) = torch.autograd.grad(y.square().sum(), args[1], create_graph=False)
    assert g.shape == args[1].shape
    y, _ = torch.ops.rnnx.rnn(*args)
    with pytest.raises(RuntimeError, match=r"rnnx::rnn_bwd is not differentiable"):
        torch.autograd.grad(y.square().sum(), args[1], create_graph=True)
