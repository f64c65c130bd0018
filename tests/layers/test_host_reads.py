"""No layer reads tensor values back to the host in its GPU configuration.

On a GPU, reading a value (``.item()``, ``bool(t)``, ``int(t)``, ``.tolist()``,
``nonzero``, a copy to the CPU) stalls the host until the device catches up. The layers
run here as they would on CUDA — the mode ``mode="auto"`` picks there, the ``"cudnn"``
backend of the classic RNNs, the PyTorch paths (``RNNX_NATIVE=0``: no CPU kernel) — with
those methods patched to record every read. A one-token decode step reads
nothing; a forward (no ``lengths``, no ``dt``) reads nothing except Newton's stopping
test (one residual per iteration, by design; docs/gpu.md). ``scripts/gpu_check.py``
counts the real synchronisations on a GPU.
"""

from __future__ import annotations

import traceback

import pytest
import torch

import rnnx.layers as layers

_TENSOR_READS = (
    "item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu",
    "numpy",
)  # fmt: skip

#: Layers whose forward still reads a value, and where (none: keep it that way).
KNOWN_FORWARD_READS: dict[str, str] = {}


class HostReads:
    """Record (method, rnnx source location) of every value read inside the block.

    The methods are patched on ``torch.Tensor`` itself (not a torch function mode, which
    autograd's backward pass does not see), so custom backward functions are covered.
    """

    def __init__(self) -> None:
        self.reads: list[tuple[str, str]] = []
        self._saved: dict[str, object] = {}

    def _wrap(self, name: str, original):
        def read(*args, **kwargs):
            frames = [f for f in traceback.extract_stack()[:-1] if "/rnnx/" in f.filename]
            where = frames[-1] if frames else None
            loc = f"{where.filename.split('/rnnx/')[-1]}:{where.lineno}" if where else "?"
            self.reads.append((name, loc))
            return original(*args, **kwargs)

        return read

    def __enter__(self) -> HostReads:
        for name in _TENSOR_READS:
            self._saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(name, self._saved[name]))
        self._saved["torch.nonzero"] = torch.nonzero
        torch.nonzero = self._wrap("torch.nonzero", torch.nonzero)
        return self

    def __exit__(self, *exc) -> None:
        torch.nonzero = self._saved.pop("torch.nonzero")
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()


def _gpu_like(name: str):
    torch.manual_seed(0)
    cls = layers.get(name)
    layer = cls(8, **cls.tiny_config())
    layer.mode = cls.resolve_mode("cuda")
    if getattr(layer, "cudnn_supported", lambda: False)():
        layer.backend = "cudnn"
    return layer


@pytest.fixture(autouse=True)
def _torch_paths(monkeypatch):
    monkeypatch.setenv("RNNX_NATIVE", "0")


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_decoding_a_token_reads_nothing(name):
    layer = _gpu_like(name).eval()
    with torch.no_grad():
        _, state = layer(torch.randn(2, 5, 8))
        probe = HostReads()
        with probe:
            layer.step(torch.randn(2, 1, 8), state)
    assert probe.reads == []


@pytest.mark.parametrize("name", layers.names("sequence"))
def test_forward_and_backward_read_nothing_but_newtons_stopping_test(name):
    layer = _gpu_like(name)
    x = torch.randn(2, 9, 8, requires_grad=True)
    probe = HostReads()
    with probe:
        y, _ = layer(x)
        y.square().mean().backward()
    allowed = ["ops/newton.py"] if layer.mode == "newton" else []
    if name in KNOWN_FORWARD_READS:
        allowed.append(KNOWN_FORWARD_READS[name])
    unexpected = [r for r in probe.reads if not any(a in r[1] for a in allowed)]
    assert unexpected == [], f"{name} ({layer.mode}) reads values back: {unexpected}"
