"""rnnx.ops.delta: the delta rule and the gated delta rule (WY/UT chunked form).

The chunked form against the recurrent reference (outputs, final state, every gradient
incl. the initial state's) at several chunk sizes and lengths that are no multiple of
them, with β in [0, 2] (negative eigenvalues); packed vs padded; float64 gradcheck; a
long sequence; dtypes; the eigenvalue property that lets β = 2 count modulo 2.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnx.ops import delta
from tests.conftest import assert_close
from tests.ops.linear_family import (
    OpSpec,
    check_chunk_matches_reference,
    check_dtypes,
    check_gradcheck,
    check_long,
    check_packed,
    plain_state,
)


def _beta(B, T, H, K, g, dtype):
    return (2 * torch.rand(B, T, H, generator=g, dtype=dtype),)  # [0, 2]: eigenvalues in [-1, 1]


def _decay_beta(B, T, H, K, g, dtype):
    decay = F.logsigmoid(2 + torch.randn(B, T, H, generator=g, dtype=dtype))
    return (decay, *_beta(B, T, H, K, g, dtype))


SPECS = {
    "delta_rule": OpSpec("delta_rule", delta.delta_rule, _beta, plain_state, unit_keys=True),
    "gated_delta_rule": OpSpec(
        "gated_delta_rule", delta.gated_delta_rule, _decay_beta, plain_state, unit_keys=True
    ),
}
NAMES = list(SPECS)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("chunk_size", "T"), [(16, 41), (32, 75), (64, 100), (64, 1)])
def test_chunk_matches_reference(name, chunk_size, T):
    check_chunk_matches_reference(SPECS[name], "torch", chunk_size, T, rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_reference(name):
    check_chunk_matches_reference(SPECS[name], "torch", 16, 50, dtype=torch.float32, rtol=2e-4)


@pytest.mark.parametrize("name", NAMES)
def test_packed_matches_reference_and_padded(name):
    check_packed(SPECS[name], "torch")
    check_packed(SPECS[name], "torch", lens=(3, 9), with_state=False)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck(name):
    check_gradcheck(SPECS[name], "torch")


@pytest.mark.parametrize("name", NAMES)
def test_long_sequence(name):
    check_long(SPECS[name], ["torch"], 8192, grads=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_long_sequence_gradients(name):
    check_long(SPECS[name], ["torch"], 8192, grads=True)


@pytest.mark.parametrize("name", NAMES)
def test_dtypes(name):
    check_dtypes(SPECS[name], "torch")


def test_beta_zero_is_the_identity_and_decay_scales():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, 2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    s0 = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64)
    zero = torch.zeros(2, 9, 2, dtype=torch.float64)
    _, s = delta.delta_rule(q, k, v, zero, initial_state=s0, output_final_state=True)
    assert_close(s, s0, rtol=0)
    decay = torch.full((2, 9, 2), -0.1, dtype=torch.float64)
    _, s = delta.gated_delta_rule(
        q, k, v, decay, zero, initial_state=s0, output_final_state=True, chunk_size=4
    )
    assert_close(s, s0 * torch.exp(torch.tensor(-0.9, dtype=torch.float64)), rtol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_beta_two_counts_modulo_two(backend):
    """With a fixed unit key and β_t = 2·x_t the transition is a reflection when x_t = 1:
    the memory along k is (−1)^(number of ones) times its start, i.e. the parity, which
    β in [0, 1] (eigenvalues in [0, 1]) cannot produce (arXiv 2411.12537)."""
    g = torch.Generator().manual_seed(1)
    T, K = 37, 4
    bits = torch.randint(0, 2, (3, T), generator=g).double()
    key = F.normalize(torch.randn(K, generator=g, dtype=torch.float64), dim=0)
    k = key.expand(3, T, 1, K).contiguous()
    v = torch.zeros(3, T, 1, 1, dtype=torch.float64)  # writes nothing: only the transition acts
    s0 = key.view(1, 1, K, 1).expand(3, 1, K, 1).contiguous()
    o, _ = delta.delta_rule(
        k, k, v, 2 * bits.unsqueeze(-1), initial_state=s0, output_final_state=True,
        chunk_size=8, scale=1.0, backend=backend,
    )  # fmt: skip
    parity = torch.cumsum(bits, 1) % 2
    assert_close(o[..., 0, 0], 1 - 2 * parity, rtol=1e-12)
    # with β in [0, 1] the read-out never changes sign
    o01, _ = delta.delta_rule(
        k, k, v, bits.unsqueeze(-1), initial_state=s0, chunk_size=8, scale=1.0, backend=backend
    )
    assert (o01[..., 0, 0] >= -1e-12).all()


def test_bad_beta_shape():
    q = torch.randn(2, 5, 3, 4)
    with pytest.raises(ValueError, match=r"beta: expected shape \(2, 5, 3\), got \(2, 5\)"):
        delta.delta_rule(q, q, q, torch.rand(2, 5))
