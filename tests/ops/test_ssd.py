"""rnnx.ops.ssd: the chunked SSD algorithm against the recurrence, packed sequences,
gradcheck, numerical range, memory kept for backward, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rnnx.ops.ssd import ssd, ssd_reference
from tests.conftest import assert_close


def _case(batch=2, L=37, H=4, P=3, N=5, groups=1, dtype=torch.float64, seed=0, d_shape="head"):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "x": r(batch, L, H, P).to(dtype),
        "dt": (r(batch, L, H) - 1).to(dtype),
        "A": (-torch.exp(r(H))).to(dtype),
        "B": r(batch, L, groups, N).to(dtype),
        "C": r(batch, L, groups, N).to(dtype),
        "D": (r(H) if d_shape == "head" else r(H, P)).to(dtype),
        "dt_bias": (0.3 * r(H)).to(dtype),
        "initial_state": r(batch, H, P, N).to(dtype),
    }


def _call(c, *, backend, chunk_size=64, **options):
    fn = ssd_reference if backend == "reference" else ssd
    kw = {} if backend == "reference" else {"backend": backend, "chunk_size": chunk_size}
    return fn(
        c["x"],
        c["dt"],
        c["A"],
        c["B"],
        c["C"],
        c.get("D"),
        dt_bias=c.get("dt_bias"),
        dt_softplus=True,
        initial_state=c.get("initial_state"),
        output_final_state=True,
        **options,
        **kw,
    )


def _run(c, *, backend, with_grad=True, **options):
    leaves = {k: (v.clone().requires_grad_() if with_grad else v) for k, v in c.items()}
    y, last = _call(leaves, backend=backend, **options)
    if not with_grad:
        return y, last, {}
    g = torch.Generator().manual_seed(7)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    loss = loss + (last * torch.randn(last.shape, generator=g, dtype=last.dtype)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return y, last, dict(zip(leaves, grads))


def _assert_match(got, ref, rtol, what):
    assert_close(got[0], ref[0], rtol=rtol, what=f"{what}: output")
    assert_close(got[1], ref[1], rtol=rtol, what=f"{what}: final state")
    for name in ref[2]:
        assert_close(got[2][name], ref[2][name], rtol=rtol, what=f"{what}: gradient of {name}")


@pytest.mark.parametrize("chunk_size", [16, 32, 64])
@pytest.mark.parametrize("L", [100, 37])
def test_chunked_matches_reference(chunk_size, L):
    """Outputs, final state and all gradients (initial state included); no length here is
    a multiple of the chunk size."""
    c = _case(L=L, groups=2, H=4)
    ref = _run(c, backend="reference")
    _assert_match(
        _run(c, backend="torch", chunk_size=chunk_size), ref, 1e-10, f"chunk {chunk_size}"
    )


@pytest.mark.parametrize(
    ("L", "H", "P", "N", "groups", "d_shape"),
    [(1, 1, 1, 1, 1, "head"), (64, 6, 2, 3, 3, "channel"), (65, 2, 4, 8, 1, "channel")],
)
def test_shapes(L, H, P, N, groups, d_shape):
    c = _case(L=L, H=H, P=P, N=N, groups=groups, d_shape=d_shape, batch=3)
    _assert_match(
        _run(c, backend="torch", chunk_size=16), _run(c, backend="reference"), 1e-10, "shape"
    )


def test_optional_arguments_absent():
    c = _case(L=29)
    args = (c["x"], F.softplus(c["dt"]), c["A"], c["B"][:, :, 0], c["C"][:, :, 0])
    y, last = ssd(*args, output_final_state=True, chunk_size=8)
    y_r, last_r = ssd_reference(*args, output_final_state=True)
    assert_close(y, y_r, rtol=1e-12)
    assert_close(last, last_r, rtol=1e-12)
    y2, none = ssd(*args, chunk_size=8)
    assert none is None and torch.equal(y2, y)


def test_float32_with_fast_decay_matches_float64_reference():
    """Steps with Δ·A down to about -100: the segment sums keep float32 decays accurate."""
    c = _case(L=300, H=4, P=8, N=16)
    c["A"] = torch.tensor([-0.01, -1.0, -20.0, -60.0], dtype=torch.float64)
    y_r, last_r, _ = _run(c, backend="reference", with_grad=False)
    c32 = {k: v.float() for k, v in c.items()}
    y, last, _ = _run(c32, backend="torch", with_grad=False, chunk_size=64)
    assert y.dtype == torch.float32 and last.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert_close(y.double(), y_r, rtol=2e-5)
    assert_close(last.double(), last_r, rtol=2e-5)


def test_long_sequence_forward():
    c = _case(batch=1, L=8192, H=2, P=2, N=4)
    y_r, last_r, _ = _run(c, backend="reference", with_grad=False)
    y, last, _ = _run(c, backend="torch", with_grad=False, chunk_size=64)
    assert_close(y, y_r, rtol=1e-10)
    assert_close(last, last_r, rtol=1e-10)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_gradcheck_float64(backend):
    c = _case(batch=2, L=7, H=2, P=2, N=3, groups=2)
    names = list(c)

    def f(*xs):
        return _call(dict(zip(names, xs)), backend=backend, chunk_size=3)

    xs = [c[k].clone().requires_grad_() for k in names]
    assert torch.autograd.gradcheck(f, xs, eps=1e-6, atol=1e-7, fast_mode=backend == "torch")


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_packed_equals_padded_and_separate(backend):
    lengths = [13, 0, 40, 7]
    c = _case(batch=4, L=40, H=2, P=3, N=4)
    packed = {k: c[k] for k in ("A", "D", "dt_bias", "initial_state")}
    for k in ("x", "dt", "B", "C"):
        packed[k] = torch.cat([c[k][i, :n] for i, n in enumerate(lengths)]).unsqueeze(0)
    cu = torch.tensor([0, 13, 13, 53, 60])
    p_y, p_last, p_grads = _run(packed, backend=backend, cu_seqlens=cu, chunk_size=16)
    assert p_y.shape == (1, 60, 2, 3) and torch.equal(p_last[1], c["initial_state"][1])

    mask = torch.arange(40)[None, :] < torch.tensor(lengths)[:, None]
    dt = torch.where(mask[..., None], F.softplus(c["dt"] + c["dt_bias"]), 0.0)
    y_pad, last_pad = ssd(
        c["x"],
        dt,
        c["A"],
        c["B"],
        c["C"],
        c["D"],
        initial_state=c["initial_state"],
        output_final_state=True,
        backend=backend,
        chunk_size=16,
    )
    assert_close(p_y[0], y_pad[mask], rtol=1e-12, what="packed vs padded outputs")
    assert_close(p_last, last_pad, rtol=1e-12, what="packed vs padded states")
    start = 0
    for i, n in enumerate(lengths):
        if n == 0:
            continue
        one = {k: c[k][i : i + 1, :n] for k in ("x", "dt", "B", "C")}
        one.update(A=c["A"], D=c["D"], dt_bias=c["dt_bias"])
        one["initial_state"] = c["initial_state"][i : i + 1]
        y, last, _ = _run(one, backend="reference", with_grad=False)
        assert_close(p_y[0, start : start + n], y[0], rtol=1e-12, what=f"sequence {i}")
        assert_close(p_last[i], last[0], rtol=1e-12, what=f"sequence {i} state")
        start += n
    _assert_match(
        (p_y, p_last, p_grads),
        _run(packed, backend="reference", cu_seqlens=cu),
        1e-10,
        "packed",
    )


def test_backward_keeps_no_state_per_step():
    """Autograd keeps the inputs, the (L x chunk) decay matrices and the chunk states,
    never a (P x N) state per step."""
    c = _case(batch=2, L=512, H=2, P=16, N=16, dtype=torch.float32)
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    leaves = {k: v.requires_grad_() for k, v in c.items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _call(leaves, backend="torch", chunk_size=16)
    per_step_states = 2 * 512 * 2 * 16 * 16
    assert max(saved) <= per_step_states / 8, f"a saved tensor of {max(saved)} numbers"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            {"x": torch.randn(2, 5, 3)},
            r"x: expected a floating-point tensor \(batch, length, heads",
        ),
        ({"dt": torch.randn(2, 5, 3)}, r"dt: expected a floating-point tensor \(2, 5, 2\)"),
        ({"A": torch.randn(2, 2)}, r"A: expected a real tensor \(2,\)"),
        ({"B": torch.randn(2, 5, 3, 4)}, r"B: expected \(2, 5, d_state\) or"),
        ({"C": torch.randn(2, 5, 3)}, r"C: expected the shape of B"),
        ({"D": torch.randn(3)}, r"D: expected a floating-point tensor \(2,\) or \(2, 3\)"),
        ({"initial_state": torch.randn(2, 2, 3)}, r"initial_state: expected a floating-point"),
        ({"chunk_size": 0}, "chunk_size: expected an int >= 1"),
        ({"backend": "native"}, "backend: expected one of"),
    ],
)
def test_bad_arguments(change, match):
    args = {
        "x": torch.randn(2, 5, 2, 3),
        "dt": torch.rand(2, 5, 2),
        "A": -torch.rand(2),
        "B": torch.randn(2, 5, 4),
        "C": torch.randn(2, 5, 4),
        "D": None,
    }
    kwargs = {}
    for k, v in change.items():
        (args if k in args else kwargs)[k] = v
    with pytest.raises(ValueError, match=match):
        ssd(*args.values(), **kwargs)
