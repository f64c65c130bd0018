"""torch.export and torch.compile beyond the contract matrix's compile column.

* ``torch.export.export`` of a small model built from each family (a sequence classifier:
  encoder, one block with the layer, pooling, head) gives a program that runs and equals
  the eager model, and keeps rnnx's native kernels as the operators ``torch.ops.rnnx.*``;
* ``lengths`` and ``dt`` compile without a graph break (their value checks run in eager
  mode only, or under ``rnnx.checks()``), and still raise in eager mode;
* every layer in the configuration it runs on CUDA (the mode ``mode="auto"`` picks there,
  the ``"cudnn"`` backend of the classic RNNs), run here on the CPU, compiles and equals
  eager: with ``fullgraph=True``, except the Newton modes, whose convergence test reads one
  residual per iteration by design (a graph break there; docs/design-notes.md).
"""

from __future__ import annotations

import pytest
import torch

import rnnx
import rnnx.layers as layers
from rnnx.models import BackboneConfig, SequenceClassifier
from tests.conftest import assert_close, native_available

#: One layer per family (the first by name), and the native operator its default mode runs
#: (the operators are named after their libraries).
FAMILIES: dict[str, str] = {}
for _name in layers.names("sequence"):
    FAMILIES.setdefault(layers.get(_name).family, _name)
NATIVE_OP = {"elman": "rnn", "paragru": "pararnn", "lru": "scan", "mamba": "selective_scan"}


def _model(name: str) -> SequenceClassifier:
    torch.manual_seed(0)
    cfg = BackboneConfig(
        layer=name, d_model=8, n_layers=1, d_input=3, layer_kwargs=layers.get(name).tiny_config()
    )
    return SequenceClassifier(cfg, n_classes=2).eval()


@pytest.mark.parametrize("name", sorted(FAMILIES.values()))
def test_export_a_model_of_each_family(name):
    model = _model(name)
    x = torch.randn(2, 10, 3)
    program = torch.export.export(model, (x,))
    x2 = torch.randn(2, 10, 3)
    assert_close(program.module()(x2), model(x2), rtol=1e-6, what=f"exported {name}")
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    library = NATIVE_OP.get(name)
    if library is not None and native_available(library):
        assert f"rnnx.{library}.default" in targets, sorted(targets)


def test_every_family_has_a_representative():
    assert set(FAMILIES) == {layers.get(n).family for n in layers.names("sequence")}


def _compile_and_compare(layer, x, **kw):
    expected = layer(x, **kw)
    torch._dynamo.reset()
    got = torch.compile(layer, fullgraph=True, backend="aot_eager")(x, **kw)
    torch._dynamo.reset()
    assert_close(got[0], expected[0], rtol=1e-10, what="compiled output")


def test_lengths_compile_without_a_graph_break():
    layer = layers.get("lstm")(6).double().eval()
    x = torch.randn(3, 9, 6, dtype=torch.float64)
    _compile_and_compare(layer, x, lengths=torch.tensor([9, 4, 0]))


def test_dt_compiles_without_a_graph_break():
    layer = layers.get("s5")(6, **layers.get("s5").tiny_config()).double().eval()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    _compile_and_compare(layer, x, dt=torch.full((2, 9), 0.5, dtype=torch.float64))


def test_value_checks_still_raise_in_eager_mode_and_under_checks():
    layer = layers.get("s5")(6, **layers.get("s5").tiny_config())
    x = torch.randn(2, 9, 6)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 9\]"):
        layer(x, lengths=torch.tensor([3, 10]))
    with pytest.raises(ValueError, match=r"dt: expected finite step sizes > 0"):
        layer(x, dt=torch.tensor([0.5, -1.0]))
    with rnnx.checks(), pytest.raises(ValueError, match=r"dt: expected finite step sizes"):
        layer(x, dt=torch.tensor([0.5, float("nan")]))


def _cuda_configuration(name: str):
    """The layer as ``mode="auto"`` and ``backend="auto"`` configure it on CUDA (the
    ``"cudnn"`` backend where the layer supports it), float64, or None where that is its
    CPU default mode and backend (the contract matrix's compile column covers those)."""
    cls = layers.get(name)
    torch.manual_seed(0)
    layer = cls(6, **cls.tiny_config()).double()
    layer.mode = cls.resolve_mode("cuda")
    cudnn = getattr(layer, "cudnn_supported", lambda: False)()
    if cudnn:
        layer.backend = "cudnn"
    if layer.mode == cls.default_mode and not cudnn:
        return None
    return layer


CUDA_CONFIGURED = [n for n in layers.names("sequence") if _cuda_configuration(n) is not None]
#: Newton modes recompile at each iteration's graph break (5-20 s each on 2 cores): one
#: representative in the fast suite (ParaLSTM runs the same solver as ParaGRU).
_SLOW = {"paralstm", "slstm"}


def test_the_cuda_configurations_are_covered():
    assert {"lstm", "gru", "elman", "mamba", "slstm", "paragru", "paralstm"} <= set(CUDA_CONFIGURED)


@pytest.mark.filterwarnings("ignore:.*Consider using tensor.detach.*:UserWarning")
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.slow] if n in _SLOW else []) for n in CUDA_CONFIGURED],
)
def test_compiles_in_its_cuda_configuration(name):
    layer = _cuda_configuration(name)
    x = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    y_ref, _ = layer(x)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    torch._dynamo.reset()
    fullgraph = layer.mode != "newton"  # Newton's stopping test: a graph break by design
    y, _ = torch.compile(layer, fullgraph=fullgraph, backend="aot_eager")(x)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    torch._dynamo.reset()
    assert_close(y, y_ref, rtol=1e-10, what=f"compiled {name} ({layer.mode}) output")
    assert_close(g, g_ref, rtol=1e-10, what=f"compiled {name} ({layer.mode}) input gradient")
