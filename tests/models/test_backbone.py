from __future__ import annotations

import pytest
import torch

import rnnx.layers as layers
from rnnx.models import Backbone, BackboneConfig, SequenceClassifier
from tests.conftest import assert_close


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_backbone_step_equals_forward(name):
    cfg = BackboneConfig(
        layer=name,
        d_model=8,
        n_layers=2,
        d_input=3,
        mlp_ratio=2.0,
        layer_kwargs=layers.get(name).tiny_config(),
    )
    model = Backbone(cfg).double().eval()
    x = torch.randn(2, 11, 3, dtype=torch.float64)
    h, _ = model(x)
    state, outs = None, []
    for chunk in (x[:, :4], x[:, 4:5], x[:, 5:]):
        y, state = model.step(chunk, state)
        outs.append(y)
    assert_close(torch.cat(outs, 1), h, rtol=1e-7)


def test_classifier_pools_only_valid_steps():
    cfg = BackboneConfig(layer="lstm", d_model=8, n_layers=1, d_input=2)
    model = SequenceClassifier(cfg, n_classes=3, pooling="last").double().eval()
    x = torch.randn(2, 6, 2, dtype=torch.float64)
    lengths = torch.tensor([6, 3])
    logits = model(x, lengths)
    alone = model(x[1:, :3])
    assert_close(logits[1], alone[0], rtol=1e-10)
    model.pooling = "mean"
    assert_close(model(x, lengths)[1], model(x[1:, :3])[0], rtol=1e-10)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"layer": "nope"}, "no layer named 'nope'"),
        ({"n_layers": 0}, "n_layers: expected an int >= 1"),
        ({"norm": "batch"}, "norm: expected one of"),
        ({"dropout": 1.0}, r"dropout: expected a value in \[0, 1\)"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        BackboneConfig(**kw)


def test_mixer_must_keep_the_width():
    with pytest.raises(ValueError, match="a residual block needs d_model=8"):
        Backbone(BackboneConfig(layer="lstm", d_model=8, layer_kwargs={"hidden_size": 4}))


def _manual_bidirectional(model: Backbone, x: torch.Tensor, lengths: torch.Tensor):
    """The bidirectional backbone computed by hand: each block's backward mixer run on
    every sequence's valid part reversed by slicing, one sequence at a time."""
    h = model.encode(x)
    for block in model.blocks:
        u = block.norm(h)
        fwd, _ = block.mixer(u, lengths=lengths)
        bwd = torch.zeros_like(fwd)
        for b, n in enumerate(lengths.tolist()):
            y, _ = block.mixer_rev(u[b : b + 1, :n].flip(1))
            bwd[b, :n] = y[0].flip(0)
        h = block._mlp(h + block.dropout(fwd + bwd))
    return model.norm(h)


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_bidirectional_equals_two_manual_passes(name):
    cfg = BackboneConfig(
        layer=name,
        d_model=8,
        n_layers=2,
        d_input=3,
        mlp_ratio=1.0,
        layer_kwargs=layers.get(name).tiny_config(),
        bidirectional=True,
    )
    model = Backbone(cfg).double().eval()
    assert model.blocks[0].mixer_rev is not None
    x = torch.randn(3, 9, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([9, 5, 1])
    valid = (torch.arange(9)[None] < lengths[:, None])[..., None]
    y, state = model(x, lengths=lengths)
    assert state == [None, None]
    ref = _manual_bidirectional(model, x, lengths)
    assert_close(y * valid, ref * valid, rtol=1e-9, what="output")
    # Gradients too (the backward direction's parameters included).
    w = torch.randn_like(y) * valid
    grads = torch.autograd.grad((y * w).sum(), [x, *model.parameters()], allow_unused=True)
    refs = torch.autograd.grad((ref * w).sum(), [x, *model.parameters()], allow_unused=True)
    for g, r in zip(grads, refs):
        assert_close(g, r, rtol=1e-9, what="gradient")
    # Without lengths the whole sequence is reversed: the same as lengths = L.
    full, _ = model(x)
    assert_close(full, model(x, lengths=torch.full((3,), 9))[0], rtol=1e-12)


def test_bidirectional_is_non_causal():
    from rnnx.models import LanguageModel
    from rnnx.models.backbone import reverse_valid

    cfg = BackboneConfig(layer="lstm", d_model=8, n_layers=1, d_input=2, bidirectional=True)
    model = Backbone(cfg)
    x = torch.randn(2, 5, 2)
    with pytest.raises(RuntimeError, match="bidirectional backbone is non-causal"):
        model.step(x)
    with pytest.raises(ValueError, match="cannot continue from a state"):
        model(x, state=model.init_state(2))
    # A later step changes an earlier output (it would not in a causal backbone).
    y1, _ = model(x)
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(model(x2)[0][:, 0], y1[:, 0])
    lm = BackboneConfig(layer="lstm", d_model=8, vocab_size=5, bidirectional=True)
    with pytest.raises(ValueError, match="a language model predicts the next token"):
        LanguageModel(lm)
    # reverse_valid reverses only the valid part and is its own inverse.
    v = torch.arange(10.0).view(2, 5, 1)
    n = torch.tensor([5, 3])
    assert reverse_valid(v, n)[:, :, 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    assert torch.equal(reverse_valid(reverse_valid(v, n), n), v)
