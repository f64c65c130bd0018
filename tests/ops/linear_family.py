"""Shared checks for the linear-attention family of ops (chunk, delta, mlstm).

An :class:`OpSpec` says how to make inputs for one op; the checks compare a backend with
the recurrent reference on outputs, final states and the gradients of every input (the
initial state's included), run packed sequences against padded ones, and run gradcheck.
"""

from __future__ import annotations

import functools
import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnx._tree import leaves, tree_map
from tests.conftest import assert_close


@dataclass(frozen=True)
class OpSpec:
    """``fn(q, k, v, *gates, **kw)``; ``gates(B, T, H, K, g)`` makes the gate tensors;
    ``state(n, H, K, V, g)`` a nonzero initial state (a tensor or a tuple)."""

    name: str
    fn: Callable
    gates: Callable[..., tuple[Tensor, ...]]
    state: Callable[..., object]
    unit_keys: bool = False  # delta rules: L2-normalised keys (as their layers use)


def plain_state(n, H, K, V, g, dtype):
    return torch.randn(n, H, K, V, generator=g, dtype=dtype)


def make_inputs(spec: OpSpec, B, T, H, K, V, *, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=g, dtype=dtype)
    k = torch.randn(B, T, H, K, generator=g, dtype=dtype)
    if spec.unit_keys:
        k = F.normalize(k, dim=-1)
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype)
    gates = spec.gates(B, T, H, K, g, dtype)
    return (q, k, v, *gates)


def op_for(spec: OpSpec, backend: str) -> Callable:
    """The op on ``backend``, or for ``"reference"`` its ``*_reference`` function (the
    step-by-step oracle, once spelled ``backend="reference"``)."""
    if backend != "reference":
        return functools.partial(spec.fn, backend=backend)
    fn, kw = spec.fn, {}
    if isinstance(fn, functools.partial):
        fn, kw = fn.func, dict(fn.keywords)
    return functools.partial(getattr(sys.modules[fn.__module__], fn.__name__ + "_reference"), **kw)


def run_with_grads(spec: OpSpec, inputs, state, seed=5, **kw):
    """Outputs, final state and the gradients of a random functional of both."""
    ins = [t.clone().requires_grad_() for t in inputs]
    s0 = None if state is None else tree_map(lambda t: t.clone().requires_grad_(), state)
    o, final = op_for(spec, kw.pop("backend", "auto"))(
        *ins, initial_state=s0, output_final_state=True, **kw
    )
    g = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum()
    for s in leaves(final):
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    wrt = ins + ([] if s0 is None else leaves(s0))
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = [torch.zeros_like(w) if gr is None else gr for gr, w in zip(grads, wrt)]
    return o, final, grads


def assert_matches(spec, got, ref, rtol, what):
    o, s, g = got
    o_r, s_r, g_r = ref
    assert_close(o, o_r, rtol=rtol, what=f"{spec.name} {what}: output")
    for i, (a, b) in enumerate(zip(leaves(s), leaves(s_r))):
        assert_close(a, b, rtol=rtol, what=f"{spec.name} {what}: final state leaf {i}")
    names = ["q", "k", "v", *[f"gate {i}" for i in range(len(g) - 3)]]
    for name, a, b in itertools.zip_longest(names, g, g_r):
        assert_close(a, b, rtol=rtol, what=f"{spec.name} {what}: gradient of {name or 'state'}")


def check_chunk_matches_reference(spec, backend, chunk_size, T, *, dtype=torch.float64, rtol):
    B, H, K, V = 2, 2, 8, 6
    inputs = make_inputs(spec, B, T, H, K, V, dtype=dtype)
    state = spec.state(B, H, K, V, torch.Generator().manual_seed(9), dtype)
    got = run_with_grads(spec, inputs, state, chunk_size=chunk_size, backend=backend)
    ref = run_with_grads(spec, inputs, state, backend="reference")
    assert_matches(spec, got, ref, rtol, f"{backend} C={chunk_size} T={T}")


