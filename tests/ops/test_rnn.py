"""rnnx.ops.rnn: the fused native kernel against the readable reference, every cell.

Outputs, final states and every gradient (gx, the recurrent weights, GRU's b_hn and each
initial state) agree; float64 gradcheck of each fused kernel; lengths, reverse, heads,
strided inputs; dispatch and fallback.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from rnnx import _native
from rnnx._checks import RnnxWarning
from rnnx._native import ops as native_ops
from rnnx.ops import rnn as rnn_ops
from rnnx.ops.rnn import CELLS, native_rnn_available, rnn_sequence, state_names
from tests.conftest import assert_close

needs_native = pytest.mark.skipif(not native_rnn_available(), reason="native kernel unavailable")


def make_inputs(cell, B, T, H, heads, dtype, seed=0, time_major=False):
    g = torch.Generator().manual_seed(seed)
    G = rnn_ops.num_gates(cell)
    if time_major:  # a (B, T, GH) view of time-major storage, as the layers pass it
        gx = torch.randn(T, B, G * H, generator=g, dtype=dtype).transpose(0, 1)
    else:
        gx = torch.randn(B, T, G * H, generator=g, dtype=dtype)
    DH = H // heads
    w = torch.randn(G * H, DH, generator=g, dtype=dtype) / DH**0.5
    state = [torch.randn(B, H, generator=g, dtype=dtype) for _ in state_names(cell)]
    if cell == "slstm":  # a reachable state: n > 0
        state[2] = state[2].abs() + 0.5
    bias = torch.randn(H, generator=g, dtype=dtype) if cell == "gru" else None
    return gx, w, tuple(state), bias


def run(cell, inputs, backend, *, lengths=None, reverse=False, heads=1, seed=5):
    gx, w, state, bias = inputs
    gx = gx.detach().requires_grad_()
    w = w.detach().requires_grad_()
    state = tuple(s.detach().requires_grad_() for s in state)
    bias = None if bias is None else bias.detach().requires_grad_()
    y, final = rnn_sequence(
        cell,
        gx,
        w,
        state,
        bias_hn=bias,
        lengths=lengths,
        reverse=reverse,
        num_heads=heads,
        backend=backend,
    )
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    for f in final:
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=f.dtype)).sum()
    wrt = [gx, w, *state] + ([bias] if bias is not None else [])
    grads = torch.autograd.grad(loss, wrt)
    return y, final, grads


CASES = [  # B, T, H, heads: partial vector blocks, heads, odd sizes
    (3, 7, 6, 1),
    (5, 9, 20, 2),
    (13, 6, 37, 1),
    (4, 5, 16, 4),
]


@needs_native
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("B", "T", "H", "heads"), CASES)
def test_native_matches_reference(cell, dtype, B, T, H, heads):
    rtol = 1e-10 if dtype == torch.float64 else 2e-5
    g = torch.Generator().manual_seed(B * T)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    for reverse, lens, time_major in [(False, None, False), (True, lengths, True)]:
        inputs = make_inputs(cell, B, T, H, heads, dtype, time_major=time_major)
        y, s, gr = run(cell, inputs, "native", lengths=lens, reverse=reverse, heads=heads)
        y_r, s_r, gr_r = run(cell, inputs, "torch", lengths=lens, reverse=reverse, heads=heads)
        what = f"{cell} reverse={reverse} lengths={lens is not None}"
        assert_close(y, y_r, rtol=rtol, what=f"{what} outputs")
        for name, a, b in zip(state_names(cell), s, s_r):
            assert_close(a, b, rtol=rtol, what=f"{what} final {name}")
        names = ["gx", "weight_hh", *[f"initial {n}" for n in state_names(cell)], "bias_hn"]
        for name, a, b in zip(names, gr, gr_r):
            assert_close(a, b, rtol=rtol, what=f"{what} gradient of {name}")


@needs_native
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    ("reverse", "use_lengths", "heads"),
    [(False, False, 1), (True, True, 2)],
    ids=["plain", "reverse-lengths-heads"],
)
def test_gradcheck_native(cell, reverse, use_lengths, heads):
    B, T, H = 2, 4, 4
    gx, w, state, bias = make_inputs(cell, B, T, H, heads, torch.float64, seed=3)
    lengths = torch.tensor([4, 2]) if use_lengths else None

    def f(gx, w, *rest):
        n = len(state)
        y, final = rnn_sequence(
            cell,
            gx,
            w,
            tuple(rest[:n]),
            bias_hn=rest[n] if len(rest) > n else None,
            lengths=lengths,
            reverse=reverse,
            num_heads=heads,
            backend="native",
        )
        return (y, *final)

    args = [gx, w, *state] + ([bias] if bias is not None else [])
    args = [a.clone().requires_grad_() for a in args]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-6)


@needs_native
def test_padding_carries_the_state_and_blocks_gradients():
    """Steps at t >= lengths[b] change nothing, forward or backward."""
    gx, w, state, _ = make_inputs("lstm", 2, 6, 8, 1, torch.float64)
    lengths = torch.tensor([6, 3])
    y, final, grads = run("lstm", (gx, w, state, None), "native", lengths=lengths)
    _, final3, _ = run("lstm", (gx[1:, :3], w, tuple(s[1:] for s in state), None), "native")
    assert_close(final[0][1], final3[0][0], rtol=1e-12, what="h after 3 steps")
    assert_close(final[1][1], final3[1][0], rtol=1e-12, what="c after 3 steps")
    assert torch.all(grads[0][1, 3:] == 0), "padded steps get no gradient"
    assert torch.equal(y[1, 3:], y[1, 2:3].expand(3, -1)), "y carries h through padding"


@needs_native
def test_no_grad_path_equals_autograd_path():
    gx, w, state, bias = make_inputs("gru", 4, 9, 12, 3, torch.float32)
    with torch.no_grad():
        y0, s0 = rnn_sequence("gru", gx, w, state, bias_hn=bias, num_heads=3)
    y1, s1 = rnn_sequence("gru", gx.requires_grad_(), w, state, bias_hn=bias, num_heads=3)
    assert torch.equal(y0, y1.detach()) and torch.equal(s0[0], s1[0].detach())


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_nan_and_inf_propagate_like_the_reference(cell, dtype):
    """NaN in, NaN out: the kernels' clamps and maxima keep NaN (vectorised float32 and
    scalar float64 math alike); infinities and finite values as the reference."""
    gx, w, state, bias = make_inputs(cell, 3, 9, 20, 1, dtype)
    gx = gx.clone()
    gx[0, 2, 5] = float("nan")  # a gate of unit 5
    gx[1, 4, :] = float("inf")
    gx[2, 6, 3::7] = float("-inf")
    with torch.no_grad():
        y, final = rnn_sequence(cell, gx, w, state, bias_hn=bias, backend="native")
        y_ref, final_ref = rnn_sequence(cell, gx, w, state, bias_hn=bias, backend="torch")
    assert y_ref.isnan().any()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for got, want, what in [(y, y_ref, "y"), *zip(final, final_ref, state_names(cell))]:
        assert torch.equal(got.isnan(), want.isnan()), f"{cell} {what}: NaN positions differ"
        torch.testing.assert_close(got, want, rtol=tol, atol=tol, equal_nan=True)


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("policy", [-1, 0, 1], ids=["auto", "units", "batch"])
def test_thread_partitions_agree_bitwise(threads, policy, monkeypatch):
    """However the threads share a step, every number is the same."""
    gx, w, state, _ = make_inputs("lstm", 8, 5, 256, 1, torch.float32)
    ref = run("lstm", (gx, w, state, None), "native")
    old = torch.get_num_threads()
    monkeypatch.setattr(native_ops, "RNN_THREAD_POLICY", policy)
    try:
        torch.set_num_threads(threads)
        got = run("lstm", (gx, w, state, None), "native")
    finally:
        torch.set_num_threads(old)
    assert torch.equal(got[0], ref[0])
    for a, b in zip(got[2], ref[2]):
        assert torch.equal(a, b)


def test_reference_backend_runs_other_dtypes():
    gx, w, state, _ = make_inputs("slstm", 2, 3, 4, 2, torch.bfloat16)
    y, final = rnn_sequence("slstm", gx, w, state, num_heads=2, backend="auto")
    assert y.dtype == torch.bfloat16 and len(final) == 4


def test_native_backend_refuses_unsupported_dtype():
    gx, w, state, _ = make_inputs("lstm", 2, 3, 4, 1, torch.bfloat16)
    with pytest.raises(ValueError, match=r"backend: 'native' supports CPU float32/float64"):
        rnn_sequence("lstm", gx, w, state, backend="native")


def test_fallback_warns_once_and_matches(monkeypatch):
    """If the kernel cannot be built, auto runs the reference after one RnnxWarning."""
    gx, w, state, _ = make_inputs("lstm", 2, 5, 6, 1, torch.float64)
    expected = rnn_sequence("lstm", gx, w, state, backend="torch")
    monkeypatch.setenv("RNNX_NATIVE", "1")
    monkeypatch.setattr(_native, "_build", lambda name: (_ for _ in ()).throw(OSError("no cc")))
    with _native.preserved():
        _native.reset()
        with pytest.warns(RnnxWarning, match="native CPU kernel 'rnn' could not be built"):
            y, s = rnn_sequence("lstm", gx, w, state)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rnn_sequence("lstm", gx, w, state)  # no second warning
        with pytest.raises(RuntimeError, match="backend: 'native' was requested"):
            rnn_sequence("lstm", gx, w, state, backend="native")
    assert_close(y, expected[0], rtol=1e-12, what="fallback outputs")
    for a, b in zip(s, expected[1]):
        assert_close(a, b, rtol=1e-12, what="fallback final state")


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"cell": "lstn"}, ValueError, r"cell: expected one of"),
        ({"gx": torch.zeros(2, 3, 7)}, ValueError, r"gx: expected last dimension G\*H = 4\*4"),
        ({"weight_hh": torch.zeros(16, 3)}, ValueError, r"weight_hh: expected shape \(16, 4\)"),
        ({"state": (torch.zeros(2, 4),)}, TypeError, r"state: expected a tuple of 2 tensors"),
        ({"state": (torch.zeros(3, 4),) * 2}, ValueError, r"state\[h\]: expected shape \(2, 4\)"),
        ({"num_heads": 3}, ValueError, r"num_heads: 3 does not divide the hidden size 4"),
        ({"bias_hn": torch.zeros(4)}, ValueError, r"bias_hn: only the 'gru' cell"),
        ({"lengths": torch.tensor([1.0, 2.0])}, ValueError, r"lengths: expected an int64"),
        ({"backend": "gpu"}, ValueError, r"backend: expected one of"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    args = {
        "cell": "lstm",
        "gx": torch.zeros(2, 3, 16),
        "weight_hh": torch.zeros(16, 4),
        "state": (torch.zeros(2, 4), torch.zeros(2, 4)),
    }
    args.update(kwargs)
    cell, gx, w, state = (args.pop(k) for k in ("cell", "gx", "weight_hh", "state"))
    with pytest.raises(err, match=match):
        rnn_sequence(cell, gx, w, state, **args)
