from __future__ import annotations

import inspect

import pytest
import torch

import rnnx.layers as layers
from rnnx.layers.base import RecurrentLayer, register


def test_names_and_lookup():
    names = layers.names()
    assert names == sorted(names)
    assert {"lstm", "s4d"} <= set(names)
    assert layers.get("s4d") is layers.S4D
    layer = layers.create("lstm", 8, hidden_size=4)
    assert isinstance(layer, layers.LSTM) and layer.d_output == 4


def test_register_checks_the_contract():
    class NoModes(RecurrentLayer):
        """x"""

    with pytest.raises(ValueError, match=r"NoModes\.modes: expected at least one mode"):
        register("nomodes_test")(NoModes)

    class BadDefault(RecurrentLayer):
        """x"""

        modes = ("a",)
        default_mode = "b"
        reference_mode = "a"

    with pytest.raises(ValueError, match=r"BadDefault.default_mode: expected one of \('a',\)"):
        register("baddefault_test")(BadDefault)
    with pytest.raises(ValueError, match="name: expected a non-empty lowercase string"):
        register("Upper")
    with pytest.raises(ValueError, match="the name 'lstm' is taken by LSTM"):
        register("lstm")(BadDefault)
    with pytest.raises(TypeError, match="expected a RecurrentLayer subclass"):
        register("notalayer_test")(torch.nn.Linear)
    assert "nomodes_test" not in layers.names()


def test_using_mode_restores():
    layer = layers.S4D(4, d_state=4)
    with layer.using_mode("recurrent"):
        assert layer.mode == "recurrent"
    assert layer.mode == "conv"


@pytest.mark.parametrize("name", layers.names())
def test_forward_is_annotated_like_the_base_class(name):
    """Every parameter and the return of each layer's ``_forward`` are annotated, so the
    type check (mypy in scripts/check.sh) reads its body against the contract."""
    fn = layers.get(name)._forward
    want = (set(inspect.signature(RecurrentLayer._forward).parameters) - {"self"}) | {"return"}
    missing = want - set(fn.__annotations__)
    assert not missing, f"{fn.__qualname__}: annotate {sorted(missing)} as RecurrentLayer._forward"
