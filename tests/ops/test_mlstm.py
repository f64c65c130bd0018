"""rnnx.ops.mlstm: the stabilised mLSTM cell of xLSTM, recurrent and chunked.

The chunked form computes the stabiliser m of the recurrence exactly, so outputs, the
stabilised states (C, n, m), the de-stabilised memories C·e^m, n·e^m and every gradient
(the initial state's included) agree with the recurrent reference; packed vs padded;
float64 gradcheck; a long sequence; dtypes; large input gates stay finite.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from rnnx.ops import mlstm as mlstm_ops
from tests.conftest import assert_close, backends_here, with_native, with_native_pairs
from tests.ops.linear_family import (
    OpSpec,
    check_chunk_matches_reference,
    check_dtypes,
    check_gradcheck,
    check_long,
    check_packed,
    make_inputs,
)


def _sigmoid_gates(B, T, H, K, g, dtype):
    i = 2 * torch.randn(B, T, H, generator=g, dtype=dtype)
    f = 2 + 2 * torch.randn(B, T, H, generator=g, dtype=dtype)
    return i, f


def _exp_gates(B, T, H, K, g, dtype):
    i = 2 * torch.randn(B, T, H, generator=g, dtype=dtype)
    f = -F.softplus(torch.randn(B, T, H, generator=g, dtype=dtype) - 2)  # log f <= 0
    return i, f


def _state(n, H, K, V, g, dtype):
    C = torch.randn(n, H, K, V, generator=g, dtype=dtype)
    nrm = torch.randn(n, H, K, generator=g, dtype=dtype)
    m = torch.randn(n, H, generator=g, dtype=dtype)
    return C, nrm, m


SPECS = {
    "sigmoid": OpSpec("mlstm-sigmoid", mlstm_ops.mlstm, _sigmoid_gates, _state),
    "exp": OpSpec(
        "mlstm-exp", functools.partial(mlstm_ops.mlstm, forget_gate="exp"), _exp_gates, _state
    ),
}
NAMES = list(SPECS)
# (forget gate, backend): the pure-PyTorch chunked form and the native intra-chunk kernel
CASES = [(n, b) for n in NAMES for b in ("torch", "native")]


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
@pytest.mark.parametrize(("chunk_size", "T"), [(16, 41), (32, 75), (64, 100), (64, 1)])
def test_chunk_matches_reference(name, backend, chunk_size, T):
    check_chunk_matches_reference(SPECS[name], backend, chunk_size, T, rtol=1e-9)


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
def test_float32_matches_reference(name, backend):
    check_chunk_matches_reference(SPECS[name], backend, 16, 50, dtype=torch.float32, rtol=5e-4)


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
def test_packed_matches_reference_and_padded(name, backend):
    check_packed(SPECS[name], backend)
    check_packed(SPECS[name], backend, lens=(3, 9), with_state=False)


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
def test_gradcheck(name, backend):
    check_gradcheck(SPECS[name], backend)


@pytest.mark.parametrize("name", NAMES)
def test_long_sequence(name):
    check_long(SPECS[name], backends_here(["torch", "native"], "chunk"), 8192, grads=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_long_sequence_gradients(name):
    check_long(SPECS[name], backends_here(["torch", "native"], "chunk"), 8192, grads=True)


@pytest.mark.parametrize(("name", "backend"), with_native_pairs(CASES, "chunk"))
def test_dtypes(name, backend):
    check_dtypes(SPECS[name], backend)


@pytest.mark.parametrize("backend", with_native(["torch", "native"], "chunk"))
def test_destabilised_memories_agree(backend):
    """C·e^m and n·e^m (the memories without the stabiliser) agree, not only (C, n, m)."""
    spec = SPECS["sigmoid"]
    q, k, v, i, f = make_inputs(spec, 2, 45, 2, 4, 3)
    kw = {"output_final_state": True}
    _, (C, n, m) = mlstm_ops.mlstm(q, k, v, i, f, chunk_size=8, backend=backend, **kw)
    _, (C_r, n_r, m_r) = mlstm_ops.mlstm_reference(q, k, v, i, f, **kw)
    assert_close(C * m.exp()[..., None, None], C_r * m_r.exp()[..., None, None], rtol=1e-10)
    assert_close(n * m.exp()[..., None], n_r * m_r.exp()[..., None], rtol=1e-10)


@pytest.mark.parametrize("backend", with_native(["torch", "native", "reference"], "chunk"))
def test_large_input_gates_stay_finite_in_float32(backend):
    """Input gates e^{80}: without the stabiliser C would overflow float32."""
    spec = SPECS["sigmoid"]
    q, k, v, i, f = make_inputs(spec, 1, 40, 2, 4, 3)
    i = 80 + 5 * i
    h, (C, n, m) = mlstm_ops.mlstm(
        *(t.float() for t in (q, k, v, i, f)), output_final_state=True, chunk_size=16,
        backend=backend,
    )  # fmt: skip
    h64, _ = mlstm_ops.mlstm_reference(q, k, v, i, f, output_final_state=True)
    assert torch.isfinite(h).all() and torch.isfinite(C).all() and torch.isfinite(n).all()
    assert (m > 60).all()
    assert_close(h.double(), h64, rtol=1e-4)


def test_without_stabiliser_the_formula_is_plain():
    """With small gates, h_t = Σ f·i k vᵀ q / max(|Σ f·i kᵀ q|, 1): the unstabilised mLSTM."""
    spec = SPECS["sigmoid"]
    q, k, v, i, f = make_inputs(spec, 1, 6, 1, 3, 2)
    h, _ = mlstm_ops.mlstm(q, k, v, i, f, eps=0.0, chunk_size=4)
    logf = F.logsigmoid(f)[0, :, 0]
    ig = i[0, :, 0].exp()
    scale = 3**-0.5
    for t in range(6):
        w = torch.stack([ig[j] * torch.exp(logf[j + 1 : t + 1].sum()) for j in range(t + 1)])
        qk = (k[0, : t + 1, 0] @ q[0, t, 0]) * scale
        num = (w * qk) @ v[0, : t + 1, 0]
        den = torch.clamp((w * qk).sum().abs(), min=1.0)
        assert_close(h[0, t, 0], num / den, rtol=1e-10)


def test_bad_input():
    q = torch.randn(2, 5, 3, 4)
    gates = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match=r"forget_gate: expected one of \('sigmoid', 'exp'\)"):
        mlstm_ops.mlstm(q, q, q, gates, gates, forget_gate="tanh")
    with pytest.raises(TypeError, match=r"initial_state: expected a tuple \(C, n, m\)"):
        mlstm_ops.mlstm(q, q, q, gates, gates, initial_state=torch.zeros(2, 3, 4, 4))
    bad = (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"initial_state\[2\] \(m\): expected shape \(2, 3\)"):
        mlstm_ops.mlstm(q, q, q, gates, gates, initial_state=bad)
    missing = (torch.zeros(2, 3, 4, 4), None, torch.zeros(2, 3))
    with pytest.raises(
        TypeError, match=r"initial_state\[1\] \(n\): expected a torch.Tensor, got NoneType"
    ):
        mlstm_ops.mlstm(q, q, q, gates, gates, initial_state=missing)
    with pytest.raises(ValueError, match=r"i: expected shape \(2, 5, 3\)"):
        mlstm_ops.mlstm(q, q, q, gates[..., :2], gates)
