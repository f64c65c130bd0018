"""The 2-D pLSTM op (arXiv 2506.11997): the wavefront against the cell-by-cell oracle,
gradcheck, closed forms on a grid, and argument errors."""

from __future__ import annotations

import math

import pytest
import torch

from rnnx.ops.plstm import plstm_2d, plstm_2d_reference
from tests.conftest import assert_close

NAMES = ["q", "k", "v", "source", "transition", "mark", "direct"]


def make_args(B, N, T, H, W, K, V, E, *, seed=0, dtype=torch.float64):
    """Random arguments; transitions with column sums up to about 1 (the layer's regime)
    and, for E = 3, a random initial state."""
    g = torch.Generator().manual_seed(seed)
    cells = (B, N, T, H, W)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    def u(*shape):
        return torch.rand(*shape, generator=g, dtype=dtype)

    args = [r(*cells, K), r(*cells, K), r(*cells, V), u(*cells, E), u(*cells, E, E) * 2 / E]
    args += [u(*cells, E), u(*cells)]
    state = r(B, N, H, W, K, V) if E == 3 else None
    return args, state


# (B, N, T, H, W, K, V): non-square frames both ways, single rows and columns, one pixel.
SHAPES = [
    (2, 2, 3, 4, 3, 2, 3),
    (1, 3, 2, 2, 5, 3, 2),
    (2, 1, 4, 1, 4, 2, 2),
    (1, 2, 3, 3, 1, 1, 2),
    (2, 1, 2, 1, 1, 2, 1),
]


