"""rnnx.ops.selective_scan: every backend against the recurrent reference, packed sequences,
negative eigenvalues, gradcheck, memory kept for backward, errors."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from rnnx import RnnxWarning, _native
from rnnx.ops.selective_scan import selective_scan, selective_scan_reference
from tests.conftest import assert_close, native_available, with_native

ss_module = sys.modules["rnnx.ops.selective_scan"]

FAST = with_native(["torch", "native"], "selective_scan")
FAST_HERE = ["torch", *(["native"] if native_available("selective_scan") else [])]
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]


def _case(batch=2, L=37, dim=12, N=5, groups=1, dtype=torch.float64, seed=0):
    """Random inputs in Mamba's regime: A < 0, Δ = softplus(delta + bias) around 0.1-1."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    return {
        "u": r(batch, L, dim).to(dtype),
        "delta": (r(batch, L, dim) - 1).to(dtype),
        "A": (-torch.exp(0.5 * r(dim, N))).to(dtype),
        "B": r(batch, L, groups, N).to(dtype),
        "C": r(batch, L, groups, N).to(dtype),
        "D": r(dim).to(dtype),
        "z": r(batch, L, dim).to(dtype),
        "delta_bias": (0.3 * r(dim)).to(dtype),
        "initial_state": r(batch, dim, N).to(dtype),
    }


