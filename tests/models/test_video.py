"""Video models on every registered layer of their kind: the rollout with ``step`` equals
the parallel pass fed its own predictions, chunks continue exactly, gradients reach every
parameter, and a layer of the wrong kind is refused with its name."""

from __future__ import annotations

import pytest
import torch

import rnnx.layers as layers
from rnnx.models import BackboneConfig, VideoClassifier, VideoPredictor, build_model


def predictor(name: str, *, patch: int = 2, n_layers: int = 2, **kw) -> VideoPredictor:
    torch.manual_seed(0)
    cfg = BackboneConfig(
        layer=name,
        d_model=6,
        n_layers=n_layers,
        d_input=1,
        layer_kwargs=layers.get(name).tiny_config(),
        **kw,
    )
    return VideoPredictor(cfg, patch_size=patch).double()


@pytest.mark.parametrize("name", layers.names("spatial"))
def test_rollout_with_step_equals_the_parallel_pass_on_its_own_predictions(name):
    model = predictor(name, mlp_ratio=1.0)
    context = torch.rand(2, 3, 1, 6, 4, dtype=torch.float64)  # not square: H, W not swapped
    with torch.no_grad():
        future = model.rollout(context, 4)
    assert future.shape == (2, 4, 1, 6, 4)
    assert float(future.min()) > 0 and float(future.max()) < 1  # sigmoid outputs
    with torch.no_grad():
        teacher = model(torch.cat([context, future[:, :-1]], 1))[:, 2:]
    torch.testing.assert_close(teacher, future, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", layers.names("spatial"))
def test_chunks_continue_exactly_and_gradients_reach_every_parameter(name):
    model = predictor(name)
    frames = torch.rand(2, 5, 1, 4, 6, dtype=torch.float64)
    whole, state = model.predict(frames)
    first, s = model.predict(frames[:, :2])
    second, s = model.predict(frames[:, 2:], s)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-10, atol=1e-12)
    for a, b in zip(state, s):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    whole.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_the_state_does_not_grow_with_the_frames_predicted():
    model = predictor("conv_lstm")
    context = torch.rand(1, 2, 1, 4, 4, dtype=torch.float64)
    _, state = model.predict(context)
    _, later = model.predict(torch.rand(1, 7, 1, 4, 4, dtype=torch.float64), state)
    shapes = [[tuple(t.shape) for t in s] for s in state]
    assert shapes == [[tuple(t.shape) for t in s] for s in later]


def test_a_video_predictor_needs_a_spatial_layer_and_fitting_frames():
    cfg = BackboneConfig(layer="lstm", d_model=8, n_layers=1, d_input=1)
    with pytest.raises(ValueError, match=r"layer: 'lstm' is a layer over sequences.*conv_lstm"):
        VideoPredictor(cfg)
    model = predictor("conv_gru", patch=4)
    with pytest.raises(ValueError, match=r"frames: .*multiples of patch_size=4"):
        model(torch.rand(1, 2, 1, 6, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="n_frames"):
        model.rollout(torch.rand(1, 2, 1, 8, 8, dtype=torch.float64), 0)


@pytest.mark.parametrize("name", ["lstm", "s4d"])
def test_lrcn_classifier(name):
    torch.manual_seed(0)
    cfg = BackboneConfig(layer=name, d_model=8, n_layers=1, d_input=1)
    model = build_model("video_classification", cfg, n_classes=5)
    assert isinstance(model, VideoClassifier)
    x = torch.rand(3, 4, 1, 16, 12)
    logits = model(x)
    assert logits.shape == (3, 5)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    # causal over time with "last" pooling: frames after the last change nothing before it
    last = VideoClassifier(cfg, 5, pooling="last")
    a = last.backbone(last.cnn(x.flatten(0, 1)).mean((-2, -1)).unflatten(0, (3, 4)))[0]
    y = x.clone()
    y[:, 3] = 0
    b = last.backbone(last.cnn(y.flatten(0, 1)).mean((-2, -1)).unflatten(0, (3, 4)))[0]
    torch.testing.assert_close(a[:, :3], b[:, :3])
    with pytest.raises(ValueError, match="layer: 'conv_lstm' is a layer over frames"):
        VideoClassifier(BackboneConfig(layer="conv_lstm", d_model=8, d_input=1), 5)
    with pytest.raises(ValueError, match=r"frames: expected \(batch, time, 1, height, width\)"):
        model(torch.rand(3, 4, 16, 12))


def test_build_model_routes_the_video_kinds():
    cfg = BackboneConfig(layer="conv_s5", d_model=4, n_layers=1, d_input=1)
    assert build_model("video_prediction", cfg, patch_size=2).patch_size == 2
    with pytest.raises(ValueError, match="patch_size: only video prediction"):
        build_model("classification", BackboneConfig(layer="lstm"), n_classes=2, patch_size=2)
