"""PLSTM2D (arXiv 2506.11997 with rnnx's time edge): what the layer adds to the op.

The generated matrix (tests/layers/test_contract.py) covers the modes against each
other, step vs forward, chunked continuation in every gradient, ``lengths``, dtypes and
torch.compile of the default mode; the op's own tests (tests/ops/test_plstm.py) check
the wavefront against the cell-by-cell oracle. Here: the layer's dependency cone, its
stabilised transitions and the bound on its state, the first frame as the paper's 2-D
pLSTM, compile with ``lengths``, argument errors.
"""

from __future__ import annotations

import pytest
import torch

from rnnx.layers import PLSTM2D
from rnnx.ops.plstm import plstm_2d
from tests.conftest import assert_close


def _layer(mode="wavefront", **kw):
    torch.manual_seed(0)
    return PLSTM2D(4, n_heads=2, d_head=2, mode=mode, **kw).double()


@pytest.mark.parametrize("mode", ["wavefront", "recurrent"])
def test_an_output_depends_on_exactly_the_cells_above_left_and_before(mode):
    """y at (t, i, j) reads x at (t', i', j') iff t' <= t, i' <= i and j' <= j: the
    grid's edges run right and down, the time edge from a pixel to itself."""
    layer = _layer(mode)
    T, H, W = 3, 3, 4
    x = torch.randn(1, T, 4, H, W, dtype=torch.float64, requires_grad=True)
    y, _ = layer(x)
    for t, i, j in [(0, 2, 3), (1, 1, 2), (2, 0, 1), (2, 2, 2)]:
        (g,) = torch.autograd.grad(y[0, t, :, i, j].sum(), x, retain_graph=True)
        reached = g[0].abs().sum(1) > 0  # (T, H, W)
        tt, ii, jj = torch.meshgrid(
            torch.arange(T), torch.arange(H), torch.arange(W), indexing="ij"
        )
        cone = (tt <= t) & (ii <= i) & (jj <= j)
        assert torch.equal(reached, cone), f"cell {(t, i, j)}"


def test_transition_columns_are_a_split_scaled_by_the_retention():
    layer = PLSTM2D(4, n_heads=2, d_head=2, retention=0.8).double()
    x = torch.randn(2, 3, 4, 3, 5, dtype=torch.float64)
    gv = layer.gate_values(x)
    tr = gv["transition"]  # (B, N, T, H, W, outgoing, incoming)
    assert tr.shape == (2, 2, 3, 3, 5, 3, 3) and bool((tr > 0).all())
    columns = tr.sum(-2)
    assert bool((columns < 1).all())
    for name in ("source", "mark", "direct"):
        assert bool(((gv[name] > 0) & (gv[name] < 1)).all()), name
    with torch.no_grad():
        layer.gates.weight.zero_()  # gates from the biases alone: the initial retention
    columns = layer.gate_values(x)["transition"].sum(-2)
    assert_close(columns, torch.full_like(columns, 0.8), rtol=1e-6)  # a float32 bias


def test_state_stays_within_the_bound_of_sub_stochastic_transitions():
    """Every column of T sums to at most λ < 1, so the states sent across any plane
    t + i + j = p sum (in norm) to at most 3 H W κ / (1 - λ), κ the largest ||k v^T||:
    no path sum grows, however long the video. (Loud inputs can saturate σ to 1.0 in
    floating point; then the mass is conserved along the planes and grows at most
    linearly in the number of frames, never exponentially.)"""
    layer = PLSTM2D(4, n_heads=2, d_head=2, retention=0.95).double()
    T, H, W = 60, 3, 4
    x = 3 * torch.randn(2, T, 4, H, W, dtype=torch.float64)
    with torch.no_grad():
        gv = layer.gate_values(x)
    lam = float(gv["transition"].sum(-2).max())
    assert lam < 1
    kappa = float((gv["k"].norm(dim=-1) * gv["v"].norm(dim=-1)).max())
    with torch.no_grad():
        _, state = layer(x)
    per_pixel = state.flatten(2, 3).norm(dim=2)  # (B, N, H, W)
    assert float(per_pixel.max()) <= 3 * H * W * kappa / (1 - lam)
    assert bool(torch.isfinite(state).all())


def test_the_first_frame_from_a_zero_state_is_the_papers_2d_plstm():
    """With nothing carried in, the time edge adds nothing to the first frame's outputs:
    they are the two-edge op (the paper's grid) on the layer's own gates."""
    layer = _layer()
    x = torch.randn(2, 1, 4, 3, 5, dtype=torch.float64)
    y, _ = layer(x)
    gv = layer.gate_values(x)
    two = {
        "source": gv["source"][..., :2],
        "transition": gv["transition"][..., :2, :2],
        "mark": gv["mark"][..., :2],
    }
    h, none = plstm_2d(gv["q"], gv["k"], gv["v"], direct=gv["direct"], **two)
    assert none is None
    want = layer.output(h.permute(0, 2, 3, 4, 1, 5).flatten(-2)).permute(0, 1, 4, 2, 3)
    assert_close(y, want, rtol=1e-12)


def test_compiles_with_lengths_without_a_graph_break():
    layer = _layer().eval()
    x = torch.randn(2, 3, 4, 2, 3, dtype=torch.float64)
    lengths = torch.tensor([3, 1])
    y_ref, s_ref = layer(x, lengths=lengths)
    torch._dynamo.reset()
    y, s = torch.compile(layer, fullgraph=True, backend="aot_eager")(x, lengths=lengths)
    torch._dynamo.reset()
    assert_close(y, y_ref, rtol=1e-12, what="compiled output")
    assert_close(s, s_ref, rtol=1e-12, what="compiled state")


def test_state_shape_and_repr():
    layer = PLSTM2D(8)
    assert (layer.n_heads, layer.d_head) == (4, 2)
    assert layer.init_state(3, size=(5, 7)).shape == (3, 4, 2, 2, 5, 7)
    assert "n_heads=4, d_head=2, mode='wavefront'" in repr(layer)
    assert PLSTM2D.modes == ("recurrent", "wavefront") and PLSTM2D.default_mode == "wavefront"


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"n_heads"):
        PLSTM2D(8, n_heads=0)
    with pytest.raises(ValueError, match=r"d_head"):
        PLSTM2D(8, d_head=-1)
    with pytest.raises(ValueError, match=r"retention: expected a number in \(0, 1\), got 1.0"):
        PLSTM2D(8, retention=1.0)
    with pytest.raises(ValueError, match=r"mode \(of PLSTM2D\)"):
        PLSTM2D(8, mode="scan")
    with pytest.raises(TypeError, match=r"size: a spatial layer's init_state needs"):
        PLSTM2D(8).init_state(2)
