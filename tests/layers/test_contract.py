"""The equivalence matrix, generated over every registered layer and each of its modes.

For each layer: every mode against the recurrent reference; ``step`` token by token
and in uneven chunks against the full forward; two pieces with the state carried over
against one piece, at split points that are no multiple of any chunk size, in the
outputs, the final state and every gradient (the initial state's included);
``lengths`` masking; dtype policy; continuous-time ``dt``. A new layer gets all of it
by registering itself. Everything runs in float64 so that the tolerances are tight.

Spatial layers (``kind == "spatial"``: frames ``(B, T, C, H, W)``) run the same matrix
on frames of ``SIZE`` (not square, so that a swapped height and width fails).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnx.layers as layers
from rnnx._tree import leaves, tree_map
from tests.conftest import assert_close

D = 6
B = 3
L = 23
SPLITS = [1, 7, 13, L - 1]  # none is a multiple of a power-of-two chunk size >= 2
SIZE = (5, 4)  # (height, width) of a spatial layer's frames


def feat(layer_or_cls, d: int = D) -> tuple[int, ...]:
    """The shape of one time step of the layer's input: ``(d,)`` or ``(d, *SIZE)``."""
    return (d, *SIZE) if layer_or_cls.kind == "spatial" else (d,)


def state_kwargs(layer_or_cls) -> dict:
    """What ``init_state`` needs besides the batch size: the frame size of a spatial layer."""
    return {"size": SIZE} if layer_or_cls.kind == "spatial" else {}


def _all_modes():
    out = []
    for name in layers.names():
        for mode in layers.get(name).modes:
            out.append(pytest.param(name, mode, id=f"{name}-{mode}"))
    return out


def _other_modes():
    out = []
    for name in layers.names():
        cls = layers.get(name)
        for mode in cls.modes:
            if mode != cls.reference_mode:
                out.append(pytest.param(name, mode, id=f"{name}-{mode}"))
    return out


def _ct_modes():
    out = []
    for name in layers.names():
        cls = layers.get(name)
        if cls.continuous_time:
            for mode in cls.modes:
                out.append(pytest.param(name, mode, id=f"{name}-{mode}"))
    return out


def make_layer(name: str, *, seed: int = 0, dtype=torch.float64):
    torch.manual_seed(seed)
    cls = layers.get(name)
    layer = cls(D, **cls.tiny_config()).to(dtype)
    layer.eval()  # no dropout: the modes must agree exactly
    return layer


def rtol_of(layer) -> float:
    return type(layer).equivalence_rtol


