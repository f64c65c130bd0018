"""rnnx.ops.chunk: linear attention with no, fixed, scalar and vector decay.

Each chunked backend against the recurrent reference (outputs, final state, every
gradient incl. the initial state's) at several chunk sizes and lengths that are no
multiple of them; packed vs padded sequences; float64 gradcheck; a long sequence; dtypes;
bad input.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnx.ops import chunk
from tests.conftest import assert_close, backends_here, with_native, with_native_pairs
from tests.ops.linear_family import (
    OpSpec,
    check_chunk_matches_reference,
    check_dtypes,
    check_gradcheck,
    check_long,
    check_packed,
    make_inputs,
    plain_state,
)


def _no_gates(B, T, H, K, g, dtype):
    return ()


def _fixed_decay(B, T, H, K, g, dtype):
    return (torch.log(1 - torch.exp2(-1.0 - torch.arange(H, dtype=dtype))),)


def _scalar_decay(B, T, H, K, g, dtype):
    return (F.logsigmoid(2 * torch.randn(B, T, H, generator=g, dtype=dtype)),)


def _vector_decay(B, T, H, K, g, dtype):
    return (F.logsigmoid(2 * torch.randn(B, T, H, K, generator=g, dtype=dtype)),)


SPECS = {
    "linear_attention": OpSpec("linear_attention", chunk.linear_attention, _no_gates, plain_state),
    "retention": OpSpec("retention", chunk.retention, _fixed_decay, plain_state),
    "simple_gla": OpSpec("simple_gla", chunk.simple_gla, _scalar_decay, plain_state),
    "gla": OpSpec("gla", chunk.gla, _vector_decay, plain_state),
}
# (op, backend): GLA has the pure-PyTorch chunked form and the native kernel
CASES = [(n, "torch") for n in SPECS] + [("gla", "native")]


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
@pytest.mark.parametrize(("chunk_size", "T"), [(16, 41), (32, 75), (64, 100), (64, 1)])
def test_chunk_matches_reference(name, backend, chunk_size, T):
    check_chunk_matches_reference(SPECS[name], backend, chunk_size, T, rtol=1e-10)


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
def test_float32_matches_reference(name, backend):
    check_chunk_matches_reference(SPECS[name], backend, 16, 50, dtype=torch.float32, rtol=2e-4)


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
def test_packed_matches_reference_and_padded(name, backend):
    check_packed(SPECS[name], backend)
    check_packed(SPECS[name], backend, lens=(3, 9), with_state=False)


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
def test_gradcheck(name, backend):
    check_gradcheck(SPECS[name], backend)


@pytest.mark.parametrize("name", list(SPECS))
def test_long_sequence(name):
    check_long(
        SPECS[name], backends_here([b for n, b in CASES if n == name], "chunk"), 8192, grads=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SPECS))
def test_long_sequence_gradients(name):
    check_long(
        SPECS[name], backends_here([b for n, b in CASES if n == name], "chunk"), 8192, grads=True
    )


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
def test_dtypes(name, backend):
    check_dtypes(SPECS[name], backend)


def test_retention_is_simple_gla_with_a_constant_gate():
    q, k, v, log_decay = make_inputs(SPECS["retention"], 2, 13, 3, 4, 5)
    o1, s1 = chunk.retention(q, k, v, log_decay, output_final_state=True, chunk_size=4)
    g = log_decay.expand(2, 13, 3)
    o2, s2 = chunk.simple_gla_reference(q, k, v, g, output_final_state=True)
    assert_close(o1, o2, rtol=1e-12)
    assert_close(s1, s2, rtol=1e-12)


def test_gla_with_equal_decays_is_simple_gla():
    q, k, v, g = make_inputs(SPECS["simple_gla"], 2, 21, 2, 4, 3)
    gk = g.unsqueeze(-1).expand(2, 21, 2, 4).contiguous()
    o1, s1 = chunk.gla(q, k, v, gk, output_final_state=True, chunk_size=8)
    o2, s2 = chunk.simple_gla(q, k, v, g, output_final_state=True, chunk_size=8)
    assert_close(o1, o2, rtol=1e-12)
    assert_close(s1, s2, rtol=1e-12)


@pytest.mark.parametrize("backend", with_native(["native", "torch"], "chunk"))
def test_gla_extreme_decay_stays_finite(backend):
    """Decays of e^-200 per step: every exponential the chunked form takes is <= 1."""
    q, k, v, _ = make_inputs(SPECS["gla"], 1, 40, 1, 4, 3, dtype=torch.float32)
    g = torch.full((1, 40, 1, 4), -200.0)
    g[..., :2] = -1e-3
    o, s = chunk.gla(q, k, v, g, output_final_state=True, chunk_size=16, backend=backend)
    o_r, s_r = chunk.gla_reference(q, k, v, g, output_final_state=True)
    assert torch.isfinite(o).all() and torch.isfinite(s).all()
    assert_close(o, o_r, rtol=1e-5)
    assert_close(s, s_r, rtol=1e-5)


def test_output_final_state_false_returns_none():
    q, k, v = make_inputs(SPECS["linear_attention"], 1, 5, 1, 2, 2)
    o, s = chunk.linear_attention(q, k, v)
    assert s is None and o.shape == (1, 5, 1, 2)


def test_native_backend_reports_dtype():
    q, k, v, g = make_inputs(SPECS["gla"], 1, 5, 1, 2, 2)
    with pytest.raises(ValueError, match=r"backend: 'native' supports CPU tensors of dtype"):
        chunk.gla(*(t.to("meta") for t in (q, k, v, g)), backend="native")


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"q": torch.randn(2, 5, 4)}, ValueError, r"q: expected a 4-D tensor \(batch, time"),
        ({"k": torch.randn(2, 5, 3, 5)}, ValueError, r"k: expected the shape of q \(2, 5, 3, 4\)"),
        ({"v": torch.randn(2, 6, 3, 2)}, ValueError, r"v: expected shape \(2, 5, 3, 2\)"),
        ({"g": torch.randn(2, 5, 3, 4)}, ValueError, r"g: expected shape \(2, 5, 3\)"),
        ({"q": torch.ones(2, 5, 3, 4, dtype=torch.long)}, TypeError, r"q: expected a floating"),
        ({"initial_state": torch.zeros(2, 3, 4)}, ValueError, r"initial_state: expected shape"),
        ({"backend": "cuda"}, ValueError, r"backend: expected one of \('auto', 'torch'"),
        ({"chunk_size": 0}, ValueError, r"chunk_size: expected an int >= 1"),
        (
            {"cu_seqlens": torch.tensor([0, 5])},
            ValueError,
            r"cu_seqlens: packed sequences need a batch of size 1",
        ),
    ],
    ids=["q-rank", "k-shape", "v-shape", "g-shape", "q-int", "state", "backend", "chunk", "cu"],
)
def test_bad_input(kwargs, err, match):
    args = {
        "q": torch.randn(2, 5, 3, 4),
        "k": torch.randn(2, 5, 3, 4),
        "v": torch.randn(2, 5, 3, 2),
        "g": torch.randn(2, 5, 3),
    }
    args.update(kwargs)
    q, k, v, g = (args.pop(n) for n in ("q", "k", "v", "g"))
    with pytest.raises(err, match=match):
        chunk.simple_gla(q, k, v, g, **args)


@pytest.mark.parametrize(
    ("cu", "match"),
    [
        (torch.tensor([0, 3, 2, 5]), r"cu_seqlens: expected non-decreasing values from 0 to"),
        (torch.tensor([0, 3, 4]), r"cu_seqlens: expected non-decreasing values from 0 to the"),
        (torch.tensor([0.0, 5.0]), r"cu_seqlens: expected an int64 tensor"),
    ],
)
def test_bad_cu_seqlens(cu, match):
    q = torch.randn(1, 5, 1, 2)
    with pytest.raises((ValueError, TypeError), match=match):
        chunk.linear_attention(q, q, q, cu_seqlens=cu)


@pytest.fixture
def native_disabled(monkeypatch):
    from rnnx import _native

    monkeypatch.setenv("RNNX_NATIVE", "0")
    with _native.preserved():
        _native.reset()
        yield


@pytest.mark.usefixtures("native_disabled")
def test_auto_falls_back_to_pytorch_without_the_native_kernel():
    from rnnx.ops import mlstm as mlstm_ops

    q, k, v, g = make_inputs(SPECS["gla"], 1, 9, 1, 3, 2)
    o, _ = chunk.gla(q, k, v, g, chunk_size=4)
    o_r, _ = chunk.gla_reference(q, k, v, g)
    assert_close(o, o_r, rtol=1e-10)
    with pytest.raises(RuntimeError, match=r"backend: 'native' was requested but the native"):
        chunk.gla(q, k, v, g, backend="native")
    i, f = g[..., 0], g[..., 1]
    h, _ = mlstm_ops.mlstm(q, k, v, i, f, chunk_size=4)
    h_r, _ = mlstm_ops.mlstm_reference(q, k, v, i, f)
    assert_close(h, h_r, rtol=1e-10)
