"""Mamba and Mamba-2 layers: negative eigenvalues across every view, parity, construction,
decoding after a prefill, float32 against float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnx._tree import leaves, tree_map
from rnnx.layers import Mamba, Mamba2
from rnnx.layers.mamba2 import _default_headdim
from tests.conftest import assert_close
from tests.layers.test_contract import grads, inputs, loss_of, random_state, run

D = 6


def _negative_mamba(seed=0):
    torch.manual_seed(seed)
    layer = Mamba(D, **Mamba.tiny_config(), negative_eigenvalues=True).double().eval()
    with torch.no_grad():  # large steps, so that many transitions are really negative
        layer.dt_proj.bias.fill_(1.5)
    return layer


# ------------------------------------------------------------------ negative eigenvalues


@pytest.mark.parametrize(("mode", "backend"), [("scan", "auto"), ("scan", "torch")])
def test_negative_eigenvalues_every_mode_matches_reference(mode, backend):
    layer = _negative_mamba()
    layer.backend = backend
    x, s0 = inputs(), random_state(layer)
    y, s, g = run(layer, x, s0, mode)
    y_r, s_r, g_r = run(layer, x, s0, "recurrent")
    assert_close(y, y_r, rtol=1e-9, what=f"{mode} output")
    for a, b in zip(leaves(s), leaves(s_r)):
        assert_close(a, b, rtol=1e-9, what=f"{mode} state")
    for (name, a), (_, b) in zip(g, g_r):
        assert_close(a, b, rtol=1e-9, what=f"{mode} gradient of {name}")


def test_negative_eigenvalues_step_in_chunks_matches_forward():
    layer = _negative_mamba()
    x, s0 = inputs(), random_state(layer)
    y_full, s_full, g_full = run(layer, x, s0, "recurrent")
    xg = x.clone().requires_grad_()
    s0g = tree_map(lambda t: t.clone().requires_grad_(), s0)
    s, ys, start = s0g, [], 0
    for n in [5, 1, 1, 9, 7]:
        y, s = layer.step(xg[:, start : start + n], s)
        ys.append(y)
        start += n
    y = torch.cat(ys, 1)
    assert_close(y, y_full, rtol=1e-9, what="step outputs")
    for a, b in zip(leaves(s), leaves(s_full)):
        assert_close(a, b, rtol=1e-9, what="step final state")
    for (name, a), (_, b) in zip(grads(layer, loss_of(y, s), xg, s0g), g_full):
        assert_close(a, b, rtol=1e-9, what=f"step gradient of {name}")


def test_negative_eigenvalues_make_transitions_negative():
    """The layer's transitions 2 exp(ΔA) - 1 reach below zero, and the flag changes the
    function computed with the same weights."""
    layer = _negative_mamba()
    x = inputs()
    with torch.no_grad():
        xs = torch.nn.functional.silu(layer.in_proj(x).chunk(2, -1)[0])  # conv aside
        delta_in = layer.x_proj(xs)[..., : layer.dt_rank]
        delta = torch.nn.functional.softplus(layer.dt_proj(delta_in))
        a = 2 * torch.exp(delta.unsqueeze(-1) * -torch.exp(layer.A_log)) - 1
        y_neg, _ = layer(x)
        layer.negative_eigenvalues = False
        y_pos, _ = layer(x)
    assert a.min() < -0.5 and a.max() <= 1
    assert (y_neg - y_pos).abs().max() > 1e-3


def test_negative_eigenvalues_let_one_layer_learn_parity():
    """arXiv 2411.12537, Sec. 5.1 in miniature: one Mamba layer with transitions in (-1, 1]
    learns running parity of bit strings; with transitions in (0, 1] it does not."""

    def train(negative: bool) -> float:
        torch.manual_seed(0)
        emb, head = nn.Embedding(2, 16), nn.Linear(16, 2)
        layer = Mamba(16, d_state=4, expand=1, negative_eigenvalues=negative)
        params = [*emb.parameters(), *layer.parameters(), *head.parameters()]
        opt = torch.optim.Adam(params, lr=4e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(300):
            bits = torch.randint(0, 2, (64, 16), generator=g)
            y, _ = layer(emb(bits))
            logits = head(y).flatten(0, 1)
            loss = nn.functional.cross_entropy(logits, (bits.cumsum(1) % 2).flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        bits = torch.randint(0, 2, (512, 16), generator=g)
        with torch.no_grad():
            pred = head(layer(emb(bits))[0]).argmax(-1)
        return float((pred == bits.cumsum(1) % 2).float().mean())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and immune to a busy machine
    try:
        assert train(negative=True) >= 0.99
        assert train(negative=False) <= 0.9
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------ construction


def test_default_headdim_divides_d_inner():
    assert _default_headdim(256) == 64
    assert _default_headdim(12) == 12
    assert _default_headdim(200) == 50
    assert Mamba2(100).headdim == 50 and Mamba2(100).nheads == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"headdim": 5}, "headdim: expected a divisor of d_inner = expand \\* d_model = 12"),
        (
            {"headdim": 4, "ngroups": 2},
            "ngroups: expected a divisor of the number of heads \\(3\\)",
        ),
        ({"A_init_range": (0.0, 1.0)}, "A_init_range: expected 0 < low <= high"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min, dt_max: expected 0 < dt_min <= dt_max"),
    ],
)
def test_mamba2_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Mamba2(D, **kwargs)


def test_mamba_bad_arguments():
    with pytest.raises(ValueError, match="dt_min, dt_max"):
        Mamba(D, dt_min=0.0)
    with pytest.raises(ValueError, match="d_state: expected an int >= 1"):
        Mamba(D, d_state=0)


def test_initialisation_follows_the_papers():
    torch.manual_seed(0)
    m = Mamba(32, d_state=8)
    assert_close(-torch.exp(m.A_log[0]), -torch.arange(1.0, 9.0), rtol=1e-6)
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    m2 = Mamba2(32)
    A = torch.exp(m2.A_log)
    assert A.min() >= 1 and A.max() <= 16
    dt2 = torch.nn.functional.softplus(m2.dt_bias)
    assert dt2.min() >= 1e-3 * 0.999 and dt2.max() <= 0.1 * 1.001
    assert m2.A_log._optim == {"weight_decay": 0.0}


# ------------------------------------------------------------------ numerics and decoding


@pytest.mark.parametrize(
    ("cls", "mode", "backend"),
    [(Mamba, "scan", "auto"), (Mamba, "scan", "torch"), (Mamba2, "chunk", "auto")],
)
def test_float32_matches_float64(cls, mode, backend):
    torch.manual_seed(0)
    layer = cls(16, headdim=8, ngroups=2) if cls is Mamba2 else cls(16)
    layer.mode = mode
    layer.backend = backend
    x = torch.randn(2, 300, 16)
    with torch.no_grad():
        y32, s32 = layer(x)
        y64, s64 = layer.double()(x.double())
    assert_close(y32.double(), y64, rtol=1e-5)
    for a, b in zip(leaves(s32), leaves(s64)):
        assert a.dtype == torch.float32
        assert_close(a.double(), b, rtol=1e-5)


@pytest.mark.parametrize("cls", [Mamba, Mamba2])
def test_prefill_then_decode_matches_forward(cls):
    """A prompt in one step call, then tokens one at a time: the same as one forward."""
    torch.manual_seed(0)
    layer = cls(16).eval()
    x = torch.randn(2, 90, 16)
    with torch.no_grad():
        y_full, s_full = layer(x)
        y, s = layer.step(x[:, :77])
        ys = [y]
        for t in range(77, 90):
            y, s = layer.step(x[:, t : t + 1], s)
            ys.append(y)
    assert_close(torch.cat(ys, 1), y_full, rtol=1e-5)
    for a, b in zip(leaves(s), leaves(s_full)):
        assert_close(a, b, rtol=1e-5)