@pytest.mark.parametrize("E", [2, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_wavefront_matches_cell_by_cell_reference(shape, E):
    args, state = make_args(*shape, E)
    args = [a.requires_grad_() for a in args]
    wrt = list(args)
    if state is not None:
        state.requires_grad_()
        wrt.append(state)
    y, z = plstm_2d(*args, state)
    y_ref, z_ref = plstm_2d_reference(*args, state)
    assert_close(y, y_ref, rtol=1e-12, what="y")
    g = torch.Generator().manual_seed(5)
    gy = torch.randn(y.shape, generator=g, dtype=y.dtype)
    loss, loss_ref = (y * gy).sum(), (y_ref * gy).sum()
    if E == 3:
        assert_close(z, z_ref, rtol=1e-12, what="final state")
        gz = torch.randn(z.shape, generator=g, dtype=z.dtype)
        loss, loss_ref = loss + (z * gz).sum(), loss_ref + (z_ref * gz).sum()
    else:
        assert z is None and z_ref is None
    # allow_unused: on a one-pixel grid without a time edge the sources feed no one
    got = torch.autograd.grad(loss, wrt, allow_unused=True)
    want = torch.autograd.grad(loss_ref, wrt, allow_unused=True)
    for name, a, b, w in zip([*NAMES, "state"], got, want, wrt):
        a, b = (torch.zeros_like(w) if t is None else t for t in (a, b))
        assert_close(a, b, rtol=1e-11, what=f"gradient of {name}")


def test_state_none_is_a_zero_state():
    args, state = make_args(2, 2, 3, 3, 4, 2, 2, 3)
    y0, z0 = plstm_2d(*args)
    y1, z1 = plstm_2d(*args, torch.zeros_like(state))
    assert_close(y0, y1, rtol=0)
    assert_close(z0, z1, rtol=0)


@pytest.mark.parametrize(
    ("fn", "shape"),
    [(plstm_2d, (1, 2, 2, 2, 3, 2, 2)), (plstm_2d_reference, (1, 1, 2, 2, 2, 2, 1))],
    ids=["wavefront", "reference"],
)
@pytest.mark.parametrize("E", [2, 3])
def test_gradcheck(fn, shape, E):
    args, state = make_args(*shape, E, seed=3)
    inputs = [a.requires_grad_() for a in args]
    if state is not None:
        inputs.append(state.requires_grad_())

    def f(*xs):
        y, z = fn(*xs[:7], xs[7] if len(xs) > 7 else None)
        return (y,) if z is None else (y, z)

    assert torch.autograd.gradcheck(f, tuple(inputs))


@pytest.mark.parametrize("E", [2, 3])
def test_frames_in_pieces_with_the_state_carried_equal_one_call(E):
    """E = 3: the time edge out of frames [0, s) is the state into [s, T). E = 2: frames
    are independent grids, so any split gives the same outputs."""
    args, state = make_args(2, 2, 5, 3, 4, 2, 3, E, seed=4)
    y, z = plstm_2d(*args, state)
    for split in (1, 3):
        y1, z1 = plstm_2d(*(a[:, :, :split] for a in args), state)
        y2, z2 = plstm_2d(*(a[:, :, split:] for a in args), z1)
        assert_close(torch.cat([y1, y2], 2), y, rtol=1e-12, what=f"outputs split at {split}")
        if E == 3:
            assert_close(z2, z, rtol=1e-12, what=f"final state split at {split}")


def _grid_of_ones(H, W, t_value):
    """One frame, one head, d_key = d_value = 1, q = k = v = 1; a source only at the
    top-left cell (both edges), every transition ``t_value``, marks 1, no direct term."""
    cells = (1, 1, 1, H, W)
    ones = torch.ones(*cells, 1, dtype=torch.float64)
    source = torch.zeros(*cells, 2, dtype=torch.float64)
    source[..., 0, 0, :] = 1.0
    transition = torch.full((*cells, 2, 2), t_value, dtype=torch.float64)
    mark = torch.ones(*cells, 2, dtype=torch.float64)
    direct = torch.zeros(*cells, dtype=torch.float64)
    return ones, ones, ones, source, transition, mark, direct


def test_unit_transitions_count_the_paths_of_the_grid():
    """With every transition 1 the state reaching cell (i, j) from the top-left corner is
    the number of monotone lattice paths, binomial(i + j, i): the combinatorial growth
    the paper's stabilisation is about."""
    H, W = 5, 6
    y, _ = plstm_2d(*_grid_of_ones(H, W, 1.0))
    want = torch.tensor(
        [[0.0 if i == j == 0 else float(math.comb(i + j, i)) for j in range(W)] for i in range(H)],
        dtype=torch.float64,
    )
    assert_close(y[0, 0, 0, :, :, 0], want, rtol=0)


def test_split_transitions_conserve_the_mass_on_every_antidiagonal():
    """With each incoming state split half right, half down (columns summing to 1, as in
    the paper's P-mode), the states sent across every anti-diagonal sum to the source."""
    H, W = 7, 7
    y, _ = plstm_2d(*_grid_of_ones(H, W, 0.5))
    read = y[0, 0, 0, :, :, 0]  # the two incoming states' sum, per cell
    for d in range(1, H):  # diagonals that lie inside the frame entirely
        cells = [read[i, d - i] for i in range(d + 1)]
        # each cell receives the half sent right from its left and down from its top
        assert_close(torch.stack(cells).sum(), torch.tensor(2.0, dtype=torch.float64), rtol=1e-12)


def test_errors_name_the_argument():
    args, state = make_args(1, 2, 2, 3, 4, 2, 2, 3)
    q, k, v, source, transition, mark, direct = args
    with pytest.raises(ValueError, match=r"q: expected \(batch, heads, frames, height"):
        plstm_2d(q[0], k, v, source, transition, mark, direct)
    with pytest.raises(ValueError, match=r"k: expected the shape of q"):
        plstm_2d(q, k[..., :1], v, source, transition, mark, direct)
    with pytest.raises(ValueError, match=r"v: expected \(1, 2, 2, 3, 4, d_value\)"):
        plstm_2d(q, k, v[:, :1], source, transition, mark, direct)
    with pytest.raises(ValueError, match=r"source: expected .*E = 2 edges"):
        plstm_2d(q, k, v, source[..., :1], transition, mark, direct)
    with pytest.raises(ValueError, match=r"transition: expected \(1, 2, 2, 3, 4, 3, 3\)"):
        plstm_2d(q, k, v, source, transition[..., :2], mark, direct)
    with pytest.raises(ValueError, match=r"mark: expected \(1, 2, 2, 3, 4, 3\)"):
        plstm_2d(q, k, v, source, transition, mark[..., :2], direct)
    with pytest.raises(ValueError, match=r"direct: expected \(1, 2, 2, 3, 4\)"):
        plstm_2d(q, k, v, source, transition, mark, direct[..., None])
    with pytest.raises(ValueError, match=r"state: expected \(1, 2, 3, 4, 2, 2\)"):
        plstm_2d(q, k, v, source, transition, mark, direct, state[:, :, :1])
    two = (source[..., :2], transition[..., :2, :2], mark[..., :2])
    with pytest.raises(ValueError, match=r"state: the incoming time-edge state needs E = 3"):
        plstm_2d(q, k, v, *two, direct, state)
    with pytest.raises(TypeError, match=r"mark: expected a floating-point tensor"):
        plstm_2d(q, k, v, source, transition, mark.long(), direct)
    with pytest.raises(TypeError, match=r"direct: expected a tensor, got float"):
        plstm_2d(q, k, v, source, transition, mark, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"v: expected"):  # the oracle checks the same
        plstm_2d_reference(q, k, v[:, :1], source, transition, mark, direct)


def test_autocast_runs_in_float32():
    args, state = make_args(1, 1, 2, 2, 3, 2, 2, 3, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, z = plstm_2d(*(a.bfloat16() for a in args), state)
    assert y.dtype == torch.float32 and z is not None and z.dtype == torch.float32
