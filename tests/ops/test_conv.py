"""SSM convolution kernels against readable references: the FFT convolution against its
direct-sum oracle (``fft_conv_reference``), Vandermonde, Cauchy (+ Woodbury), Krylov by
squaring; gradients by gradcheck; long sequences stay chunked (no (..., N, L) tensor)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import rnnx.layers as layers
from rnnx.ops import conv
from rnnx.ops.conv import (
    cauchy_kernel,
    causal_conv_fft,
    dplr_bilinear_kernel,
    fft_conv,
    fft_conv_reference,
    krylov,
    krylov_kernel,
    krylov_response,
    krylov_state,
    matrix_power_apply,
    vandermonde_kernel,
    vandermonde_state,
)
from rnnx.ssm.discretize import DPLRStep
from rnnx.ssm.hippo import nplr
from tests.conftest import assert_close

f64, c128 = torch.float64, torch.complex128


@pytest.fixture
def small_chunks(monkeypatch):
    """Force many chunks so that the chunk loops and their joins are exercised."""
    monkeypatch.setattr(conv, "CHUNK_ELEMENTS", 64)


def _direct_conv(u, k, k_rev=None):
    L = u.shape[-1]
    y = torch.zeros(torch.broadcast_shapes(u.shape, (*k.shape[:-1], L)), dtype=f64)
    for t in range(L):
        for s in range(L):
            if s <= t and t - s < k.shape[-1]:
                y[..., t] += k[..., t - s] * u[..., s]
            if k_rev is not None and s >= t and s - t < k_rev.shape[-1]:
                y[..., t] += k_rev[..., s - t] * u[..., s]
    return y


def test_fft_conv_matches_direct_sums():
    u = torch.randn(2, 1, 3, 11, dtype=f64)
    k = torch.randn(4, 3, 11, dtype=f64)
    kr = torch.randn(4, 3, 7, dtype=f64)
    assert_close(fft_conv(u, k), _direct_conv(u, k), rtol=1e-12)
    assert_close(fft_conv(u, k, kr), _direct_conv(u, k, kr), rtol=1e-12)
    assert_close(fft_conv(u, None, kr), _direct_conv(u, 0 * k, kr), rtol=1e-12)


def test_fft_conv_reference_is_the_impulse_response():
    """The oracle itself: an impulse at s returns the kernel from s on (causal) and the
    kernel reversed up to s (anticausal); a unit kernel returns the input."""
    k, kr = torch.randn(3, 5, dtype=f64), torch.randn(3, 4, dtype=f64)
    u = torch.zeros(3, 9, dtype=f64)
    u[:, 2] = 1
    zero = torch.zeros(3, 4, dtype=f64)
    y = fft_conv_reference(u, k)
    assert torch.equal(y, torch.cat([zero[:, :2], k, zero[:, :2]], -1))
    y = fft_conv_reference(u, None, kr)
    assert torch.equal(y, torch.cat([kr[:, :3].flip(-1), zero, zero[:, :2]], -1))
    assert torch.equal(fft_conv_reference(u, k, kr), fft_conv_reference(u, k) + y)
    v = torch.randn(2, 9, 3, dtype=f64)
    one = torch.zeros(3, 4, dtype=f64)
    one[:, 0] = 1
    assert torch.equal(fft_conv_reference(v, one, dim=1), v)
    assert torch.equal(fft_conv_reference(v, None, one, dim=1), v)


def test_fft_conv_reference_matches_the_double_loop():
    """The oracle against the plainest loop over (t, s) pairs, with and without k_rev."""
    u = torch.randn(2, 1, 3, 11, dtype=f64)
    k = torch.randn(4, 3, 11, dtype=f64)
    kr = torch.randn(4, 3, 7, dtype=f64)
    assert_close(fft_conv_reference(u, k), _direct_conv(u, k), rtol=1e-12)
    assert_close(fft_conv_reference(u, k, kr), _direct_conv(u, k, kr), rtol=1e-12)
    assert_close(fft_conv_reference(u[..., :5], k), _direct_conv(u[..., :5], k), rtol=1e-12)


# (u shape, dim, k shape or None, k_rev shape or None): the layouts the layers use (S4D:
# (B, L, H) with a kernel per feature or per sequence; LSSL and S4: (B, L, H, 1) with M
# channels per feature), the last-axis layout, kernels shorter and longer than L,
# broadcasting in both directions, and a 1-D signal.
_CONV_CASES = [
    ((3, 9, 4), 1, (4, 9), None),
    ((3, 9, 4), 1, (4, 9), (4, 9)),
    ((3, 9, 4), -2, (3, 4, 5), (4, 12)),
    ((3, 9, 4, 1), 1, (4, 2, 9), (4, 2, 6)),
    ((2, 1, 3, 11), -1, (4, 3, 11), (4, 3, 7)),
    ((1, 9, 4), 1, (3, 4, 9), None),
    ((2, 3, 8), -1, None, (3, 8)),
    ((9,), 0, (5,), (3,)),
]


def _conv_inputs(case, seed=0):
    g = torch.Generator().manual_seed(seed)
    u_shape, dim, k_shape, kr_shape = case
    u = torch.randn(u_shape, generator=g, dtype=f64)
    k = None if k_shape is None else torch.randn(k_shape, generator=g, dtype=f64)
    kr = None if kr_shape is None else torch.randn(kr_shape, generator=g, dtype=f64)
    return u, k, kr, dim


@pytest.mark.parametrize("slices", ["one", "many"])
@pytest.mark.parametrize("case", _CONV_CASES)
def test_fft_conv_outputs_and_gradients_match_reference(monkeypatch, case, slices):
    """Outputs (contiguous, in the caller's layout) and the gradients of the input and
    of both kernels, against autograd through the direct sums; ``many``: slices of one
    batch row, so the slice loop and the gradient accumulation across slices run."""
    if slices == "many":
        monkeypatch.setattr(conv, "CONV_SLICE_ELEMENTS", 1)
    u, k, kr, dim = _conv_inputs(case)
    leaves = [t.requires_grad_() for t in (u, k, kr) if t is not None]
    y = fft_conv(u, k, kr, dim=dim)
    ref = fft_conv_reference(u, k, kr, dim=dim)
    assert y.shape == ref.shape and y.is_contiguous()
    assert_close(y, ref, rtol=1e-12)
    gy = torch.randn_like(ref)
    got = torch.autograd.grad(y, leaves, gy)
    want = torch.autograd.grad(ref, leaves, gy)
    for a, b in zip(got, want):
        assert_close(a, b, rtol=1e-11)


@pytest.mark.parametrize("case", _CONV_CASES)
def test_fft_conv_gradcheck(monkeypatch, case):
    monkeypatch.setattr(conv, "CONV_SLICE_ELEMENTS", 16)  # a few slices
    u, k, kr, dim = _conv_inputs(case)
    args = [None if t is None else t.requires_grad_() for t in (u, k, kr)]
    assert torch.autograd.gradcheck(lambda u, k, kr: fft_conv(u, k, kr, dim=dim), args)


def test_fft_conv_dtypes():
    """At least float32 (the FFT has no half path); float64 kernels are not rounded."""
    u = torch.randn(2, 9, 3)
    k = torch.randn(3, 9, dtype=f64)
    assert fft_conv(u, k, dim=1).dtype == f64
    assert fft_conv(u.half(), k.float(), dim=1).dtype == torch.float32
    assert causal_conv_fft(u.double(), k).dtype == f64


def test_fft_conv_under_autocast():
    """Under bfloat16 autocast the convolution runs in float32 on the rounded inputs
    (there is no bfloat16 FFT), and the input's gradient comes back in its dtype."""
    u = torch.randn(2, 9, 3).bfloat16().requires_grad_()
    k = torch.randn(3, 9).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fft_conv(u, k, k.flip(-1), dim=1)
    assert y.dtype == torch.float32
    assert_close(y, fft_conv(u.float(), k.float(), k.float().flip(-1), dim=1), rtol=1e-6)
    y.sum().backward()
    assert u.grad.dtype == torch.bfloat16 and torch.isfinite(u.grad.float()).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": None}, "k, k_rev: expected at least one kernel"),
        ({"dim": 3}, "dim: expected an axis of u"),
        ({"k": torch.randn(5, 9)}, "k, k_rev: expected leading dimensions that broadcast"),
        ({"k": torch.randn(4, 0)}, r"k: expected a kernel \(\.\.\., Lk\), Lk >= 1"),
    ],
)
def test_fft_conv_bad_input(kwargs, match):
    args = {"k": torch.randn(4, 9), "dim": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        fft_conv(torch.randn(2, 9, 4), args["k"], dim=args["dim"])


def _vander_inputs(batch=(3,), N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(*batch, N, generator=g, dtype=c128)
    w = torch.complex(
        -torch.rand(*batch, N, generator=g, dtype=f64),
        torch.randn(*batch, N, generator=g, dtype=f64),
    )
    return c, w


@pytest.mark.parametrize("offset", [0, 1])
def test_vandermonde_kernel_matches_reference(small_chunks, offset):
    c, w = _vander_inputs()
    pos = torch.arange(offset, offset + 37, dtype=f64)
    ref = 2 * torch.einsum("hn,hnl->hl", c, torch.exp(w[..., None] * pos)).real
    assert_close(vandermonde_kernel(c, w, 37, offset=offset), ref, rtol=1e-12)


def test_vandermonde_gradients(small_chunks):
    c, w = _vander_inputs()
    assert torch.autograd.gradcheck(
        lambda c, w: vandermonde_kernel(c, w, 29, offset=1),
        (c.requires_grad_(), w.requires_grad_()),
    )
    # broadcast: one base per feature, coefficients per batch element
    cb = torch.randn(2, 3, 5, dtype=c128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c, w: vandermonde_kernel(c, w, 9), (cb, w))


def test_vandermonde_state_matches_reference(small_chunks):
    _, w = _vander_inputs()
    u = torch.randn(2, 3, 37, dtype=f64, requires_grad=True)
    dB = torch.randn(3, 5, dtype=c128)
    pos = torch.arange(36, -1, -1, dtype=f64)
    ref = torch.einsum("bhl,hnl->bhn", u.to(c128), torch.exp(w[..., None] * pos)) * dB
    assert_close(vandermonde_state(u, w, dB), ref, rtol=1e-12)
    assert torch.autograd.gradcheck(
        lambda u, w: vandermonde_state(u, w, dB), (u, w.clone().requires_grad_())
    )


def test_cauchy_kernel_matches_reference_and_gradcheck(small_chunks):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 3, 4, 5, generator=g, dtype=c128, requires_grad=True)
    w = torch.randn(3, 5, generator=g, dtype=c128, requires_grad=True)
    z = torch.randn(2, 3, 11, generator=g, dtype=c128, requires_grad=True)
    s = torch.randn(11, generator=g, dtype=c128, requires_grad=True)
    ref = (v[..., None] / (z[..., None, None, :] - s * w[..., None, :, None])).sum(-2)
    assert_close(cauchy_kernel(v, w, z, zscale=s), ref, rtol=1e-12)
    assert_close(
        cauchy_kernel(v, w, z),
        (v[..., None] / (z[..., None, None, :] - w[..., None, :, None])).sum(-2),
        rtol=1e-12,
    )
    assert torch.autograd.gradcheck(
        lambda v, w, z, s: cauchy_kernel(v, w, z, zscale=s), (v, w, z, s)
    )


def _s4_system(H=2, N=8, M=2, seed=0):
    """A conjugate-symmetric DPLR system (LegS) with its dense real realisation."""
    g = torch.Generator().manual_seed(seed)
    d = nplr("legs", N)
    N2 = N // 2
    Lam = d.Lambda.expand(H, N2).clone()
    P = d.P.expand(H, 1, N2).clone()
    B = d.B.expand(H, N2).clone()
    C = torch.randn(H, M, N2, generator=g, dtype=c128)
    dt = torch.tensor([0.1, 0.03], dtype=f64)[:H]
    eye = torch.eye(N2, dtype=c128)
    basis = torch.cat([eye, 1j * eye])
    step = DPLRStep(
        Lam[:, None], P[:, None], P[:, None], B[:, None], dt[:, None, None], conj_sym=True
    )
    img = step(basis, torch.zeros((), dtype=f64))
    dA = torch.cat([img.real, img.imag], -1).transpose(-1, -2)
    b = DPLRStep(Lam, P, P, B, dt[:, None], conj_sym=True)(
        torch.zeros_like(B), torch.ones((), dtype=f64)
    )
    dB = torch.cat([b.real, b.imag], -1)
    Cr = torch.cat([2 * C.real, -2 * C.imag], -1)
    return Lam, P, B, C, Cr, dt, dA, dB


def _kernel_by_powers(Cr, dA, dB, L):
    return torch.stack(
        [(Cr @ torch.linalg.matrix_power(dA, l) @ dB.unsqueeze(-1))[..., 0] for l in range(L)], -1
    )


@pytest.mark.parametrize("L", [1, 2, 7, 16, 23])
def test_dplr_cauchy_kernel_matches_powers(L):
    """Even L includes z = -1 (a point at infinity of the bilinear map)."""
    Lam, P, B, _, Cr, dt, dA, dB = _s4_system()
    Ct_r = Cr - Cr @ torch.linalg.matrix_power(dA, L)
    N2 = Lam.shape[-1]
    C_tilde = torch.complex(Ct_r[..., :N2], -Ct_r[..., N2:]) / 2
    K = dplr_bilinear_kernel(C_tilde, Lam, P, P, B, dt, L)
    assert_close(K, _kernel_by_powers(Cr, dA, dB, L), rtol=1e-12)


def test_dplr_cauchy_kernel_gradcheck():
    Lam, P, B, C, _, dt, _, _ = _s4_system(H=1, N=4, M=1)
    args = [t.clone().requires_grad_() for t in (C, Lam, P, B, dt)]
    assert torch.autograd.gradcheck(
        lambda C, Lam, P, B, dt: dplr_bilinear_kernel(C, Lam, P, P, B, dt, 6), args
    )


def test_krylov_and_chunked_kernel_match_powers():
    _, _, _, _, Cr, _, dA, dB = _s4_system()
    L = 23
    X = krylov(dA, dB, L)
    ref = torch.stack(
        [(torch.linalg.matrix_power(dA, l) @ dB.unsqueeze(-1))[..., 0] for l in range(L)], -1
    )
    assert_close(X, ref, rtol=1e-12)
    assert_close(
        krylov_kernel(Cr, dA, dB, L, chunk=4), _kernel_by_powers(Cr, dA, dB, L), rtol=1e-12
    )
    # a right vector per batch element: the response to an initial state
    x0 = torch.randn(3, 2, 8, dtype=f64)
    resp = krylov_kernel(Cr, dA, x0, L, chunk=8)
    ref = torch.stack(
        [(Cr @ torch.linalg.matrix_power(dA, l) @ x0.unsqueeze(-1))[..., 0] for l in range(L)], -1
    )
    assert_close(resp, ref, rtol=1e-12)


def test_krylov_response_matches_powers():
    """y_l = C Ā^l x0 for a batch of initial states, shared left factor, chunked."""
    _, _, _, _, Cr, _, dA, _ = _s4_system()
    x0 = torch.randn(3, 2, 8, dtype=f64)
    ref = torch.stack(
        [(Cr @ torch.linalg.matrix_power(dA, l) @ x0.unsqueeze(-1))[..., 0] for l in range(23)], -1
    )
    for chunk in (4, 8, 256):
        assert_close(krylov_response(Cr, dA, x0, 23, chunk=chunk), ref, rtol=1e-12)


def test_krylov_state_and_matrix_power_apply():
    _, _, _, _, _, _, dA, dB = _s4_system()
    u = torch.randn(3, 2, 23, dtype=f64)
    x = torch.zeros(3, 2, 8, dtype=f64)
    for t in range(23):
        x = (dA @ x.unsqueeze(-1)).squeeze(-1) + dB * u[..., t : t + 1]
    assert_close(krylov_state(dA, dB, u, chunk=4), x, rtol=1e-12)
    n = torch.tensor([5, 0, 23])
    x0 = torch.randn(3, 2, 8, dtype=f64)
    ref = torch.stack(
        [
            (torch.linalg.matrix_power(dA, int(k)) @ x0[i].unsqueeze(-1))[..., 0]
            for i, k in enumerate(n)
        ]
    )
    assert_close(matrix_power_apply(dA, n, x0), ref, rtol=1e-12)


def test_krylov_gradients_match_the_loop():
    _, _, _, _, Cr, _, dA, dB = _s4_system()
    dA, dB, Cr = (t.clone().requires_grad_() for t in (dA, dB, Cr))
    K = krylov_kernel(Cr, dA, dB, 13, chunk=4)
    g = torch.autograd.grad(K.square().sum(), (dA, dB, Cr))
    K2 = _kernel_by_powers(Cr, dA, dB, 13)
    g2 = torch.autograd.grad(K2.square().sum(), (dA, dB, Cr))
    for a, b in zip(g, g2):
        assert_close(a, b, rtol=1e-10)


class _LargestStorage(TorchDispatchMode):
    """Records the largest storage (bytes) any op produces: views of a small tensor
    (expand) count as small, a materialised (..., N, L) tensor as large."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("name", ["lssl", "s4", "s4d"])
def test_long_conv_never_materialises_state_by_length(monkeypatch, name):
    """L = 16384: forward and backward of the convolutional view never hold a
    tensor of N x L per feature (the Krylov/Vandermonde/Cauchy paths are chunked)."""
    monkeypatch.setattr(conv, "CHUNK_ELEMENTS", 1 << 16)
    H, N, L = 2, 32, 16384
    torch.manual_seed(0)
    layer = layers.get(name)(H, d_state=N, mode="conv")
    x = torch.randn(1, L, H, requires_grad=True)
    s0 = layer.init_state(1)
    s0 = (s0 + 0.1 * torch.randn_like(s0)).requires_grad_()
    with _LargestStorage() as probe:
        y, s = layer(x, s0)
        (y.square().mean() + s.abs().square().mean()).backward()
    per_feature_state_by_length = H * N * L * 4  # float32 bytes of an (H, N, L) tensor
    assert probe.largest < per_feature_state_by_length / 4, probe.largest
    assert torch.isfinite(x.grad).all() and torch.isfinite(s0.grad).all()
