"""ParaGRU / ParaLSTM forward+backward: Newton, the fused kernel, a Python loop, pararnn-torch.

For each layer (``paragru``, ``paralstm``) and length T, at batch 8, d_in = d_h = 128,
float32, one forward and backward of ``y.sum()``:

* ``loop``: the cell in a Python loop with linear-cost backward (iterate over
  ``x.unbind(1)``, stack once): rnnx's mode ``"recurrent"`` on backend ``"torch"``, the
  baseline;
* ``fused``: rnnx's default, mode ``"recurrent"`` on backend ``"auto"``: the recurrence in
  one native kernel;
* ``newton``: rnnx's ``"newton"`` mode (Newton + scan, adjoint backward), with its
  iteration count and final residual max |f(h_{t-1}, x_t) - h_t|;
* ``pararnn-torch``: ``pararnn.solvers.newton.newton_apply`` with the default
  ``NewtonConfig()`` on the peer's own ParaGRU / ParaLSTM, rnnx's weights copied in
  (recurrent vectors clamped to the peer's default [-0.5, 0.5] in both, so both compute
  the same function; ``max |dy|`` reports the agreement), with its iteration count and
  final residual. It runs in a child process (spawned, one per measurement), so that its
  imports (triton, its own kernels and settings) cannot change the conditions of
  rnnx's measurements in this process.

The peer is optional (skipped, with the reason, when it does not import). To get it::

    python3 -m venv /work/scratch/pararnn-venv
    /work/scratch/pararnn-venv/bin/pip install torch==2.13.0
    /work/scratch/pararnn-venv/bin/pip install --no-deps pararnn-torch
    /work/scratch/pararnn-venv/bin/pip install numpy safetensors "triton>=3.6,<3.7"

(pararnn-torch imports triton even on CPU) and run with its site-packages after rnnx's::

    PYTHONPATH=/work/scratch/pararnn-venv/lib/python3.11/site-packages rnnx bench newton
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from typing import Any

import torch

from rnnx.bench._common import import_peer, machine_info, markdown_table, ms, timeit, write_json
from rnnx.layers.pararnn import ParaGRU, ParaLSTM

DESCRIPTION = "ParaGRU/ParaLSTM: Newton vs fused kernel vs Python loop vs pararnn-torch"

TARGETS = {"pararnn-torch/newton": 2.0, "loop/default": 1.0}
CAP = 0.5  # pararnn-torch's default clamp of the recurrent vectors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--features", type=int, default=128, help="d_in = d_h")
    parser.add_argument("--lengths", default="256,1024,4096", help="comma-separated T")
    parser.add_argument("--layers", default="paragru,paralstm")
    parser.add_argument("--no-peer", action="store_true", help="skip pararnn-torch")


def _layer(name: str, D: int) -> ParaGRU | ParaLSTM:
    layer = ParaGRU(D) if name == "paragru" else ParaLSTM(D)
    with torch.no_grad():
        layer.a.clamp_(-CAP, CAP)
        if isinstance(layer, ParaLSTM):
            layer.peephole.clamp_(-CAP, CAP)
    return layer


def _peer_cell(name: str, layer: ParaGRU | ParaLSTM, D: int, pararnn: Any) -> torch.nn.Module:
    from pararnn.cells import ParaGRU as PeerGRU
    from pararnn.cells import ParaLSTM as PeerLSTM

    cell = (PeerGRU if name == "paragru" else PeerLSTM)(D, D)
    with torch.no_grad():
        cell.W_x.weight.copy_(layer.weight)
        cell.W_x.bias.copy_(layer.bias)
        if name == "paragru":
            for i, n in enumerate(("a_z", "a_r", "a_n")):
                getattr(cell, n).copy_(layer.a[i])
        else:
            for i, n in enumerate(("a_f", "a_z", "a_o")):
                getattr(cell, n).copy_(layer.a[i])
            assert isinstance(layer, ParaLSTM)
            cell.c_f.copy_(layer.peephole[0])
            cell.c_o.copy_(layer.peephole[1])
    return cell


def _ours(layer, mode: str, x: torch.Tensor, backend: str = "auto"):
    def fn():
        layer.mode = mode
        layer.backend = backend
        xx = x.detach().requires_grad_()
        y, _ = layer(xx)
        y.sum().backward()
        return y.detach()

    return fn


def _peer_fn(name: str, cell, x: torch.Tensor, newton: Any, stats_box: list):
    def fn():
        stats = newton.NewtonStats()
        xx = x.detach().requires_grad_()
        H = newton.newton_apply(cell, xx, newton.NewtonConfig(), stats=stats)
        y = H if name == "paragru" else H[..., 1, :]
        y.sum().backward()
        stats_box[:] = [stats]
        return y.detach()

    return fn


def _peer_child(conn, name: str, layer_state: dict, x: torch.Tensor, repeat: int, threads: int):
    torch.set_num_threads(threads)
    newton, why = import_peer("pararnn.solvers.newton")
    if newton is None:
        conn.send({"skipped": why})
        return
    layer = _layer(name, x.shape[-1])
    layer.load_state_dict(layer_state)
    cell = _peer_cell(name, layer, x.shape[-1], newton)
    box: list = []
    y = _peer_fn(name, cell, x, newton, box)()
    t = timeit(_peer_fn(name, cell, x, newton, box), repeat=repeat)["median"]
    # numpy, not a tensor: a tensor would travel as shared memory owned by this process
    conn.send({"time": t, "y": y.numpy(), "iters": box[0].iters, "residual": box[0].max_residual})
    conn.close()


def _run_peer(name: str, layer, x: torch.Tensor, repeat: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    state = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    proc = ctx.Process(
        target=_peer_child, args=(child, name, state, x, repeat, torch.get_num_threads())
    )
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def _measure(name: str, B: int, T: int, D: int, repeat: int, peer: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    layer = _layer(name, D)
    x = torch.randn(B, T, D)
    few = max(1, repeat // 2)
    t: dict[str, float] = {}
    t["loop"] = timeit(_ours(layer, "recurrent", x, "torch"), repeat=few)["median"]
    t["fused"] = timeit(_ours(layer, "recurrent", x), repeat=repeat)["median"]
    t["newton"] = timeit(_ours(layer, "newton", x), repeat=repeat)["median"]
    info = layer.newton_info
    assert info is not None  # set by the newton run just timed
    row: dict[str, Any] = {"layer": name, "T": T}
    row["newton iters"] = info.iterations
    row["newton residual"] = f"{info.residual:.1e}"
    if peer:
        out = _run_peer(name, layer, x, few)
        if "skipped" in out:
            print(f"  pararnn-torch: skipped ({out['skipped']})")
        else:
            y_ours = _ours(layer, "newton", x)()
            dy = (torch.from_numpy(out["y"]) - y_ours).abs().max()
            row["max |dy|"] = f"{float(dy):.1e}"
            t["pararnn-torch"] = out["time"]
            row["peer iters"] = out["iters"]
            row["peer residual"] = f"{out['residual']:.1e}"
    row.update({f"{k} ms": ms(v) for k, v in t.items() if v is not None})
    row["loop/default"] = t["loop"] / t["fused"]
    row["loop/newton"] = t["loop"] / t["newton"]
    row["newton/fused"] = t["newton"] / t["fused"]
    if t.get("pararnn-torch"):
        row["pararnn-torch/newton"] = t["pararnn-torch"] / t["newton"]
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    B, D = args.batch, args.features
    lengths = [int(v) for v in args.lengths.split(",") if v.strip()]
    names = [v.strip() for v in args.layers.split(",") if v.strip()]
    if args.quick:
        B, D, lengths = 2, 32, [64, 256]
    peer = not args.no_peer
    rows = []
    for name in names:
        for T in lengths:
            rows.append(_measure(name, B, T, D, args.repeat, peer))
            if peer and "pararnn-torch ms" not in rows[-1]:
                peer = False  # not importable: say so once
            print(f"  {name} T={T}: done", flush=True)
    cols = [
        "layer",
        "T",
        "loop ms",
        "fused ms",
        "newton ms",
        "pararnn-torch ms",
        "newton iters",
        "newton residual",
        "peer iters",
        "peer residual",
        "max |dy|",
        "loop/default",
        "loop/newton",
        "newton/fused",
        "pararnn-torch/newton",
    ]
    print(
        f"\nnewton, forward+backward, float32, batch {B}, d_in = d_h = {D}, "
        f"{torch.get_num_threads()} threads (times: median of {args.repeat}; "
        f"loop and pararnn-torch: median of {max(1, args.repeat // 2)})\n"
    )
    print(markdown_table(rows, cols))
    print("\ntargets: pararnn-torch/newton >= 2, loop/default >= 1 at every T")
    payload = {
        "benchmark": "newton",
        "shape": {"batch": B, "features": D, "lengths": lengths, "dtype": "float32"},
        "targets": TARGETS,
        "rows": rows,
        "machine": machine_info(),
    }
    if args.out:
        print(f"results: {write_json(args.out, payload)}")
    return payload
