"""torch.compile against eager: one training step of a small model of each family, on the CPU.

For each layer (default: one per family, ``lstm``, ``paragru``, ``s4d``, ``mamba``,
``gla``), a :class:`rnnx.models.SequenceRegressor`-style stack: a linear encoder, 2 blocks
(norm, the layer in its default mode, residual) and a linear read-out, float32. One
training step is the forward pass, a mean-squared loss and the backward pass (the
gradients are reset to None before each step; no optimizer). Measured:

* ``eager ms``: the step as written;
* ``compiled ms``: the same model under ``torch.compile(model, fullgraph=True)`` in its
  default mode (Inductor, C++ code generation on the CPU); the native kernels appear in
  the graph as the operators ``torch.ops.rnnx.*`` (no graph break);
* ``compile s``: the first compiled step (tracing, code generation and the step);
* ``eager/compiled``: the speed-up of compilation (> 1: compiled is faster), both timed
  in alternating rounds in this run;
* ``max |Δ loss|`` and ``max |Δ grad|`` between the two (relative to the largest
  gradient): compilation must not change the numbers beyond float32 rounding.

Run: ``rnnx bench compile`` (``--quick`` for a smoke run, ``--layers`` to choose).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from rnnx.bench._common import interleaved, machine_info, markdown_table, ms, write_json
from rnnx.layers.base import RecurrentLayer

DESCRIPTION = "torch.compile vs eager: a training step of a small model of each family"

#: One layer per family (``rnnx list``): classic RNN, parallel RNN, LTI SSM, selective
#: SSM, linear attention.
FAMILIES = ("lstm", "paragru", "s4d", "mamba", "gla")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", default=",".join(FAMILIES), help="comma-separated names")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument(
        "--backend", default="inductor", help="torch.compile backend (default: its default)"
    )


class _Model(torch.nn.Module):
    def __init__(self, name: str, d_model: int, blocks: int) -> None:
        super().__init__()
        import rnnx.layers as layers

        self.encoder = torch.nn.Linear(8, d_model)
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(d_model) for _ in range(blocks))
        self.mixers = torch.nn.ModuleList(layers.get(name)(d_model) for _ in range(blocks))
        self.head = torch.nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x)
        for norm, mixer in zip(self.norms, self.mixers):
            y, _ = mixer(norm(h))
            h = h + y
        return self.head(h)


def _measure(
    name: str, B: int, T: int, D: int, blocks: int, repeat: int, backend: str
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = _Model(name, D, blocks)
    x = torch.randn(B, T, 8)
    target = torch.randn(B, T, 1)

    def step(fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
        for p in model.parameters():
            p.grad = None
        loss = (fn(x) - target).square().mean()
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]

    loss_e, grads_e = step(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    t0 = time.perf_counter()
    loss_c, grads_c = step(compiled)
    compile_s = time.perf_counter() - t0
    scale = max(float(g.abs().max()) for g in grads_e)
    d_grad = max(float((a - b).abs().max()) for a, b in zip(grads_c, grads_e)) / scale
    t = interleaved({"eager": lambda: step(model), "compiled": lambda: step(compiled)}, repeat)
    torch._dynamo.reset()
    mixer = model.mixers[0]
    assert isinstance(mixer, RecurrentLayer)
    return {
        "layer": name,
        "family": type(mixer).family,
        "mode": mixer.mode,
        "eager ms": ms(t["eager"]),
        "compiled ms": ms(t["compiled"]),
        "compile s": compile_s,
        "eager/compiled": t["eager"] / t["compiled"],
        "max |Δ loss|": f"{abs(float(loss_c - loss_e)):.1e}",
        "max |Δ grad|": f"{d_grad:.1e}",
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [v.strip() for v in args.layers.split(",") if v.strip()]
    B, T, D, blocks = args.batch, args.length, args.d_model, args.blocks
    if args.quick:
        B, T, D, blocks = 2, 64, 32, 1
    rows = []
    for name in names:
        rows.append(_measure(name, B, T, D, blocks, args.repeat, args.backend))
        print(f"  {name}: done", flush=True)
    cols = ["layer", "family", "mode", "eager ms", "compiled ms", "compile s", "eager/compiled",
            "max |Δ loss|", "max |Δ grad|"]  # fmt: skip
    info = machine_info()
    print(
        f"\ncompile, one training step (forward, MSE loss, backward), float32, batch {B}, "
        f"length {T}, d_model {D}, {blocks} block(s), {torch.get_num_threads()} threads on "
        f"{info['cpu']}, backend {args.backend} (median of {args.repeat} alternating rounds)\n"
    )
    print(markdown_table(rows, cols))
    payload = {
        "benchmark": "compile",
        "shape": {"batch": B, "length": T, "d_model": D, "blocks": blocks, "dtype": "float32"},
        "backend": args.backend,
        "rows": rows,
        "machine": info,
    }
    if args.out:
        print(f"results: {write_json(args.out, payload)}")
    return payload