def random_state(layer, batch: int = B, seed: int = 1):
    """A reachable, nonzero state: the layer run over a random prefix."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randn(batch, 5, *feat(layer), generator=g, dtype=torch.float64)
    with torch.no_grad(), layer.using_mode(layer.reference_mode):
        _, s = layer(prefix.to(layer.state_dtype()))
    return tree_map(lambda t: t.detach().clone(), s)


def inputs(layer=None, seed: int = 2, length: int = L, batch: int = B):
    """Random float64 input for ``layer`` (a sequence layer's when None)."""
    g = torch.Generator().manual_seed(seed)
    shape = feat(layer) if layer is not None else (D,)
    return torch.randn(batch, length, *shape, generator=g, dtype=torch.float64)


def loss_of(y, state, seed: int = 3):
    """A random linear functional of the output and the final state."""
    g = torch.Generator().manual_seed(seed)
    total = (y * torch.randn(y.shape, generator=g, dtype=torch.float64)).sum()
    for s in leaves(state):
        w = torch.randn(s.shape, generator=g, dtype=torch.float64)
        total = total + (s.real * w).sum() + ((s.imag * w).sum() if s.is_complex() else 0)
    return total


def grads(layer, loss, x, s0):
    params = [p for p in layer.parameters() if p.requires_grad]
    wrt = [x, *params, *leaves(s0)]
    gs = torch.autograd.grad(loss, wrt, allow_unused=True)
    names = ["x"] + [f"param {n}" for n, p in layer.named_parameters() if p.requires_grad]
    names += [f"initial state leaf {i}" for i in range(len(leaves(s0)))]
    return [(n, torch.zeros_like(w) if g is None else g) for n, g, w in zip(names, gs, wrt)]


def run(layer, x, s0, mode):
    x = x.clone().requires_grad_()
    s0 = tree_map(lambda t: t.clone().requires_grad_(), s0)
    with layer.using_mode(mode):
        y, s = layer(x, s0)
    return y, s, grads(layer, loss_of(y, s), x, s0)


def assert_states_close(a, b, rtol, what):
    for i, (x, y) in enumerate(zip(leaves(a), leaves(b))):
        assert_close(x, y, rtol=rtol, what=f"{what} (state leaf {i})")


def assert_grads_close(ga, gb, rtol, what):
    for (name, x), (_, y) in zip(ga, gb):
        assert_close(x, y, rtol=rtol, what=f"{what}: gradient of {name}")


# ---------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", layers.names())
def test_registered_class_is_well_formed(name):
    cls = layers.get(name)
    assert cls.registry_name == name
    assert cls.default_mode in cls.modes and cls.reference_mode in cls.modes
    assert getattr(layers, cls.__name__) is cls
    assert cls.__doc__ and cls.paper, "layers document themselves and cite their paper"


@pytest.mark.parametrize("name", layers.names())
def test_builds_from_d_model_alone_and_keeps_the_shape(name):
    layer = layers.get(name)(16)
    x = torch.randn(2, 9, *feat(layer, 16))
    y, state = layer(x)
    assert y.shape == x.shape and layer.d_output == 16
    assert all(torch.isfinite(s).all() for s in leaves(state))


@pytest.mark.parametrize(("name", "mode"), _all_modes())
def test_init_state_dtype_policy(name, mode):
    """States are fp32 (complex64 for complex states) whatever the input dtype."""
    layer = layers.get(name)(D, **layers.get(name).tiny_config())
    layer.mode = mode
    s = layer.init_state(2, **state_kwargs(layer))
    for t in leaves(s):
        assert t.dtype in (torch.float32, torch.complex64)
    y, s = layer(torch.randn(2, 5, *feat(layer), dtype=torch.bfloat16))
    assert y.shape == (2, 5, *feat(layer)) and torch.isfinite(y.float()).all()
    for t in leaves(s):
        assert t.dtype in (torch.float32, torch.complex64)
    meta = layer.init_state(2, device="meta", **state_kwargs(layer))
    assert [t.shape for t in leaves(meta)] == [t.shape for t in leaves(s)]


@pytest.mark.parametrize(("name", "mode"), _other_modes())
def test_mode_matches_reference(name, mode):
    layer = make_layer(name)
    x, s0 = inputs(layer), random_state(layer)
    y, s, g = run(layer, x, s0, mode)
    y_ref, s_ref, g_ref = run(layer, x, s0, layer.reference_mode)
    rtol = rtol_of(layer)
    assert_close(y, y_ref, rtol=rtol, what=f"{mode} output")
    assert_states_close(s, s_ref, rtol, f"{mode} final state")
    assert_grads_close(g, g_ref, rtol, mode)


@pytest.mark.parametrize(("name", "mode"), _all_modes())
def test_zero_initial_state_equals_default(name, mode):
    layer = make_layer(name)
    layer.mode = mode
    x = inputs(layer)
    y1, s1 = layer(x)
    y2, s2 = layer(x, layer.init_state(B, **state_kwargs(layer)))
    assert_close(y1, y2, rtol=1e-12)
    assert_states_close(s1, s2, 1e-12, "final state")


@pytest.mark.parametrize("name", layers.names())
@pytest.mark.parametrize("chunks", [[1] * L, [3, 1, 5, 2, 8, 4]], ids=["tokens", "uneven"])
def test_step_matches_full_forward(name, chunks):
    layer = make_layer(name)
    x, s0 = inputs(layer), random_state(layer)
    y_full, s_full, g_full = run(layer, x, s0, layer.reference_mode)

    xg = x.clone().requires_grad_()
    s0g = tree_map(lambda t: t.clone().requires_grad_(), s0)
    s, ys, start = s0g, [], 0
    for n in chunks:
        y, s = layer.step(xg[:, start : start + n], s)
        ys.append(y)
        start += n
    assert start == L
    y = torch.cat(ys, 1)
    rtol = rtol_of(layer)
    assert_close(y, y_full, rtol=rtol, what="step outputs")
    assert_states_close(s, s_full, rtol, "step final state")
    assert_grads_close(grads(layer, loss_of(y, s), xg, s0g), g_full, rtol, "step")


@pytest.mark.parametrize(("name", "mode"), _all_modes())
@pytest.mark.parametrize("split", SPLITS)
def test_two_pieces_with_carried_state_equal_one(name, mode, split):
    layer = make_layer(name)
    layer.mode = mode
    x, s0 = inputs(layer), random_state(layer)
    y_full, s_full, g_full = run(layer, x, s0, mode)

    xg = x.clone().requires_grad_()
    s0g = tree_map(lambda t: t.clone().requires_grad_(), s0)
    y1, s1 = layer(xg[:, :split], s0g)
    y2, s2 = layer(xg[:, split:], s1)
    y = torch.cat([y1, y2], 1)
    rtol = rtol_of(layer)
    assert_close(y, y_full, rtol=rtol, what="outputs")
    assert_states_close(s2, s_full, rtol, "final state")
    assert_grads_close(grads(layer, loss_of(y, s2), xg, s0g), g_full, rtol, f"split {split}")


@settings(max_examples=8, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize(("name", "mode"), _all_modes())
def test_random_shapes_and_splits(name, mode, data):
    batch = data.draw(st.integers(1, 3), label="batch")
    length = data.draw(st.integers(2, 40), label="length")
    split = data.draw(st.integers(1, length - 1), label="split")
    layer = make_layer(name)
    layer.mode = mode
    x = inputs(layer, length=length, batch=batch)
    s0 = random_state(layer, batch=batch)
    with torch.no_grad():
        y_full, s_full = layer(x, s0)
        y1, s1 = layer(x[:, :split], s0)
        y2, s2 = layer(x[:, split:], s1)
        with layer.using_mode(layer.reference_mode):
            y_ref, s_ref = layer(x, s0)
    rtol = rtol_of(layer)
    assert_close(torch.cat([y1, y2], 1), y_full, rtol=rtol, what="split outputs")
    assert_states_close(s2, s_full, rtol, "split final state")
    assert_close(y_full, y_ref, rtol=rtol, what="mode vs reference")
    assert_states_close(s_full, s_ref, rtol, "mode vs reference state")


@pytest.mark.parametrize(("name", "mode"), _all_modes())
def test_lengths_mask_padding(name, mode):
    """Padded positions never reach the final state, and their outputs are zero."""
    layer = make_layer(name)
    layer.mode = mode
    x, s0 = inputs(layer), random_state(layer)
    lengths = torch.tensor([L, 10, 1])
    garbage = x.clone()
    garbage[1, 10:] = 1e3 * torch.randn(L - 10, *feat(layer), dtype=torch.float64)
    garbage[2, 1:] = -7.0
    with torch.no_grad():
        y, s = layer(garbage, s0, lengths=lengths)
        rtol = rtol_of(layer)
        for b, n in enumerate(lengths.tolist()):
            sb = tree_map(lambda t, b=b: t[b : b + 1], s0)
            yb, sb = layer(x[b : b + 1, :n], sb)
            assert_close(y[b, :n], yb[0], rtol=rtol, what=f"sequence {b} outputs")
            assert_states_close(tree_map(lambda t, b=b: t[b : b + 1], s), sb, rtol, f"seq {b}")
            assert torch.all(y[b, n:] == 0)


@pytest.mark.parametrize(("name", "mode"), _all_modes())
def test_lengths_zero_keeps_the_state(name, mode):
    layer = make_layer(name)
    layer.mode = mode
    s0 = random_state(layer)
    with torch.no_grad():
        y, s = layer(inputs(layer), s0, lengths=torch.tensor([0, 0, 0]))
    assert torch.all(y == 0)
    assert_states_close(s, s0, 1e-12, "state after zero steps")


@pytest.mark.parametrize(("name", "mode"), _ct_modes())
def test_dt_forms_agree(name, mode):
    """dt=1 is the trained step; a scalar, per-sequence and per-step dt of equal value agree."""
    layer = make_layer(name)
    layer.mode = mode
    x, s0 = inputs(layer), random_state(layer)
    with torch.no_grad():
        y0, _ = layer(x, s0)
        y1, _ = layer(x, s0, dt=1.0)
        assert_close(y1, y0, rtol=1e-12, what="dt=1")
        ys, ss = layer(x, s0, dt=0.37)
        yb, sb = layer(x, s0, dt=torch.full((B,), 0.37, dtype=torch.float64))
        assert_close(yb, ys, rtol=1e-10, what="per-sequence dt")
        assert_states_close(sb, ss, 1e-10, "per-sequence dt")
        assert not torch.allclose(ys, y0), "dt must change the output"


@pytest.mark.parametrize(("name", "mode"), _ct_modes())
def test_dt_per_step_matches_reference(name, mode):
    layer = make_layer(name)
    x, s0 = inputs(layer), random_state(layer)
    dt = 0.2 + torch.rand(B, L, dtype=torch.float64)
    with torch.no_grad(), layer.using_mode(layer.reference_mode):
        y_ref, s_ref = layer(x, s0, dt=dt)
        # constant per-step dt equals the scalar
        y_c, _ = layer(x, s0, dt=torch.full((B, L), 0.5, dtype=torch.float64))
        y_s, _ = layer(x, s0, dt=0.5)
    assert_close(y_c, y_s, rtol=1e-10, what="constant per-step dt")
    layer.mode = mode
    if mode == "conv":
        with pytest.raises(ValueError, match="dt: mode 'conv' needs a time-invariant step"):
            layer(x, s0, dt=dt)
        return
    with torch.no_grad():
        y, s = layer(x, s0, dt=dt)
    assert_close(y, y_ref, rtol=rtol_of(layer), what="per-step dt")
    assert_states_close(s, s_ref, rtol_of(layer), "per-step dt")


# ---------------------------------------------------------------------------- compile


def _compiled_run(layer, backend: str):
    """Forward, final state and every gradient of ``torch.compile(layer, fullgraph=True)``
    and of the eager layer, in the layer's default mode, from a random initial state.
    A short sequence: a chunked form's loop over chunks is unrolled in the graph."""
    x, s0 = inputs(layer, length=9), random_state(layer)
    expected = run(layer, x, s0, layer.mode)
    torch._dynamo.reset()  # a fresh cache: no recompile limit across the matrix
    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    xg = x.clone().requires_grad_()
    s0g = tree_map(lambda t: t.clone().requires_grad_(), s0)
    y, s = compiled(xg, s0g)
    got = (y, s, grads(layer, loss_of(y, s), xg, s0g))
    torch._dynamo.reset()
    return got, expected


def _assert_same_run(got, expected, rtol, what):
    (y, s, g), (y_ref, s_ref, g_ref) = got, expected
    assert_close(y, y_ref, rtol=rtol, what=f"{what} output")
    assert_states_close(s, s_ref, rtol, f"{what} final state")
    assert_grads_close(g, g_ref, rtol, what)


@pytest.mark.parametrize("name", layers.names())
def test_compiles_whole_and_matches_eager(name):
    """``torch.compile(fullgraph=True)`` traces the layer in its default mode without a
    graph break, and the compiled forward, final state and every gradient equal eager.

    The ``aot_eager`` backend runs everything ``torch.compile`` does but code generation:
    Dynamo's trace (a graph break fails here), AOTAutograd's joint forward/backward graph
    (every native operator through its fake implementation and autograd formula), then
    the graphs on eager kernels. Inductor's code generation is the slow
    :func:`test_compiles_with_inductor`.
    """
    layer = make_layer(name)
    got, expected = _compiled_run(layer, "aot_eager")
    _assert_same_run(got, expected, rtol_of(layer), "compiled (aot_eager)")


@pytest.mark.slow
@pytest.mark.parametrize("name", layers.names())
def test_compiles_with_inductor(name):
    """The same with torch.compile's default backend (Inductor's C++ code generation)."""
    layer = make_layer(name)
    got, expected = _compiled_run(layer, "inductor")
    _assert_same_run(got, expected, max(rtol_of(layer), 1e-6), "compiled (inductor)")
