"""The declarative cell API: the documented example, structure checks, the contract.

The example of docs/pararnn.md is executed here, so the page cannot drift from the code.
Every registered :class:`CellLayer` has its declared Jacobian structure checked against
``torch.func.jacrev``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import rnnx.layers as layers
from rnnx.layers.cell import CellLayer, Diagonal
from rnnx.ops.newton import StructureError
from tests.conftest import assert_close

DOC = Path(__file__).resolve().parents[2] / "docs" / "pararnn.md"


def _doc_example() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- example: user-cell -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/pararnn.md: the user-cell example block is missing"
    return m.group(1)


@pytest.fixture(scope="module")
def example():
    ns: dict = {}
    torch.manual_seed(0)
    exec(compile(_doc_example(), str(DOC), "exec"), ns)  # runs the page's code as written
    return ns


def test_doc_example_runs_and_converges(example):
    layer = example["layer"]
    y, state = example["y"], example["state"]
    assert y.shape == (8, 1024, 64) and state.shape == (8, 64)
    assert layer.mode == "newton" and layer.newton_info.converged
    assert layer.newton_info.iterations <= 6


def test_doc_example_modes_agree_with_all_gradients(example):
    torch.manual_seed(1)
    layer = example["MinimalGRU"](5).double()
    x = torch.randn(3, 40, 5, dtype=torch.float64)
    s0 = 0.3 * torch.randn(3, 5, dtype=torch.float64)
    results = {}
    for mode in ("recurrent", "newton"):
        xx, ss = x.clone().requires_grad_(), s0.clone().requires_grad_()
        with layer.using_mode(mode):
            y, s = layer(xx, ss)
        loss = (y * torch.cos(torch.arange(5.0, dtype=torch.float64))).sum() + s.sum()
        results[mode] = (y, s, *torch.autograd.grad(loss, [xx, ss, *layer.parameters()]))
    for a, b in zip(results["newton"], results["recurrent"]):
        assert_close(a.detach(), b.detach(), rtol=1e-9, what="newton vs recurrent")
    # step, token by token, equals the full forward
    s, ys = s0, []
    for t in range(40):
        y_t, s = layer.step(x[:, t : t + 1], s)
        ys.append(y_t)
    assert_close(torch.cat(ys, 1), results["recurrent"][0].detach(), rtol=1e-12, what="step")


def test_doc_example_lengths(example):
    layer = example["MinimalGRU"](4).double()
    x = torch.randn(2, 12, 4, dtype=torch.float64)
    x_pad = x.clone()
    x_pad[1, 5:] = 1e3
    with torch.no_grad():
        y, s = layer(x_pad, lengths=torch.tensor([12, 5]))
        _, s1 = layer(x[1:, :5])
    assert_close(s[1:], s1, rtol=1e-9, what="state after 5 steps")
    assert torch.all(y[1, 5:] == 0)


def _cell_layers():
    return [n for n in layers.names() if issubclass(layers.get(n), CellLayer)]


@pytest.mark.parametrize("name", _cell_layers())
def test_registered_cells_declare_their_structure_correctly(name):
    cls = layers.get(name)
    torch.manual_seed(0)
    layer = cls(6, **cls.tiny_config()).double()
    layer.check_structure()


def test_doc_example_structure(example):
    example["MinimalGRU"](6).double().check_structure()


class MixingCell(CellLayer):
    """Declares Diagonal() but mixes features (h @ W): a wrong declaration."""

    structure = Diagonal()

    def __init__(self, d_model, **kw):
        super().__init__(d_model, **kw)
        self.w = nn.Parameter(torch.randn(d_model, d_model) / d_model**0.5)

    def cell(self, h, u):
        return torch.tanh(h @ self.w + u)


def test_a_wrong_declaration_is_reported():
    torch.manual_seed(2)
    with pytest.raises(StructureError, match=r"MixingCell\.cell: declares .*Diagonal\(\)"):
        MixingCell(5).check_structure()


def test_state_size_and_readout():
    class Wide(CellLayer):
        structure = Diagonal()

        def __init__(self, d_model):
            super().__init__(d_model, state_size=2 * d_model)
            self.d_output = d_model

        def inputs(self, x):
            return torch.cat([x, -x], -1)

        def cell(self, h, u):
            return torch.tanh(0.5 * h + u)

        def readout(self, h, x):
            return h[..., : self.d_model] - h[..., self.d_model :]

    layer = Wide(3)
    assert layer.init_state(2).shape == (2, 6)
    x = torch.randn(2, 7, 3)
    with torch.no_grad():
        y, s = layer(x)
        with layer.using_mode("recurrent"):
            y_ref, s_ref = layer(x)
    assert y.shape == (2, 7, 3) and s.shape == (2, 6)
    assert_close(y, y_ref, rtol=1e-5, what="outputs")
    assert_close(s, s_ref, rtol=1e-5, what="state")
