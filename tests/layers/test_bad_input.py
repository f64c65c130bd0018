"""Bad input gets a clear error naming the argument, the expectation and what was given."""

from __future__ import annotations

import math

import pytest
import torch

import rnnx
import rnnx.layers as layers

D = 6


def make(name):
    cls = layers.get(name)
    return cls(D, **cls.tiny_config())


ALL = layers.names("sequence")
CT = [n for n in ALL if layers.get(n).continuous_time]
NOT_CT = [n for n in ALL if not layers.get(n).continuous_time]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("x", "err", "match"),
    [
        (
            torch.randn(4, D),
            ValueError,
            r"x: expected a 3-D tensor \(batch, length, 6\), got shape \(4, 6\)",
        ),
        (
            torch.randn(2, 3, 4, D),
            ValueError,
            r"x: expected a 3-D tensor .* got shape \(2, 3, 4, 6\)",
        ),
        (torch.randn(2, 5, D + 1), ValueError, r"x: .* last dimension is 7, not d_model=6"),
        (torch.randn(2, 0, D), ValueError, r"x: expected a sequence of length >= 1, got length 0"),
        (torch.randn(0, 5, D), ValueError, r"x: expected a batch of size >= 1"),
        (
            torch.ones(2, 5, D, dtype=torch.long),
            TypeError,
            r"x: expected a floating-point tensor, got dtype torch.int64",
        ),
        ([[1.0] * D], TypeError, r"x: expected a torch.Tensor, got list"),
    ],
    ids=["rank2", "rank4", "features", "empty-seq", "empty-batch", "int", "list"],
)
def test_bad_x(name, x, err, match):
    with pytest.raises(err, match=match):
        make(name)(x)


@pytest.mark.parametrize("name", ALL)
def test_step_names_its_argument(name):
    layer = make(name)
    with pytest.raises(ValueError, match=r"x_chunk: expected a sequence of length >= 1"):
        layer.step(torch.randn(2, 0, D), layer.init_state(2))


@pytest.mark.parametrize("name", ALL)
def test_state_of_wrong_batch_size(name):
    layer = make(name)
    with pytest.raises(
        ValueError, match=r"state.*: expected shape \(2, .*init_state\(batch_size=2\)\), got \(3, "
    ):
        layer(torch.randn(2, 5, D), layer.init_state(3))


@pytest.mark.parametrize("name", ALL)
def test_state_of_wrong_structure(name):
    layer = make(name)
    s = layer.init_state(2)
    wrong = (s, s) if isinstance(s, torch.Tensor) else torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"state: expected the structure of .*init_state\(\)"):
        layer(torch.randn(2, 5, D), wrong)


@pytest.mark.parametrize("name", ALL)
def test_state_of_wrong_dtype(name):
    layer = make(name)
    s = layer.init_state(2)
    bad = rnnx._tree.tree_map(lambda t: torch.zeros(t.shape, dtype=torch.long), s)
    with pytest.raises(TypeError, match=r"state.*: expected a (complex|floating-point) tensor"):
        layer(torch.randn(2, 5, D), bad)


@pytest.mark.parametrize("name", ALL)
def test_unknown_mode(name):
    layer = make(name)
    with pytest.raises(ValueError, match=r"mode \(of .*\): expected one of .*, got 'warp'"):
        layer.mode = "warp"
    with pytest.raises(ValueError, match=r"mode \(of .*\): expected one of"):
        type(layer)(D, mode="warp")


@pytest.mark.parametrize("name", ALL)
def test_nan_is_reported_only_when_checks_are_on(name):
    layer = make(name)
    x = torch.randn(2, 5, D)
    x[1, 3, 2] = math.nan
    layer(x)  # off by default: no pass over the data
    with (
        rnnx.checks(finite=True),
        pytest.raises(ValueError, match=r"x: expected finite values, found 1 NaN and 0 inf"),
    ):
        layer(x)
    s = rnnx._tree.tree_map(lambda t: t.clone(), layer.init_state(2))
    first = rnnx._tree.leaves(s)[0]
    first.view(-1)[0] = math.inf
    with (
        rnnx.checks(finite=True),
        pytest.raises(ValueError, match=r"state.*: expected finite values, found 0 NaN and 1 inf"),
    ):
        layer(torch.randn(2, 5, D), s)
    assert not rnnx.finite_checks_enabled()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    ("lengths", "err", "match"),
    [
        (torch.tensor([5]), ValueError, r"lengths: expected shape \(2,\)"),
        (torch.tensor([5.0, 2.0]), TypeError, r"lengths: expected an integer tensor"),
        (torch.tensor([6, 2]), ValueError, r"lengths: expected values in \[0, 5\] .* max 6"),
        (torch.tensor([-1, 2]), ValueError, r"lengths: expected values in \[0, 5\] .* min -1"),
    ],
    ids=["shape", "float", "too-long", "negative"],
)
def test_bad_lengths(name, lengths, err, match):
    with pytest.raises(err, match=match):
        make(name)(torch.randn(2, 5, D), lengths=lengths)


@pytest.mark.parametrize("name", ALL)
def test_lengths_as_list(name):
    y, _ = make(name)(torch.randn(2, 5, D), lengths=[5, 2])
    assert torch.all(y[1, 2:] == 0)


@pytest.mark.parametrize("name", NOT_CT)
def test_dt_rejected_by_discrete_layers(name):
    with pytest.raises(TypeError, match=r"dt: .* is not a continuous-time layer"):
        make(name)(torch.randn(2, 5, D), dt=0.5)


@pytest.mark.parametrize("name", CT)
@pytest.mark.parametrize(
    ("dt", "err", "match"),
    [
        (
            torch.ones(3),
            ValueError,
            r"dt: expected a scalar, shape \(2,\) .* or \(2, 5\) .* got shape \(3,\)",
        ),
        (torch.ones(2, 4), ValueError, r"dt: expected a scalar.* got shape \(2, 4\)"),
        (-0.5, ValueError, r"dt: expected finite step sizes > 0"),
        (torch.tensor([1.0, math.nan]), ValueError, r"dt: expected finite step sizes > 0"),
        (torch.ones(2, dtype=torch.long), TypeError, r"dt: expected a floating-point tensor"),
        ("fast", TypeError, r"dt: expected a float or a tensor, got str"),
    ],
    ids=["shape", "shape2", "negative", "nan", "int", "str"],
)
def test_bad_dt(name, dt, err, match):
    with pytest.raises(err, match=match):
        make(name)(torch.randn(2, 5, D), dt=dt)


def test_bad_d_model():
    with pytest.raises(ValueError, match=r"d_model: expected an int >= 1, got 0"):
        layers.get("lstm")(0)
    with pytest.raises(TypeError, match=r"d_model: expected an int, got float"):
        layers.get("s4d")(6.0)


def test_unknown_layer_name_suggests():
    with pytest.raises(ValueError, match=r"no layer named 'lstn'; did you mean 'lstm'"):
        layers.get("lstn")
