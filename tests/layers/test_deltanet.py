"""DeltaNet and Gated DeltaNet: the negative-eigenvalue option and options the generated
matrix does not cover."""

from __future__ import annotations

import pytest
import torch

import rnnx.layers as layers
from tests.conftest import assert_close
from tests.layers.test_contract import inputs, random_state, run

NAMES = ["deltanet", "gated_deltanet"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("neg", [False, True])
def test_transition_eigenvalues_range(name, neg):
    """Unit keys: eigenvalue 1 − β of I − β k kᵀ is in [0, 1], or [−1, 1] with
    ``allow_neg_eigval`` (arXiv 2411.12537)."""
    torch.manual_seed(0)
    layer = layers.get(name)(16, allow_neg_eigval=neg)
    with torch.no_grad():
        layer.b_proj.weight.mul_(20)  # spread β over its range
        eig = layer.transition_eigenvalues(3 * torch.randn(4, 50, 16))
    lo = -1.0 if neg else 0.0
    assert (eig >= lo - 1e-5).all() and (eig <= 1 + 1e-5).all()
    if neg:
        assert (eig < -0.5).any(), "the option must reach negative eigenvalues"
    else:
        assert (eig >= -1e-5).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("neg", [False, True])
def test_chunk_matches_recurrent_with_and_without_negative_eigenvalues(name, neg):
    torch.manual_seed(0)
    layer = layers.get(name)(6, num_heads=2, chunk_size=4, allow_neg_eigval=neg).double().eval()
    x, s0 = inputs(), random_state(layer)
    y, s, g = run(layer, x, s0, "chunk")
    y_r, s_r, g_r = run(layer, x, s0, "recurrent")
    assert_close(y, y_r, rtol=1e-9)
    for key in s:
        assert_close(s[key], s_r[key], rtol=1e-9, what=key)
    for (n, a), (_, b) in zip(g, g_r):
        assert_close(a, b, rtol=1e-9, what=n)


@pytest.mark.parametrize("name", NAMES)
def test_options(name):
    layer = layers.get(name)(32, num_heads=2, expand_v=0.5, conv_size=2)
    y, s = layer(torch.randn(2, 7, 32))
    assert y.shape == (2, 7, 32)
    assert s["conv"].shape == (2, 1, 2 * 32 + 16)
    assert s["memory"].shape == (2, 2, 16, 8)