def _run(inputs, *, backend, with_grad=True, **options):
    leaves = {k: (v.clone().requires_grad_() if with_grad else v) for k, v in inputs.items()}
    fn = selective_scan_reference if backend == "reference" else selective_scan
    kw = {} if backend == "reference" else {"backend": backend}
    if backend == "reference":
        options.pop("chunk_size", None)
    out, last = fn(
        leaves["u"],
        leaves["delta"],
        leaves["A"],
        leaves["B"],
        leaves["C"],
        leaves.get("D"),
        leaves.get("z"),
        delta_bias=leaves.get("delta_bias"),
        delta_softplus=True,
        initial_state=leaves.get("initial_state"),
        output_final_state=True,
        **options,
        **kw,
    )
    if not with_grad:
        return out, last, {}
    g = torch.Generator().manual_seed(7)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    loss = loss + (last * torch.randn(last.shape, generator=g, dtype=last.dtype)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return out, last, dict(zip(leaves, grads))


def _assert_match(got, ref, rtol, what):
    out, last, grads = got
    out_r, last_r, grads_r = ref
    assert_close(out, out_r, rtol=rtol, what=f"{what}: output")
    assert_close(last, last_r, rtol=rtol, what=f"{what}: final state")
    for name in grads_r:
        assert_close(grads[name], grads_r[name], rtol=rtol, what=f"{what}: gradient of {name}")


# ------------------------------------------------------------------ equivalence

_REFERENCE: dict = {}  # the reference run of test_backend_matches_reference, per option


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("chunk_size", [16, 32, 64])
@pytest.mark.parametrize("negative", [False, True], ids=["pos", "neg"])
def test_backend_matches_reference(backend, chunk_size, negative):
    """Outputs, final state and every gradient; L = 100 is no multiple of the chunk."""
    inputs = _case(L=100, groups=2, dim=12)
    opts = {"negative_eigenvalues": negative}
    if negative not in _REFERENCE:
        _REFERENCE[negative] = _run(inputs, backend="reference", **opts)
    ref = _REFERENCE[negative]
    got = _run(inputs, backend=backend, chunk_size=chunk_size, **opts)
    _assert_match(got, ref, 1e-10, f"{backend} chunk {chunk_size}")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize(
    ("L", "dim", "N", "groups"), [(1, 3, 1, 1), (9, 70, 4, 1), (41, 136, 3, 4)]
)
def test_shapes_lengths_and_channel_blocks(backend, L, dim, N, groups):
    """Length 1, channel counts that are no multiple of the kernel's blocks, groups."""
    inputs = _case(L=L, dim=dim, N=N, groups=groups, batch=3)
    _assert_match(
        _run(inputs, backend=backend, chunk_size=16),
        _run(inputs, backend="reference"),
        1e-10,
        backend,
    )


@pytest.mark.parametrize("backend", FAST)
def test_optional_arguments_absent(backend):
    """No D, z, bias, softplus or initial state; B, C given as (batch, length, N)."""
    c = _case(L=29)
    args = (c["u"], F.softplus(c["delta"]), c["A"], c["B"][:, :, 0], c["C"][:, :, 0])
    out, last = selective_scan(*args, output_final_state=True, backend=backend)
    out_r, last_r = selective_scan_reference(*args, output_final_state=True)
    assert_close(out, out_r, rtol=1e-12)
    assert_close(last, last_r, rtol=1e-12)
    out2, none = selective_scan(*args, backend=backend)
    assert none is None and torch.equal(out2, out)


@pytest.mark.parametrize("backend", FAST)
def test_float32_matches_float64_reference(backend):
    c = _case(L=300, dim=40, N=16)
    out_r, last_r, _ = _run(c, backend="reference", with_grad=False)
    c32 = {k: v.float() for k, v in c.items()}
    out, last, _ = _run(c32, backend=backend, with_grad=False)
    assert out.dtype == torch.float32 and last.dtype == torch.float32
    assert_close(out.double(), out_r, rtol=2e-5)
    assert_close(last.double(), last_r, rtol=2e-5)


def test_bfloat16_inputs_give_bfloat16_output_and_float32_state():
    c = {k: v.to(torch.bfloat16) for k, v in _case(L=10).items()}
    out, last, _ = _run(c, backend="auto", with_grad=False)
    assert out.dtype == torch.bfloat16 and last.dtype == torch.float32


def test_long_sequence_forward():
    """T = 8192 in one call: no drift between the kernels and the reference recurrence."""
    c = _case(batch=1, L=8192, dim=8, N=4)
    ref_out, ref_last, _ = _run(c, backend="reference", with_grad=False)
    assert torch.isfinite(ref_out).all()
    for backend in FAST_HERE:
        out, last, _ = _run(c, backend=backend, with_grad=False)
        assert_close(out, ref_out, rtol=1e-10, what=backend)
        assert_close(last, ref_last, rtol=1e-10, what=backend)


@pytest.mark.parametrize("backend", [*FAST, "reference"])
@pytest.mark.parametrize("negative", [False, True], ids=["pos", "neg"])
def test_gradcheck_float64(backend, negative):
    c = _case(batch=2, L=7, dim=4, N=3, groups=2)
    names = list(c)

    def f(*xs):
        kw = dict(zip(names, xs))
        fn = selective_scan_reference if backend == "reference" else selective_scan
        extra = {} if backend == "reference" else {"backend": backend, "chunk_size": 3}
        out, last = fn(
            kw["u"],
            kw["delta"],
            kw["A"],
            kw["B"],
            kw["C"],
            kw["D"],
            kw["z"],
            delta_bias=kw["delta_bias"],
            delta_softplus=True,
            initial_state=kw["initial_state"],
            output_final_state=True,
            negative_eigenvalues=negative,
            **extra,
        )
        return out, last

    xs = [c[k].clone().requires_grad_() for k in names]
    # the full Jacobian for the (cheap) native kernel, random projections for the others
    fast = backend != "native"
    assert torch.autograd.gradcheck(f, xs, eps=1e-6, atol=1e-7, fast_mode=fast)


# ------------------------------------------------------------------ packed sequences


def _pack(c, lengths):
    """Concatenate the first lengths[i] steps of batch row i along time (batch 1)."""
    out = {}
    for k in ("u", "delta", "B", "C", "z"):
        out[k] = torch.cat([c[k][i, :n] for i, n in enumerate(lengths)]).unsqueeze(0)
    for k in ("A", "D", "delta_bias", "initial_state"):
        out[k] = c[k]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64)
    return out, cu


