"""Per-call cost of the ways to bind a kernel as a PyTorch operator, and of a decode step.

Part 1 binds one trivial kernel (it returns two preallocated tensors, so only the binding
is timed) in each of the ways torch offers and times a call, without and with inputs that
require grad:

* ``python``: the function itself (what a ctypes binding without an operator costs);
* ``custom_op``: ``@torch.library.custom_op`` with ``register_fake``;
* ``Library``: ``torch.library.Library("...", "DEF")`` + ``define`` + ``impl(..., "CPU")``;
* ``Library + register_autograd``: the same with ``torch.library.register_autograd``;
* ``Library + Autograd kernel``: the same with a hand-written kernel at the ``Autograd``
  key that applies a ``torch.autograd.Function`` (what ``rnnx._native.ops`` registers);
* ``below autograd``: that operator called inside ``torch._C._AutoDispatchBelowAutograd``
  (what ``rnnx._native.ops.call`` does when no gradient is needed).

Part 2 times one-token decode steps of layers whose step runs a native kernel (batch 1,
d_model 256): ``Mamba.step`` (``rnnx::selective_scan``), ``ParaGRU.step``
(``rnnx::pararnn``) and, for reference, ``LSTM.step`` (torch's fused cell, no rnnx kernel).
Run it against two checkouts to compare them::

    flock /tmp/rnnx-bench.lock python docs/scripts/op_overhead.py
    PYTHONPATH=/path/to/other/src python docs/scripts/op_overhead.py --decode-only
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _time(fn, n: int) -> float:
    """Median over 5 rounds of the mean time of ``n`` calls, in microseconds."""
    for _ in range(max(10, n // 20)):
        fn()
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(rounds)


def binding_costs(n: int) -> list[tuple[str, float, float]]:
    out_a, out_b = torch.empty(1, 16), torch.empty(1, 16)

    def kernel(x, w, k):
        return out_a, out_b

    lib = torch.library.Library("rnnx_overhead", "DEF")
    below = torch._C._AutoDispatchBelowAutograd

    def fake(x, w, k):
        return torch.empty_like(x), torch.empty_like(x)

    def backward(ctx, ga, gb):
        return ga, None, None

    def setup(ctx, inputs, output):
        pass

    # custom_op
    @torch.library.custom_op("rnnx_overhead::custom", mutates_args=())
    def custom(x: torch.Tensor, w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        return out_a.clone(), out_b.clone()

    custom.register_fake(fake)
    custom.register_autograd(backward, setup_context=setup)

    for name in ("plain", "reg", "hand"):
        lib.define(f"{name}(Tensor x, Tensor w, int k) -> (Tensor, Tensor)")
        lib.impl(name, kernel, "CPU")
        torch.library.register_fake(f"rnnx_overhead::{name}", fake, lib=lib)
    torch.library.register_autograd("rnnx_overhead::reg", backward, setup_context=setup, lib=lib)
    hand = torch.ops.rnnx_overhead.hand.default

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, k):
            with below():
                return hand(x, w, k)

        @staticmethod
        def backward(ctx, ga, gb):
            return ga, None, None

    def autograd_kernel(x, w, k):
        if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
            return Fn.apply(x, w, k)
        with below():
            return hand(x, w, k)

    lib.impl("hand", autograd_kernel, "Autograd")

    def below_call(x, w, k):
        with below():
            return hand(x, w, k)

    x, w = torch.randn(1, 16), torch.randn(16)
    xg = x.clone().requires_grad_()
    ways = [
        ("python", kernel),
        ("custom_op", torch.ops.rnnx_overhead.custom.default),
        ("Library", torch.ops.rnnx_overhead.plain.default),
        ("Library + register_autograd", torch.ops.rnnx_overhead.reg.default),
        ("Library + Autograd kernel", hand),
        ("below autograd (no grad only)", below_call),
    ]
    rows = []
    for name, fn in ways:
        with torch.no_grad():
            t_ng = _time(lambda fn=fn: fn(x, w, 3), n)
        t_g = (
            float("nan")
            if name in ("python", "Library", "below autograd (no grad only)")
            else (_time(lambda fn=fn: fn(xg, w, 3), n // 4))
        )
        rows.append((name, t_ng, t_g))
    return rows


def decode_costs(n: int) -> list[tuple[str, float]]:
    import rnnx.layers as layers

    rows = []
    for name in ("mamba", "paragru", "lstm"):
        torch.manual_seed(0)
        layer = layers.get(name)(256).eval()
        x = torch.randn(1, 1, 256)
        state = layer.init_state(1)
        with torch.no_grad():
            t = _time(lambda layer=layer, x=x, state=state: layer.step(x, state), n)
        rows.append((f"{name}.step", t))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--decode-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.decode_only:
        print("| binding | µs per call, no grad | µs per call, inputs require grad |")
        print("|---|---|---|")
        for name, t_ng, t_g in binding_costs(args.calls):
            g = "" if t_g != t_g else f"{t_g:.1f}"
            print(f"| {name} | {t_ng:.1f} | {g} |")
        print()
    print("| decode step (batch 1, d_model 256, 1 thread) | µs |")
    print("|---|---|")
    for name, t in decode_costs(args.calls // 4):
        print(f"| {name} | {t:.1f} |")


if __name__ == "__main__":
    main()
