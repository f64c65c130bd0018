"""LinearAttention, RetNet and GLA against the parallel (attention-like) formulas of their
papers, and options the generated matrix does not cover."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rnnx.layers as layers
from tests.conftest import assert_close
from tests.layers.test_contract import inputs, make_layer, random_state, run


def test_linear_attention_is_normalised_causal_attention():
    """y = W_o [Σ_{s≤t} φ(q_t)·φ(k_s) v_s / Σ_{s≤t} φ(q_t)·φ(k_s)] (arXiv 2006.16236 eq. 5)."""
    layer = make_layer("linear_attention")
    x = inputs(length=11)
    B, L, D = x.shape
    H = layer.num_heads
    dk = D // H
    with torch.no_grad():
        y, _ = layer(x)
        q = F.elu(layer.q_proj(x).view(B, L, H, dk)) + 1
        k = F.elu(layer.k_proj(x).view(B, L, H, dk)) + 1
        v = layer.v_proj(x).view(B, L, H, dk)
        att = torch.einsum("bthd,bshd->bhts", q, k).tril()
        o = torch.einsum("bhts,bshd->bthd", att, v) / (att.sum(-1).transpose(1, 2)[..., None])
        expected = layer.o_proj(o.reshape(B, L, D))
    assert_close(y, expected, rtol=1e-6)


@pytest.mark.parametrize("mode", ["chunk", "recurrent"])
def test_retnet_is_parallel_retention(mode):
    """o_n = Σ_{m≤n} γ^{n−m} (R_{nθ} q_n)·(R_{mθ} k_m) v_m / sqrt(d_k) (arXiv 2307.08621
    eq. 5 with rotary positions), from position 0 of a fresh state."""
    layer = make_layer("retnet")
    layer.mode = mode
    x = inputs(length=17)
    B, L, _ = x.shape
    H, dk, dv = layer.num_heads, layer.head_k, layer.head_v
    with torch.no_grad():
        y, _ = layer(x)
        q = layer.q_proj(x).view(B, L, H, dk)
        k = layer.k_proj(x).view(B, L, H, dk)
        v = layer.v_proj(x).view(B, L, H, dv)
        theta = layer._theta()
        pos = torch.arange(L, dtype=torch.float64)  # any common offset cancels
        ang = (pos[:, None] * theta).view(1, L, 1, -1)
        half = ang.shape[-1]

        def rot(t):
            t1, t2, rest = t[..., :half], t[..., half : 2 * half], t[..., 2 * half :]
            c, s = ang.cos(), ang.sin()
            return torch.cat([t1 * c - t2 * s, t1 * s + t2 * c, rest], -1)

        gamma = layer.log_decay.double().exp()
        n = torch.arange(L, dtype=torch.float64)
        decay = (gamma.view(H, 1, 1) ** (n[:, None] - n[None, :]).clamp(min=0)).tril()
        scores = torch.einsum("bthd,bshd->bhts", rot(q), rot(k)) * dk**-0.5 * decay
        o = torch.einsum("bhts,bshd->bthd", scores, v)
        out = layer.norm(o) * F.silu(layer.g_proj(x)).view(B, L, H, dv)
        expected = layer.o_proj(out.reshape(B, L, H * dv))
    assert_close(y, expected, rtol=1e-9)


def test_gla_decays_are_in_the_unit_interval():
    layer = make_layer("gla")
    x = inputs()
    with torch.no_grad():
        g = F.logsigmoid(layer.gk_proj(x)) / layer.gate_logit_normalizer
    assert (g < 0).all() and (g > -10).all()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("linear_attention", {"normalize": False}),
        ("retnet", {"num_heads": 3, "expand_v": 1.0}),  # head size 2: one rotated pair
        ("retnet", {"num_heads": 2, "expand_v": 1.0}),  # head size 3: one unrotated feature
        ("gla", {"num_heads": 1, "chunk_size": 16}),  # sub-chunks inside a chunk
    ],
)
def test_options_match_the_recurrent_mode(name, kwargs):
    torch.manual_seed(0)
    layer = layers.get(name)(6, **{"chunk_size": 4, **kwargs}).double().eval()
    x, s0 = inputs(), random_state(layer)
    y, s, g = run(layer, x, s0, "chunk")
    y_r, s_r, g_r = run(layer, x, s0, "recurrent")
    assert_close(y, y_r, rtol=1e-9)
    assert_close(s, s_r, rtol=1e-9)
    for (n, a), (_, b) in zip(g, g_r):
        assert_close(a, b, rtol=1e-9, what=n)


def test_default_heads_follow_d_model():
    assert layers.get("gla")(256).num_heads == 4
    assert layers.get("retnet")(200).num_heads == 2  # the largest divisor of 200 up to 3
    assert layers.get("linear_attention")(7).num_heads == 1
    with pytest.raises(ValueError, match=r"num_heads: expected a divisor of the projected"):
        layers.get("gla")(16, num_heads=3)