@pytest.mark.parametrize("backend", [*FAST, "reference"])
def test_packed_equals_padded_and_separate(backend):
    """cu_seqlens (packed) == a padded batch with Δ = 0 on padding == one call per sequence,
    in outputs, final states and gradients; an empty sequence keeps its initial state."""
    lengths = [13, 0, 40, 7]
    c = _case(batch=4, L=40, dim=10, N=3)
    packed, cu = _pack(c, lengths)
    p_out, p_last, p_grads = _run(packed, backend=backend, cu_seqlens=cu, chunk_size=16)
    assert p_out.shape == (1, sum(lengths), 10) and p_last.shape == (4, 10, 3)
    assert torch.equal(p_last[1], c["initial_state"][1])

    # padded: the layer's way. Δ computed outside the op and zeroed on padding.
    mask = torch.arange(40)[None, :] < torch.tensor(lengths)[:, None]
    dt = torch.where(mask[..., None], F.softplus(c["delta"] + c["delta_bias"]), 0.0)
    pad_out, pad_last = selective_scan(
        c["u"],
        dt,
        c["A"],
        c["B"],
        c["C"],
        c["D"],
        c["z"],
        initial_state=c["initial_state"],
        output_final_state=True,
        backend=backend,
    )
    assert_close(p_out[0], pad_out[mask], rtol=1e-12, what="packed vs padded outputs")
    assert_close(p_last, pad_last, rtol=1e-12, what="packed vs padded final states")

    # separately, gradient by gradient
    start = 0
    for i, n in enumerate(lengths):
        one = {k: c[k][i : i + 1, :n] for k in ("u", "delta", "B", "C", "z")}
        one.update(A=c["A"], D=c["D"], delta_bias=c["delta_bias"])
        one["initial_state"] = c["initial_state"][i : i + 1]
        if n == 0:
            continue
        o, last, _ = _run(one, backend="reference", with_grad=False)
        assert_close(p_out[0, start : start + n], o[0], rtol=1e-12, what=f"sequence {i}")
        assert_close(p_last[i], last[0], rtol=1e-12, what=f"sequence {i} state")
        start += n
    ref = _run(packed, backend="reference", cu_seqlens=cu)
    _assert_match((p_out, p_last, p_grads), ref, 1e-10, f"packed {backend}")


@pytest.mark.parametrize("backend", [*FAST, "reference"])
def test_minus_infinity_delta_is_an_exact_no_op(backend):
    """Mamba's padding: delta = -inf gives Δ = softplus(-inf) = 0, so those steps leave the
    state exactly as it was (also in float32, where the kernel's exp flushes to 0), and
    every gradient stays finite."""
    c = {k: v.float() for k, v in _case(L=27, dim=10, N=4).items()}
    c["delta"][:, 20:] = -torch.inf
    c["u"][:, 20:] = 1e3
    out, last, grads = _run(c, backend=backend)
    short = {k: (v[:, :20] if v.dim() >= 3 and v.shape[1] == 27 else v) for k, v in c.items()}
    out20, last20, _ = _run(short, backend=backend, with_grad=False)
    assert torch.equal(last, last20)
    assert_close(out[:, :20], out20, rtol=1e-6)
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
    assert torch.all(grads["delta"][:, 20:] == 0)


