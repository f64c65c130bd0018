"""A/B timing of the native-kernel paths of two rnnx checkouts, robust to a loaded machine.

Times, with public APIs only (so it runs against any checkout), every op and layer path
that runs a native kernel: the linear scan, the classic RNN time loop, the selective scan,
the GLA and mLSTM chunked forms, ParaGRU/ParaLSTM (fused and Newton), each forward and
forward+backward, and one-token decode steps. Each figure is the *minimum* over
``--repeat`` calls (the least-disturbed run; a median on a shared machine mostly measures
the other jobs). Run it alternately against the two checkouts, several rounds, and keep
the minimum per row (``--merge``)::

    for r in 1 2 3; do for v in before after; do
      PYTHONPATH=/path/to/$v/src flock /tmp/rnnx-bench.lock \\
        python docs/scripts/native_ab.py --out ab/$v-$r.json
    done; done
    python docs/scripts/native_ab.py --merge ab

Shapes are moderate (a few ms per call): large enough that the kernels dominate, small
enough that per-call overhead (dispatch, argument checks) shows.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from collections.abc import Callable

import torch


def _min_time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _fb(fn: Callable[[], torch.Tensor], params: list[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        for p in params:
            p.grad = None
        out = fn()
        out.sum().backward()

    return run


def cases() -> dict[str, Callable[[], object]]:
    import rnnx.layers as layers
    from rnnx.ops import scan
    from rnnx.ops.chunk import gla
    from rnnx.ops.mlstm import mlstm
    from rnnx.ops.rnn import rnn_sequence
    from rnnx.ops.selective_scan import selective_scan

    g = torch.Generator().manual_seed(0)

    def rand(*shape, grad=False, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(grad)

    out: dict[str, Callable[[], object]] = {}
    # linear scan, B 4, L 1024, D 256
    for name, a, b, st in (
        ("real", rand(4, 1024, 256).sigmoid(), rand(4, 1024, 256), "diagonal"),
        ("complex", torch.polar(rand(4, 1024, 128).sigmoid(), rand(4, 1024, 128)),
         torch.complex(rand(4, 1024, 128), rand(4, 1024, 128)), "diagonal"),
        ("block2", rand(4, 1024, 128, 2, 2) * 0.5, rand(4, 1024, 256), None),
    ):  # fmt: skip
        from rnnx.ops import BlockDiagonal

        structure = BlockDiagonal(2) if st is None else st
        out[f"scan {name} fwd"] = lambda a=a, b=b, s=structure: scan(a, b, structure=s)
        ag, bg = a.detach().requires_grad_(), b.detach().requires_grad_()
        out[f"scan {name} fwd+bwd"] = _fb(
            lambda ag=ag, bg=bg, s=structure: scan(ag, bg, structure=s)[0].real, [ag, bg]
        )
    # classic RNN time loop, B 8, T 256, H 128
    for cell, G, nst in (("lstm", 4, 2), ("gru", 3, 1), ("slstm", 4, 4)):
        heads = 4 if cell == "slstm" else 1
        gx = rand(8, 256, G * 128)
        w = rand(G * 128, 128 // heads) * 0.1
        state = tuple(rand(8, 128).abs() + (0.5 if i == 2 else 0) for i in range(nst))
        kw = {"num_heads": heads}
        out[f"rnn {cell} fwd"] = lambda c=cell, gx=gx, w=w, s=state, kw=kw: torch.no_grad()(
            rnn_sequence
        )(c, gx, w, s, **kw)
        gxg, wg = gx.detach().requires_grad_(), w.detach().requires_grad_()
        out[f"rnn {cell} fwd+bwd"] = _fb(
            lambda c=cell, gx=gxg, w=wg, s=state, kw=kw: rnn_sequence(c, gx, w, s, **kw)[0],
            [gxg, wg],
        )
    # selective scan, B 2, L 512, D 128, N 16
    u, dl = rand(2, 512, 128, grad=True), rand(2, 512, 128, grad=True)
    A = -rand(128, 16).abs().requires_grad_()
    B_, C_ = rand(2, 512, 16, grad=True), rand(2, 512, 16, grad=True)
    Dk, z = rand(128, grad=True), rand(2, 512, 128, grad=True)
    ss_args = (u, dl, A, B_, C_, Dk, z)
    out["selective_scan fwd"] = lambda: torch.no_grad()(selective_scan)(
        *ss_args, delta_softplus=True
    )
    out["selective_scan fwd+bwd"] = _fb(
        lambda: selective_scan(*ss_args, delta_softplus=True)[0], list(ss_args)
    )
    # GLA and mLSTM chunked forms, B 2, T 512, H 2, K = V = 32
    q, k, v = (
        rand(2, 512, 2, 32, grad=True),
        rand(2, 512, 2, 32, grad=True),
        rand(2, 512, 2, 32, grad=True),
    )
    gk = (-rand(2, 512, 2, 32).abs() * 0.1).requires_grad_()
    out["gla fwd+bwd"] = _fb(lambda: gla(q, k, v, gk)[0], [q, k, v, gk])
    ig, fg = rand(2, 512, 2, grad=True), rand(2, 512, 2, grad=True)
    out["mlstm fwd+bwd"] = _fb(lambda: mlstm(q, k, v, ig, fg)[0], [q, k, v, ig, fg])
    # ParaGRU / ParaLSTM, B 4, T 256, d 64: fused (default) and Newton
    x = rand(4, 256, 64)
    for name in ("paragru", "paralstm"):
        torch.manual_seed(0)
        layer = layers.get(name)(64)
        params = list(layer.parameters())
        out[f"{name} fused fwd+bwd"] = _fb(lambda layer=layer: layer(x)[0], params)
        nl = layers.get(name)(64, mode="newton")
        out[f"{name} newton fwd+bwd"] = _fb(lambda nl=nl: nl(x)[0], list(nl.parameters()))
    # one-token decode steps, batch 1, d_model 256
    for name in ("mamba", "paragru", "lstm"):
        torch.manual_seed(0)
        layer = layers.get(name)(256).eval()
        tok = rand(1, 1, 256)
        st = layer.init_state(1)
        out[f"decode {name}.step"] = lambda layer=layer, tok=tok, st=st: torch.no_grad()(
            layer.step
        )(tok, st)
    return out


def merge(folder: str) -> None:
    best: dict[str, dict[str, float]] = {}
    rounds: dict[str, int] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        version = os.path.basename(path).split("-")[0]
        rounds[version] = rounds.get(version, 0) + 1
        with open(path) as f:
            results = json.load(f)["times_ms"]
        for name, t in results.items():
            row = best.setdefault(name, {})
            row[version] = min(row.get(version, float("inf")), t)
    print(f"rounds: {rounds}")
    print("| path | before ms | after ms | after/before |")
    print("|---|---|---|---|")
    for name, row in best.items():
        if "before" in row and "after" in row:
            unit = 1e3 if name.startswith("decode") else 1.0
            label = "µs" if unit != 1.0 else "ms"
            print(
                f"| {name} ({label}) | {row['before'] * unit:.3g} | {row['after'] * unit:.3g} "
                f"| {row['after'] / row['before']:.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--merge", default=None, help="folder of JSON results to combine")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge)
        return
    torch.set_num_threads(args.threads)
    import rnnx

    times = {}
    for name, fn in cases().items():
        times[name] = _min_time(fn, args.repeat)
        print(f"{name}: {times[name]:.3f} ms", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"rnnx": rnnx.__file__, "threads": args.threads, "times_ms": times}, f)


if __name__ == "__main__":
    main()
