from __future__ import annotations

import pytest
import torch

import rnnx.layers as layers
from rnnx.models import Backbone, BackboneConfig, SequenceClassifier
from tests.conftest import assert_close


@pytest.mark.parametrize("name", layers.names())
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