def test_cu_seqlens_is_checked():
    c = _case(batch=2, L=10)
    args = (c["u"], c["delta"], c["A"], c["B"], c["C"])
    with pytest.raises(ValueError, match="cu_seqlens: packed sequences need a batch of 1"):
        selective_scan(*args, cu_seqlens=torch.tensor([0, 5, 10]))
    one = (c["u"][:1], c["delta"][:1], c["A"], c["B"][:1], c["C"][:1])
    with pytest.raises(ValueError, match="cu_seqlens: expected non-decreasing offsets from 0"):
        selective_scan(*one, cu_seqlens=torch.tensor([0, 6, 5, 10]))
    with pytest.raises(ValueError, match=r"cu_seqlens: expected a 1-D int64 tensor"):
        selective_scan(*one, cu_seqlens=torch.tensor([0.0, 10.0]))
    with pytest.raises(ValueError, match=r"initial_state: expected shape \(2, 12, 5\)"):
        selective_scan(*one, cu_seqlens=torch.tensor([0, 4, 10]), initial_state=c["A"])


# ------------------------------------------------------------------ negative eigenvalues


@pytest.mark.parametrize("backend", [*FAST, "reference"])
def test_negative_eigenvalues_track_parity(backend):
    """With transitions in (-1, 1] one channel computes parity exactly: Δ_t = 0 for a 0 bit
    (Ā = 1) and Δ_t large for a 1 bit (Ā = 2e^{-ΔA} - 1 ≈ -1), so sign(h_T) = (-1)^{#ones}.
    With transitions in (0, 1] and no input the state can never change sign."""
    g = torch.Generator().manual_seed(3)
    bits = torch.randint(0, 2, (64, 25), generator=g).double()
    batch, L = bits.shape
    u = torch.zeros(batch, L, 1, dtype=torch.float64)
    dt = 30.0 * bits.unsqueeze(-1)
    A = -torch.ones(1, 1, dtype=torch.float64)
    B = torch.zeros(batch, L, 1, dtype=torch.float64)
    h0 = torch.ones(batch, 1, 1, dtype=torch.float64)
    kw = {"initial_state": h0, "output_final_state": True}
    if backend != "reference":
        kw["backend"] = backend
    fn = selective_scan_reference if backend == "reference" else selective_scan
    _, h_neg = fn(u, dt, A, B, B, negative_eigenvalues=True, **kw)
    _, h_pos = fn(u, dt, A, B, B, negative_eigenvalues=False, **kw)
    parity = bits.sum(1) % 2
    assert torch.equal((h_neg[:, 0, 0] < 0).double(), parity)
    assert_close(h_neg[:, 0, 0].abs(), torch.ones(batch, dtype=torch.float64), rtol=1e-10)
    assert (h_pos >= 0).all()


def test_negative_eigenvalue_transition_range():
    """Ā = 2 exp(ΔA) - 1 spans (-1, 1]: negative for ΔA < -log 2, 1 at Δ = 0."""
    dt = torch.tensor([[[0.0], [0.5], [1.0], [5.0]]], dtype=torch.float64)  # (1, 4, 1)
    A = torch.tensor([[-1.0]], dtype=torch.float64)
    u = torch.zeros_like(dt)
    B = torch.zeros(1, 4, 1, dtype=torch.float64)
    h = torch.ones(1, 1, 1, dtype=torch.float64)
    values = []
    for t in range(4):  # one step at a time: h_t / h_{t-1} is the transition
        _, h_new = selective_scan(
            u[:, t : t + 1],
            dt[:, t : t + 1],
            A,
            B[:, t : t + 1],
            B[:, t : t + 1],
            initial_state=h,
            output_final_state=True,
            negative_eigenvalues=True,
        )
        values.append(float(h_new / h))
        h = h_new
    expected = [2 * torch.exp(-dt[0, t, 0]).item() - 1 for t in range(4)]
    assert values == pytest.approx(expected, rel=1e-12)
    assert values[0] == 1.0 and values[-1] < -0.98


# ------------------------------------------------------------------ memory and dispatch