def check_packed(spec, backend, *, lens=(5, 0, 13, 7, 1), chunk_size=4, with_state=True):
    """Packed sequences: the backend vs the packed reference (with gradients) and vs each
    sequence run alone in its own batch (the padded view)."""
    H, K, V = 2, 4, 3
    T = sum(lens)
    inputs = make_inputs(spec, 1, T, H, K, V)
    cu = torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int64)
    n = len(lens)
    state = spec.state(n, H, K, V, torch.Generator().manual_seed(3), torch.float64)
    state = state if with_state else None
    got = run_with_grads(spec, inputs, state, cu_seqlens=cu, chunk_size=chunk_size, backend=backend)
    ref = run_with_grads(spec, inputs, state, cu_seqlens=cu, backend="reference")
    assert_matches(spec, got, ref, 1e-10, f"packed {backend}")
    o, final, _ = got
    for i, (a, b) in enumerate(itertools.pairwise(cu.tolist())):
        s_i = None if state is None else tree_map(lambda t, i=i: t[i : i + 1], state)
        if b == a:  # an empty sequence keeps its state
            for x, y in zip(leaves(tree_map(lambda t, i=i: t[i : i + 1], final)), leaves(s_i)):
                assert_close(x, y, rtol=0, what="empty sequence state")
            continue
        o_i, f_i = spec.fn(
            *(t[:, a:b] if t.dim() >= 3 else t for t in inputs),
            initial_state=s_i, output_final_state=True,
            chunk_size=chunk_size, backend=backend,
        )  # fmt: skip
        assert_close(o[:, a:b], o_i, rtol=1e-10, what=f"packed vs alone: sequence {i} output")
        for x, y in zip(leaves(tree_map(lambda t, i=i: t[i : i + 1], final)), leaves(f_i)):
            assert_close(x, y, rtol=1e-10, what=f"packed vs alone: sequence {i} state")


def check_gradcheck(spec, backend):
    B, T, H, K, V = 1, 5, 1, 3, 2
    inputs = make_inputs(spec, B, T, H, K, V)
    state = spec.state(B, H, K, V, torch.Generator().manual_seed(1), torch.float64)
    flat_state = leaves(state)
    n_in = len(inputs)

    def f(*args):
        ins, st = args[:n_in], args[n_in:]
        st = st[0] if len(st) == 1 else tuple(st)
        o, final = spec.fn(
            *ins, initial_state=st, output_final_state=True, chunk_size=2, backend=backend
        )
        return (o, *leaves(final))

    args = [t.clone().requires_grad_() for t in (*inputs, *flat_state)]
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def check_long(spec, backends, T, *, grads: bool):
    """A long sequence with cheap shapes: each chunked backend vs one reference run."""
    B, H, K, V = 1, 1, 4, 3
    inputs = make_inputs(spec, B, T, H, K, V, seed=4)
    state = spec.state(B, H, K, V, torch.Generator().manual_seed(2), torch.float64)
    if grads:
        ref = run_with_grads(spec, inputs, state, backend="reference")
        for backend in backends:
            got = run_with_grads(spec, inputs, state, backend=backend)
            assert_matches(spec, got, ref, 1e-8, f"{backend} long T={T}")
        return
    with torch.no_grad():
        o_r, s_r = op_for(spec, "reference")(*inputs, initial_state=state, output_final_state=True)
        for backend in backends:
            o, s = spec.fn(*inputs, initial_state=state, output_final_state=True, backend=backend)
            assert_close(o, o_r, rtol=1e-9, what=f"{spec.name} {backend} T={T}: output")
            for a, b in zip(leaves(s), leaves(s_r)):
                assert_close(a, b, rtol=1e-9, what=f"{spec.name} {backend} T={T}: final state")


def check_dtypes(spec, backend):
    """float32 / bfloat16 inputs: the output in the input dtype, states in float32, both
    close to the float64 computation on the same (rounded) inputs."""
    B, T, H, K, V = 2, 19, 2, 4, 3
    inputs64 = make_inputs(spec, B, T, H, K, V)
    for dtype, rtol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        ins = [t.to(dtype) for t in inputs64]
        o, s = spec.fn(*ins, output_final_state=True, chunk_size=8, backend=backend)
        o_r, s_r = op_for(spec, "reference")(*(t.double() for t in ins), output_final_state=True)
        assert o.dtype == dtype
        assert all(t.dtype == torch.float32 for t in leaves(s))
        assert_close(o.double(), o_r, rtol=rtol, what=f"{spec.name} {dtype} output")
        for a, b in zip(leaves(s), leaves(s_r)):
            assert_close(a.double(), b, rtol=1e-4, what=f"{spec.name} {dtype} state")
