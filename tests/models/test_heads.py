"""Heads: generate() decodes with step exactly as the parallel forward would; shapes per kind."""

from __future__ import annotations

import pytest
import torch

import rnnx.layers as layers
from rnnx.models import (
    BackboneConfig,
    LanguageModel,
    SequenceRegressor,
    StepClassifier,
    build_model,
)
from tests.conftest import assert_close


def _lm(name: str, vocab: int = 13) -> LanguageModel:
    cfg = BackboneConfig(
        layer=name,
        d_model=8,
        n_layers=2,
        vocab_size=vocab,
        mlp_ratio=2.0,
        glu=True,
        layer_kwargs=layers.get(name).tiny_config(),
    )
    return LanguageModel(cfg).double().eval()


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_greedy_generate_equals_argmax_of_parallel_forward(name):
    model = _lm(name)
    prompt = torch.randint(0, 13, (3, 5))
    new = model.generate(prompt, 7, temperature=0)
    assert new.shape == (3, 7) and new.dtype == torch.int64
    full = torch.cat([prompt, new], 1)
    # Position t of the parallel forward predicts token t + 1: the generated tokens are
    # its argmax over the prompt and the tokens generated so far.
    logits = model(full[:, :-1])
    assert torch.equal(logits[:, prompt.shape[1] - 1 :].argmax(-1), new)


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_step_decoding_logits_equal_parallel_logits(name):
    model = _lm(name)
    x = torch.randint(0, 13, (2, 9))
    h, state = model.backbone(x[:, :4])  # prefill (parallel mode)
    outs = [model.head(h)]
    for t in range(4, 9):  # decode one token at a time
        h, state = model.backbone.step(x[:, t : t + 1], state)
        outs.append(model.head(h))
    assert_close(torch.cat(outs, 1), model(x), rtol=1e-9)


def test_sampling_is_seeded_and_top_k_restricts():
    model = _lm("lstm", vocab=11)
    prompt = torch.randint(0, 11, (4, 3))

    def sample(**kw):
        return model.generate(prompt, 20, generator=torch.Generator().manual_seed(5), **kw)

    assert torch.equal(sample(temperature=1.0), sample(temperature=1.0))
    assert torch.equal(sample(temperature=1.0, top_k=1), model.generate(prompt, 20, temperature=0))
    # With top_k = 3 every sampled token is among the 3 most likely at its step.
    new = sample(temperature=2.0, top_k=3)
    logits = model(torch.cat([prompt, new], 1)[:, :-1])[:, 2:]
    top3 = logits.topk(3, dim=-1).indices
    assert bool((top3 == new[..., None]).any(-1).all())


