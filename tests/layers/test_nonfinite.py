"""NaN in, NaN out: every layer and mode with its native kernels against its PyTorch path.

An input with a NaN, a +inf and a -inf goes through every registered layer in every mode
with checks off, once on the native kernels (where the layer has them) and once on the
PyTorch paths (``RNNX_NATIVE=0``). Outputs and final states must agree: NaN where the
PyTorch path has NaN (a kernel whose min/max clamps drop NaN returns a finite number),
the same infinities, the finite values close. float32 runs the kernels' vectorised
(AVX2) math, float64 their scalar math.
"""

from __future__ import annotations

import pytest
import torch

import rnnx
import rnnx.layers as layers
from rnnx import _native
from rnnx._tree import leaves

D = 6

CASES = [
    pytest.param(name, mode, id=f"{name}-{mode}")
    for name in layers.names("sequence")
    for mode in layers.get(name).modes
]

needs_native = pytest.mark.skipif(
    not all(_native.available(n) for n in _native.LIBRARIES), reason="native kernels unavailable"
)


def _bad_input(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 12, D, generator=g, dtype=torch.float64)
    x[0, 4, 1] = float("nan")
    x[1, 6, 2] = float("inf")
    x[2, 8, 0] = float("-inf")
    return x.to(dtype)


def _run(layer, x, mode):
    with torch.no_grad(), rnnx.checks(finite=False), layer.using_mode(mode):
        y, state = layer(x)
    return [y, *leaves(state)]


@needs_native
@pytest.mark.filterwarnings("ignore::rnnx.ops.newton.NewtonWarning")  # NaN: no convergence
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("name", "mode"), CASES)
def test_nan_and_inf_propagate_as_on_the_pytorch_path(name, mode, dtype, monkeypatch):
    torch.manual_seed(0)
    cls = layers.get(name)
    layer = cls(D, **cls.tiny_config()).to(dtype).eval()
    x = _bad_input(dtype)
    native = _run(layer, x, mode)
    monkeypatch.setenv("RNNX_NATIVE", "0")  # the same layer on its PyTorch paths
    reference = _run(layer, x, mode)
    rtol = 1e-4 if dtype == torch.float32 else 1e-9
    for i, (got, want) in enumerate(zip(native, reference)):
        what = "output" if i == 0 else f"final state leaf {i - 1}"
        assert torch.equal(got.isnan(), want.isnan()), (
            f"{what}: NaN at {int(got.isnan().sum())} entries with native kernels, at "
            f"{int(want.isnan().sum())} on the PyTorch path"
        )
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol, equal_nan=True,
                                   msg=lambda m, what=what: f"{what}: {m}")  # fmt: skip


CUDNN = [
    n
    for n in layers.names("sequence")
    if getattr(layers.get(n)(D), "cudnn_supported", lambda: False)()
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", CUDNN)
def test_nan_and_inf_propagate_through_the_cudnn_backend(name, dtype):
    """torch's fused RNN op (the ``"cudnn"`` backend; torch's CPU loop here) against
    rnnx's PyTorch reference loop."""
    torch.manual_seed(0)
    cls = layers.get(name)
    layer = cls(D, **cls.tiny_config()).to(dtype).eval()
    x = _bad_input(dtype)
    layer.backend = "cudnn"
    got = _run(layer, x, layer.mode)
    layer.backend = "torch"
    want = _run(layer, x, layer.mode)
    rtol = 1e-4 if dtype == torch.float32 else 1e-9
    for i, (g, w) in enumerate(zip(got, want)):
        what = "output" if i == 0 else f"final state leaf {i - 1}"
        assert torch.equal(g.isnan(), w.isnan()), f"{what}: NaN differs"
        torch.testing.assert_close(g, w, rtol=rtol, atol=rtol, equal_nan=True)
