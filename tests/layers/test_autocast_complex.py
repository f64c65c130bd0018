"""Every layer under autocast with CUDA's rules, on the CPU.

CPU and CUDA autocast do not cast the same ops: CPU autocast runs ``view_as_complex``
(and a few more) in float32, CUDA autocast leaves it alone, so a bfloat16 matrix product
fed into it works on the CPU and fails on a GPU ("view_as_complex is only supported for
half, float and double tensors, but got BFloat16"). :class:`CudaComplexRules` raises that
error on the CPU, for the ops that build or transform complex numbers, before CPU
autocast gets a chance to cast; every layer and mode must train through it. States that
are complex stay complex64 (complex128 with float64 parameters).
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

import rnnx.layers as layers
from rnnx._tree import leaves

_LOW = (torch.bfloat16, torch.float16)
_COMPLEX_OPS = {
    torch.view_as_complex,
    torch.complex,
    torch.polar,
    torch.fft.fft,
    torch.fft.ifft,
    torch.fft.rfft,
    torch.fft.irfft,
    torch.fft.fftn,
    torch.fft.ifftn,
    torch.fft.rfftn,
    torch.fft.irfftn,
}


class CudaComplexRules(TorchFunctionMode):
    """Refuse low-precision inputs to complex ops, as CUDA (under autocast) does."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _COMPLEX_OPS:
            for a in (*args, *kwargs.values()):
                if isinstance(a, torch.Tensor) and a.dtype in _LOW:
                    raise RuntimeError(
                        f"{func.__name__} got {a.dtype}: not supported on CUDA (CudaComplexRules)"
                    )
        return func(*args, **kwargs)


def _modes():
    out = []
    for name in layers.names("sequence"):
        for mode in layers.get(name).modes:
            out.append(pytest.param(name, mode, id=f"{name}-{mode}"))
    return out


def test_the_rules_catch_the_cuda_failure():
    x = torch.randn(3, 4)
    with CudaComplexRules(), pytest.raises(RuntimeError, match=r"view_as_complex got .*bfloat16"):
        torch.view_as_complex(x.bfloat16().view(3, 2, 2))


@pytest.mark.parametrize(("name", "mode"), _modes())
def test_trains_under_bf16_autocast_with_cuda_rules(name, mode):
    torch.manual_seed(0)
    cls = layers.get(name)
    layer = cls(16, **cls.tiny_config())
    layer.mode = mode
    x = torch.randn(2, 11, 16)
    _, s32 = layer(x)
    with CudaComplexRules(), torch.autocast("cpu", dtype=torch.bfloat16):
        y, s = layer(x)
        loss = y.float().square().mean() + sum(t.abs().mean() for t in leaves(s))
    loss.backward()
    for a, b in zip(leaves(s), leaves(s32), strict=True):
        assert a.dtype == b.dtype
    grads = [p.grad for p in layer.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