def test_generate_errors():
    model = _lm("lstm")
    with pytest.raises(ValueError, match="prompt: expected int64 token ids"):
        model.generate(torch.zeros(2, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"x: expected token ids in \[0, 13\)"):
        model.generate(torch.full((1, 2), 13), 3)
    with pytest.raises(ValueError, match="temperature: expected >= 0"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 3, temperature=-1)
    assert model.generate(torch.zeros(1, 2, dtype=torch.long), 0).shape == (1, 0)


def test_head_shapes_by_kind():
    cfg = BackboneConfig(layer="s4d", d_model=8, n_layers=1, d_input=3, layer_kwargs={"d_state": 4})
    x = torch.randn(2, 7, 3)
    assert build_model("classification", cfg, n_classes=4)(x).shape == (2, 4)
    assert build_model("regression", cfg, d_output=5, pooling="last")(x).shape == (2, 5)
    assert SequenceRegressor(cfg, 2, per_step=True)(x).shape == (2, 7, 2)
    assert StepClassifier(cfg, 6)(x).shape == (2, 7, 6)
    with pytest.raises(ValueError, match="kind: expected"):
        build_model("ranking", cfg)
    with pytest.raises(ValueError, match="a language model needs a vocabulary size"):
        LanguageModel(cfg)


def test_regressor_last_pooling_ignores_padding():
    cfg = BackboneConfig(layer="lstm", d_model=8, n_layers=1, d_input=2)
    model = SequenceRegressor(cfg, 3).double().eval()
    x = torch.randn(2, 6, 2, dtype=torch.float64)
    out = model(x, torch.tensor([6, 4]))
    assert_close(out[1], model(x[1:, :4])[0], rtol=1e-10)


def test_token_inputs_need_integer_ids():
    cfg = BackboneConfig(layer="lstm", d_model=8, n_layers=1, vocab_size=5)
    with pytest.raises(TypeError, match=r"x: expected int64 token ids of shape \(batch, length\)"):
        StepClassifier(cfg, 5)(torch.randn(2, 3, 1))


def test_instance_norm_forecasts_are_equivariant_to_level_and_scale():
    cfg = BackboneConfig(layer="s4d", d_model=8, n_layers=1, d_input=3)
    model = SequenceRegressor(cfg, d_output=5, instance_norm=1).double().eval()
    x = torch.randn(4, 12, 3, dtype=torch.float64)
    scale = torch.tensor([2.0, 3.0, 0.5], dtype=torch.float64)
    shift = torch.tensor([-1.0, 7.0, 4.0], dtype=torch.float64)
    y = model(x)
    # A per-window change of level and scale of every channel moves the forecast of
    # channel 1 by channel 1's level and scale, and changes nothing else (up to the
    # 1e-5 added to the variances).
    assert_close(model(x * scale + shift), y * 3.0 + 7.0, rtol=1e-4)
    # Padding after a window's valid steps plays no part in its statistics.
    lengths = torch.tensor([12, 7, 12, 3])
    padded = x.clone()
    padded[1, 7:] = 100.0
    padded[3, 3:] = -50.0
    assert_close(model(padded, lengths)[1], model(x[1:2, :7])[0], rtol=1e-9)
    assert_close(model(padded, lengths)[3], model(x[3:4, :3])[0], rtol=1e-9)
    with pytest.raises(ValueError, match=r"instance_norm: expected the index of an input"):
        SequenceRegressor(cfg, d_output=5, instance_norm=3)


def test_linear_skip_starts_at_zero_and_adds_a_linear_map_of_the_window():
    cfg = BackboneConfig(layer="s4d", d_model=8, n_layers=1, d_input=2)
    plain = SequenceRegressor(cfg, d_output=4).double().eval()
    model = SequenceRegressor(cfg, d_output=4, linear_skip=(1, 10)).double().eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(3, 10, 2, dtype=torch.float64)
    assert_close(model(x), plain(x), rtol=1e-12)  # zero at the start
    with torch.no_grad():
        model.skip.weight.normal_()
        model.skip.bias.normal_()
    expected = plain(x) + x[..., 1] @ model.skip.weight.T + model.skip.bias
    assert_close(model(x), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="reads windows of exactly 10 steps"):
        model(x[:, :7])
    with pytest.raises(ValueError, match="linear_skip: expected"):
        SequenceRegressor(cfg, d_output=4, linear_skip=(2, 10))


def test_several_target_channels_are_time_major_each_with_its_own_level_and_scale():
    # Two targets (input channels 2 and 0), horizon 3: outputs t * 2 + k continue
    # channel [2, 0][k], as csv: forecasts of several columns are laid out.
    cfg = BackboneConfig(layer="s4d", d_model=8, n_layers=1, d_input=3)
    model = SequenceRegressor(
        cfg, d_output=6, instance_norm=[2, 0], linear_skip=([2, 0], 10)
    ).double()
    model.eval()
    with torch.no_grad():
        model.skip.weight.normal_()
        model.skip.bias.normal_()
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    scale = torch.tensor([2.0, 3.0, 0.5], dtype=torch.float64)
    shift = torch.tensor([-1.0, 7.0, 4.0], dtype=torch.float64)
    y = model(x).view(4, 3, 2)
    moved = model(x * scale + shift).view(4, 3, 2)
    assert_close(moved[..., 0], y[..., 0] * 0.5 + 4.0, rtol=1e-4)  # channel 2
    assert_close(moved[..., 1], y[..., 1] * 2.0 - 1.0, rtol=1e-4)  # channel 0
    # The linear map reads each target's own normalised window, one map for both.
    plain = SequenceRegressor(cfg, d_output=6, instance_norm=[2, 0]).double().eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    mean, std = x.mean(1, keepdim=True), (x.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    z = (x - mean) / std
    lin = torch.stack([z[..., c] @ model.skip.weight.T + model.skip.bias for c in (2, 0)], -1)
    sd = std[:, 0, [2, 0]]
    expected = plain(x).view(4, 3, 2) + lin * sd[:, None]
    assert_close(model(x).view(4, 3, 2), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="instance_norm: expected"):
        SequenceRegressor(cfg, d_output=5, instance_norm=[2, 0])  # 5 outputs, 2 targets