@pytest.mark.parametrize("backend", FAST)
def test_backward_keeps_no_state_per_step(backend):
    """Autograd keeps the inputs and the states at chunk boundaries, never (B, L, D, N)."""
    c = _case(batch=2, L=512, dim=16, N=32, dtype=torch.float32)
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    leaves = {k: v.requires_grad_() for k, v in c.items()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _run(leaves, backend=backend, with_grad=False, chunk_size=64)
    full = 2 * 512 * 16 * 32
    largest_input = max(v.numel() for v in c.values())
    assert max(saved) <= largest_input, f"a saved tensor of {max(saved)} numbers"
    assert sum(saved) < full / 2, f"saved {sum(saved)} numbers, the states are {full}"


def test_auto_picks_native_on_cpu_when_built():
    if not ss_module.native_available():
        pytest.skip("native kernel unavailable here")
    c = _case(dtype=torch.float32)
    a, _, _ = _run(c, backend="auto", with_grad=False)
    b, _, _ = _run(c, backend="native", with_grad=False)
    assert torch.equal(a, b)


def test_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNX_NATIVE", "1")
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    monkeypatch.setenv("RNNX_CACHE_DIR", str(tmp_path))
    with _native.preserved():
        _native.reset()
        c = _case(L=20)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out, _, _ = _run(c, backend="auto", with_grad=False)
            _run(c, backend="auto", with_grad=False)
        ours = [w for w in record if issubclass(w.category, RnnxWarning)]
        assert any("'selective_scan' could not be built" in str(w.message) for w in ours)
        assert sum("'selective_scan'" in str(w.message) for w in ours) == 1
        assert_close(out, _run(c, backend="reference", with_grad=False)[0], rtol=1e-12)
        with pytest.raises(RuntimeError, match="native selective-scan kernel is unavailable"):
            _run(c, backend="native", with_grad=False)


@pytest.mark.parametrize(
    ("change", "err", "match"),
    [
        ({"u": torch.randn(2, 5)}, ValueError, r"u: expected a floating-point tensor \(batch"),
        ({"delta": torch.randn(2, 5, 4)}, ValueError, r"delta: expected .* shape \(2, 5, 3\)"),
        ({"A": torch.randn(4, 2)}, ValueError, r"A: expected a real tensor \(3, d_state\)"),
        ({"B": torch.randn(2, 5, 2, 2)}, ValueError, r"B: expected \(2, 5, 2\) or"),
        ({"C": torch.randn(2, 5, 3)}, ValueError, r"C: expected the shape of B"),
        ({"D": torch.randn(4)}, ValueError, r"D: expected a floating-point tensor of shape \(3,\)"),
        ({"z": torch.randn(2, 4, 3)}, ValueError, r"z: expected .* shape \(2, 5, 3\)"),
        ({"initial_state": torch.randn(2, 3)}, ValueError, r"initial_state: expected shape"),
        ({"B": torch.ones(2, 5, 2, dtype=torch.int64)}, TypeError, "B: expected a floating"),
        ({"D": torch.ones(3, device="meta")}, ValueError, "D: expected device cpu like u"),
        ({"backend": "gpu"}, ValueError, "backend: expected one of"),
        ({"chunk_size": 0}, ValueError, "chunk_size: expected an int >= 1"),
    ],
)
def test_bad_arguments(change, err, match):
    args = {
        "u": torch.randn(2, 5, 3),
        "delta": torch.rand(2, 5, 3),
        "A": -torch.rand(3, 2),
        "B": torch.randn(2, 5, 2),
        "C": torch.randn(2, 5, 2),
        "D": None,
        "z": None,
    }
    kwargs = {}
    for k, v in change.items():
        (args if k in args else kwargs)[k] = v
    with pytest.raises(err, match=match):
        selective_scan(*args.values(), **kwargs)


def test_native_rejects_other_devices():
    args = [torch.empty(1, 3, 2, device="meta")] * 2 + [torch.empty(2, 2, device="meta")]
    args += [torch.empty(1, 3, 2, device="meta")] * 2
    with pytest.raises(ValueError, match="backend: 'native' supports CPU tensors"):
        selective_scan(*args, backend="native")
