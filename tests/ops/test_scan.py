"""rnnx.ops.scan: every backend against the readable reference, gradcheck, errors."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnx import RnnxWarning, _native
from rnnx.ops import BlockDiagonal, Dense, Diagonal, scan, scan_reference
from tests.conftest import assert_close, native_available, with_native

scan_module = sys.modules["rnnx.ops.scan"]

FAST = with_native(["torch", "native"], "scan")
#: the backends hypothesis draws from (a strategy cannot skip one)
FAST_HERE = ["torch", *(["native"] if native_available("scan") else [])]


def _case(structure, a_shape_kind: str, dtype, B=3, L=29, feats=(6,)):
    """Random (a, b, h0) for a structure, with a broadcast over batch/time or not."""
    g = torch.Generator().manual_seed(1234)
    b = torch.randn(B, L, *feats, generator=g, dtype=torch.float64).to(dtype)
    if dtype.is_complex:
        b = b + 1j * torch.randn(B, L, *feats, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, *feats, generator=g, dtype=torch.float64).to(dtype)
    n = feats[-1]
    if isinstance(structure, Diagonal):
        inner = tuple(feats)
    elif isinstance(structure, BlockDiagonal):
        inner = (*feats[:-1], n // structure.k, structure.k, structure.k)
    else:
        inner = (*feats[:-1], n, n)
    lead = {"full": (B, L), "time": (1, L), "batch": (B, 1), "none": ()}[a_shape_kind]
    a = torch.rand(*lead, *inner, generator=g, dtype=torch.float64)
    if isinstance(structure, Diagonal):
        a = 0.2 + 0.75 * a
        if dtype.is_complex:
            phase = torch.rand(*lead, *inner, generator=g, dtype=torch.float64) * 6.28
            a = a * torch.exp(1j * phase)
    else:
        a = (a - 0.5) * (1.2 / inner[-1])  # contractive blocks
    return a.to(dtype), b, h0


def _grads(a, b, h0, *, backend, structure, reverse, with_h0=True):
    a = a.clone().requires_grad_()
    b = b.clone().requires_grad_()
    h0 = h0.clone().requires_grad_() if with_h0 else None
    if backend == "reference":
        h, last = scan_reference(a, b, h0, structure=structure, reverse=reverse)
    else:
        h, last = scan(a, b, h0, structure=structure, reverse=reverse, backend=backend)
    g = torch.Generator().manual_seed(7)
    wh = torch.randn(h.shape, generator=g, dtype=torch.float64).to(h.dtype)
    wl = torch.randn(last.shape, generator=g, dtype=torch.float64).to(h.dtype)
    loss = (h * wh.conj()).real.sum() + (last * wl.conj()).real.sum()
    inputs = [a, b] + ([h0] if with_h0 else [])
    grads = torch.autograd.grad(loss, inputs)
    return (h.detach(), last.detach(), *grads)


STRUCTURES = [
    pytest.param(Diagonal(), torch.float64, id="diag-real"),
    pytest.param(Diagonal(), torch.complex128, id="diag-complex"),
    pytest.param(BlockDiagonal(2), torch.float64, id="block2"),
    pytest.param(BlockDiagonal(3), torch.float64, id="block3"),
    pytest.param(Dense(), torch.float64, id="dense"),
]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize(("structure", "dtype"), STRUCTURES)
@pytest.mark.parametrize("a_kind", ["full", "time", "batch", "none"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_backend_matches_reference(backend, structure, dtype, a_kind, reverse):
    a, b, h0 = _case(structure, a_kind, dtype)
    got = _grads(a, b, h0, backend=backend, structure=structure, reverse=reverse)
    ref = _grads(a, b, h0, backend="reference", structure=structure, reverse=reverse)
    names = ["h", "h_last", "grad a", "grad b", "grad h0"]
    for name, x, y in zip(names, got, ref):
        assert_close(x, y, rtol=1e-10, what=f"{backend} {name}")


@pytest.mark.parametrize("backend", FAST)
def test_without_initial_state_and_multi_feature_dims(backend):
    a, b, h0 = _case(Diagonal(), "full", torch.float64, feats=(2, 5))
    got = _grads(a, b, h0, backend=backend, structure="diagonal", reverse=False, with_h0=False)
    ref = _grads(a, b, h0, backend="reference", structure="diagonal", reverse=False, with_h0=False)
    for x, y in zip(got, ref):
        assert_close(x, y, rtol=1e-10)


@pytest.mark.parametrize("backend", [*FAST, "reference"])
@pytest.mark.parametrize(("structure", "dtype"), STRUCTURES)
def test_gradcheck_float64(backend, structure, dtype):
    a, b, h0 = _case(structure, "full", dtype, B=2, L=6, feats=(4,) if dtype.is_complex else (6,))
    a.requires_grad_()
    b.requires_grad_()
    h0.requires_grad_()

    def fn(a, b, h0):
        if backend == "reference":
            return scan_reference(a, b, h0, structure=structure)
        return scan(a, b, h0, structure=structure, backend=backend)

    assert torch.autograd.gradcheck(fn, (a, b, h0), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", FAST)
def test_float32_matches_float64_reference(backend):
    a, b, h0 = _case(Diagonal(), "full", torch.float64, L=300)
    h, last = scan(a.float(), b.float(), h0.float(), backend=backend)
    h_ref, last_ref = scan_reference(a, b, h0)
    assert h.dtype == torch.float32
    assert_close(h.double(), h_ref, rtol=1e-5)
    assert_close(last.double(), last_ref, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 3),
    L=st.integers(1, 70),
    feats=st.lists(st.integers(1, 5), min_size=1, max_size=2),
    a_kind=st.sampled_from(["full", "time", "batch", "none"]),
    reverse=st.booleans(),
    backend=st.sampled_from(FAST_HERE),
)
def test_random_shapes(B, L, feats, a_kind, reverse, backend):
    a, b, h0 = _case(Diagonal(), a_kind, torch.float64, B=B, L=L, feats=tuple(feats))
    got = _grads(a, b, h0, backend=backend, structure="diagonal", reverse=reverse)
    ref = _grads(a, b, h0, backend="reference", structure="diagonal", reverse=reverse)
    for x, y in zip(got, ref):
        assert_close(x, y, rtol=1e-10)


@pytest.mark.parametrize("backend", FAST)
def test_backward_saves_only_inputs_and_states(backend):
    """Backward memory is O(size of the inputs): the graph keeps a, h and h0, nothing else."""
    a, b, h0 = _case(Diagonal(), "full", torch.float32, B=2, L=500, feats=(8,))
    a.requires_grad_()
    b.requires_grad_()
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        h, _ = scan(a, b, h0, backend=backend)
    assert sum(saved) <= a.numel() + h.numel() + h0.numel()


def test_length_zero_returns_initial_state():
    b = torch.randn(2, 0, 3)
    h0 = torch.randn(2, 3)
    h, last = scan(torch.rand(3), b, h0)
    assert h.shape == (2, 0, 3)
    assert torch.equal(last, h0)
    _, last = scan(torch.rand(3), b)
    assert torch.equal(last, torch.zeros(2, 3))


def test_auto_picks_native_on_cpu_when_built():
    if not scan_module.native_available():
        pytest.skip("native kernel unavailable here")
    a, b, h0 = _case(Diagonal(), "full", torch.float32)
    h_auto, _ = scan(a, b, h0)
    h_native, _ = scan(a, b, h0, backend="native")
    assert torch.equal(h_auto, h_native)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"b": torch.randn(2, 5)}, ValueError, r"b: expected shape \(batch, length, \*features\)"),
        ({"a": torch.rand(4)}, ValueError, r"a: expected a shape broadcastable to b's shape"),
        ({"h0": torch.randn(3, 3)}, ValueError, r"h0: expected shape \(2, 3\)"),
        ({"b": torch.randint(0, 3, (2, 5, 3))}, TypeError, "b: expected a floating-point"),
        ({"backend": "gpu"}, ValueError, "backend: expected one of"),
        ({"structure": "blocky"}, ValueError, "structure: expected"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    args = {"a": torch.rand(3), "b": torch.randn(2, 5, 3), "h0": None}
    args.update(kwargs)
    with pytest.raises(err, match=match):
        scan(args.pop("a"), args.pop("b"), args.pop("h0"), **args)


def test_block_size_must_divide_features():
    with pytest.raises(ValueError, match=r"multiple of the block size k=2"):
        scan(torch.rand(2, 5, 1, 2, 2), torch.randn(2, 5, 3), structure=BlockDiagonal(2))


def test_block_a_shape_is_checked():
    with pytest.raises(ValueError, match=r"a: expected a shape broadcastable to \(2, 5, 2, 2, 2\)"):
        scan(torch.rand(2, 5, 2, 3, 3), torch.randn(2, 5, 4), structure=BlockDiagonal(2))


def test_block_structure_validates_k():
    with pytest.raises(ValueError, match=r"BlockDiagonal\.k"):
        BlockDiagonal(0)


def test_native_rejects_what_it_cannot_run():
    a = torch.rand(2, 5, 2, 2, 2, dtype=torch.complex64)
    with pytest.raises(ValueError, match="backend: 'native' supports"):
        scan(
            a,
            torch.randn(2, 5, 4, dtype=torch.complex64),
            structure=BlockDiagonal(2),
            backend="native",
        )


def test_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    """A broken compiler: one warning, auto runs the PyTorch path, native says why."""
    monkeypatch.setenv("RNNX_NATIVE", "1")
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    monkeypatch.setenv("RNNX_CACHE_DIR", str(tmp_path))
    with _native.preserved():
        _native.reset()
        a, b, h0 = _case(Diagonal(), "full", torch.float64)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            h, _ = scan(a, b, h0)
            scan(a, b, h0)
        ours = [w for w in record if issubclass(w.category, RnnxWarning)]
        assert len(ours) == 1
        assert "could not be built" in str(ours[0].message)
        assert_close(h, scan_reference(a, b, h0)[0], rtol=1e-12)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(RuntimeError, match="native scan kernel is unavailable"):
                scan(a, b, h0, backend="native")


def test_native_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("RNNX_NATIVE", "0")
    with _native.preserved():
        _native.reset()
        assert not scan_module.native_available()
        a, b, h0 = _case(Diagonal(), "full", torch.float64)
        assert_close(scan(a, b, h0)[0], scan_reference(a, b, h0)[0], rtol=1e-12)


def test_reloaded_library_gets_its_signatures():
    """After reset() the scan must configure the newly loaded library, not reuse a flag."""
    if not scan_module.native_available():
        pytest.skip("native kernel unavailable here")
    a, b, h0 = _case(Diagonal(), "full", torch.float64)
    expected = scan(a, b, h0, backend="native")[0]
    with _native.preserved():
        _native.reset()
        assert_close(scan(a, b, h0, backend="native")[0], expected, rtol=0)


@pytest.mark.parametrize(("structure", "dtype"), STRUCTURES[:3])
def test_native_two_threads_match_reference(structure, dtype):
    """Shapes large enough that the kernels split work over OpenMP threads."""
    if not scan_module.native_available():
        pytest.skip("native kernel unavailable here")
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for kind in ("full", "time"):  # "time": dA summed over batch across units
            a, b, h0 = _case(structure, kind, dtype, B=5, L=300, feats=(130,))
            got = _grads(a, b, h0, backend="native", structure=structure, reverse=False)
            ref = _grads(a, b, h0, backend="reference", structure=structure, reverse=False)
            for x, y in zip(got, ref):
                assert_close(x, y, rtol=1e-10)
    finally:
        torch.set_num_threads(old)
