"""rnnx.ops.selective_scan_chunk (Mamba's ``"chunk"`` mode) against the recurrent reference.

Outputs, final state and the gradient of every input (initial state included) at chunk
sizes that do and do not divide the length, with groups, negative eigenvalues, packed
sequences and without an initial state; gradcheck in float64; float32; autocast.
"""

from __future__ import annotations

import pytest
import torch

from rnnx.ops.selective_scan import selective_scan_reference
from rnnx.ops.selective_scan_chunk import selective_scan_chunk
from tests.conftest import assert_close
from tests.ops.test_selective_scan import NAMES, _case


def _run(fn, inputs, **options):
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
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
    )
    g = torch.Generator().manual_seed(9)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    loss = loss + (last * torch.randn(last.shape, generator=g, dtype=last.dtype)).sum()
    names = [n for n in NAMES if n in leaves]
    grads = torch.autograd.grad(loss, [leaves[n] for n in names])
    return out, last, dict(zip(names, grads, strict=True))


def _compare(inputs, rtol=1e-10, chunk_options=None, ref_options=None):
    ref = _run(selective_scan_reference, inputs, **(ref_options or {}))
    got = _run(selective_scan_chunk, inputs, **(chunk_options or {}))
    assert_close(got[0], ref[0], rtol=rtol, what="outputs")
    assert_close(got[1], ref[1], rtol=rtol, what="final state")
    for name, g in ref[2].items():
        assert_close(got[2][name], g, rtol=rtol, what=f"gradient of {name}")


@pytest.mark.parametrize("chunk_size", [1, 4, 8, 37, 64])
@pytest.mark.parametrize("groups", [1, 3])
def test_matches_the_reference(chunk_size, groups):
    _compare(_case(groups=groups), chunk_options={"chunk_size": chunk_size})


def test_negative_eigenvalues():
    opts = {"negative_eigenvalues": True}
    _compare(_case(), chunk_options={**opts, "chunk_size": 8}, ref_options=opts)


def test_without_initial_state():
    inputs = _case()
    del inputs["initial_state"]
    _compare(inputs, chunk_options={"chunk_size": 8})


def test_packed_sequences():
    inputs = _case(batch=1, L=30)
    inputs["initial_state"] = torch.randn(3, 12, 5, dtype=torch.float64)
    cu = torch.tensor([0, 11, 11, 30])
    _compare(
        inputs, chunk_options={"chunk_size": 8, "cu_seqlens": cu}, ref_options={"cu_seqlens": cu}
    )


def test_gradcheck_float64():
    inputs = _case(batch=2, L=7, dim=4, N=3, groups=2)
    names = list(inputs)

    def fn(*ts):
        d = dict(zip(names, ts, strict=True))
        out, last = selective_scan_chunk(
            d["u"], d["delta"], d["A"], d["B"], d["C"], d["D"], d["z"],
            delta_bias=d["delta_bias"], delta_softplus=True, initial_state=d["initial_state"],
            output_final_state=True, chunk_size=3,
        )  # fmt: skip
        return out, last

    ts = [inputs[n].clone().requires_grad_() for n in names]
    assert torch.autograd.gradcheck(fn, ts, atol=1e-7)


def test_float32_and_autocast():
    inputs = {k: v.float() for k, v in _case().items()}
    ref = _run(selective_scan_reference, inputs)
    got = _run(selective_scan_chunk, inputs, chunk_size=16)
    assert_close(got[0], ref[0], rtol=1e-4, what="outputs")
    assert_close(got[1], ref[1], rtol=1e-4, what="final state")
    for name, g in ref[2].items():
        assert_close(got[2][name], g, rtol=1e-3, what=f"gradient of {name}")
    args = (inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"])
    kw = {"delta_softplus": True, "initial_state": inputs["initial_state"]}
    want, _ = selective_scan_reference(*args, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, last = selective_scan_chunk(
            args[0].bfloat16(), *args[1:], **kw, output_final_state=True, chunk_size=16
        )
    # under autocast the op runs in float32 (rnnx's policy, rnnx._amp)
    assert out.dtype == last.dtype == torch.float32
    assert_close(out, want, rtol=0.05, what="outputs from a bf16 input")


def test_bad_chunk_size():
    d = _case()
    with pytest.raises(ValueError, match="chunk_size: expected an int >= 1, got 0"):
        selective_scan_chunk(d["u"], d["delta"], d["A"], d["B"], d["C"], chunk_size=0)
