"""The linear SSM family (LSSL, S4, S4D, S5, LRU): training speed against the S5 peer,
long convolutions (time and peak memory against L), and step (decode) latency.

Three tables, float32, all ratios measured side by side in this run:

* ``train``: forward+backward of one layer at batch 16, length 1024, 256 features,
  state size 64, against ``s5-pytorch`` (the S5 port on PyPI, ``import s5``) wrapped
  in the same GELU + GLU output block the rnnx layers have, and against the layers' own
  ``"recurrent"`` mode (the reference loop; S5 and LRU only: the per-feature S4D loop
  over 256 x 32 modes takes minutes at this size). The peer stores all 64 complex modes; the
  rnnx S5 is measured both with conjugate symmetry (32 stored modes, its default) and
  without (64, like for like). Get the peer into a scratch venv, outside the repo::

      python3 -m venv /work/scratch/s5-venv
      /work/scratch/s5-venv/bin/pip install torch==2.13.0
      /work/scratch/s5-venv/bin/pip install --no-deps s5-pytorch==0.2.1 einops scipy

  and run with its site-packages after rnnx's own, e.g.
  ``PYTHONPATH=/work/scratch/s5-venv/lib/python3.11/site-packages rnnx bench ssm``.
  Without the peer the table says so and keeps the recurrent baseline.
* ``long``: the convolutional view of LSSL, S4 and S4D at batch 8, 128 features, state
  64, for several lengths up to 16000 (the raw Speech Commands length): forward+backward
  time and peak resident memory of the call (:func:`rnnx.bench._common.peak_memory`, a
  fresh process per measurement). Memory per step should stay flat (linear in L).
* ``step``: the latency of ``layer.step`` on one token at batch 1 after the state was
  prefilled to position p (p = 1 … 65536), for every layer of the family; flat in p.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, cast

import torch
from torch import nn

import rnnx.layers as layers
from rnnx.bench._common import (
    import_peer,
    machine_info,
    markdown_table,
    ms,
    peak_memory,
    timeit,
    write_json,
)
from rnnx.layers._ssm import GLUOutput
from rnnx.layers.base import RecurrentLayer

GROUP = "layers"
DESCRIPTION = "LSSL/S4/S4D/S5/LRU: train speed vs s5-pytorch, long conv time+memory, step latency"

FAMILY = ("lssl", "s4", "s4d", "s5", "lru")
TARGETS = {"s5-pytorch / rnnx fwd+bwd (S4D, S5)": 2.0, "step latency p=65536 / p=1": 1.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--state", type=int, default=64)
    parser.add_argument(
        "--long-lengths",
        default="4000,8000,16000",
        help="comma-separated lengths of the long-convolution table",
    )
    parser.add_argument(
        "--positions", default="1,1024,65536", help="comma-separated prefill positions"
    )
    parser.add_argument(
        "--tables", default="train,long,step", help="comma-separated: train, long, step"
    )
    parser.add_argument(
        "--no-recurrent", action="store_true", help="skip the (slow) recurrent-mode baseline"
    )


# ----------------------------------------------------------------------------- layers


class _PeerS5(nn.Module):
    """s5-pytorch's S5 SSM followed by the same output block as rnnx's S5."""

    def __init__(self, peer: Any, d_model: int, d_state: int) -> None:
        super().__init__()
        self.ssm = peer.S5(d_model, d_state)
        self.output = GLUOutput(d_model, d_model, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.ssm(x))


def _rnnx_layer(spec: str, H: int, N: int) -> nn.Module:
    name, _, variant = spec.partition(":")
    kw: dict[str, Any] = {"d_state": N}
    if variant == "full":
        kw["conj_sym"] = False
    return layers.get(name)(H, **kw)


def _fwd_bwd(module: nn.Module, x: torch.Tensor, mode: str | None):
    def fn():
        xx = x.detach().requires_grad_()
        if mode is None:
            y = module(xx)
        else:
            with cast(RecurrentLayer, module).using_mode(mode):  # a mode: an rnnx layer
                y, _ = module(xx)
        y.square().mean().backward()

    return fn


# ----------------------------------------------------------------------------- train


def _train_table(args, B, L, H, N, repeat) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    x = torch.randn(B, L, H)
    peer, why = import_peer("s5")
    t_peer = None
    if peer is not None:
        torch.manual_seed(0)
        peer_layer = _PeerS5(peer, H, N)
        t_peer = timeit(_fwd_bwd(peer_layer, x, None), repeat=repeat)["median"]
        print(f"  s5-pytorch S5 (P={N}, all modes stored): {ms(t_peer):.1f} ms", flush=True)
    else:
        print(f"  s5-pytorch not importable ({why}); the recurrent mode is the baseline")
    rows: list[dict[str, Any]] = []
    for spec, mode in [
        ("s4d", "conv"),
        ("s5", "scan"),
        ("s5:full", "scan"),
        ("lru", "scan"),
        ("s4", "conv"),
        ("lssl", "conv"),
    ]:
        torch.manual_seed(0)
        layer = _rnnx_layer(spec, H, N)
        t = timeit(_fwd_bwd(layer, x, mode), repeat=repeat)["median"]
        t_rec = None
        if not args.no_recurrent and spec in ("s5", "s5:full", "lru"):
            t_rec = timeit(_fwd_bwd(layer, x, "recurrent"), repeat=1, warmup=0)["median"]
        row = {
            "layer": spec.replace(":full", " (no conj. sym.)"),
            "mode": mode,
            "fwd+bwd ms": ms(t),
            "recurrent fwd+bwd ms": ms(t_rec) if t_rec else None,
            "s5-pytorch fwd+bwd ms": ms(t_peer) if t_peer else None,
            "s5-pytorch / rnnx": t_peer / t if t_peer else None,
            "recurrent / rnnx": t_rec / t if t_rec else None,
        }
        rows.append(row)
        print(f"  {row['layer']} {mode}: {ms(t):.1f} ms", flush=True)
    # S4D's recurrent baseline is mode-independent: show it on the conv row too
    for r in rows:
        if r["layer"] == "s4d" and r["recurrent fwd+bwd ms"] is None:
            other = next(
                (o for o in rows if o["layer"] == "s4d" and o["recurrent fwd+bwd ms"]), None
            )
            if other:
                r["recurrent fwd+bwd ms"] = other["recurrent fwd+bwd ms"]
                r["recurrent / rnnx"] = other["recurrent fwd+bwd ms"] / r["fwd+bwd ms"]
    return rows


# ----------------------------------------------------------------------------- long conv


def long_conv_case(name: str, B: int, L: int, H: int, N: int):
    """Build one long-convolution case; returns the forward+backward callable
    (``peak_memory`` target)."""
    torch.manual_seed(0)
    layer = layers.create(name, H, d_state=N, mode="conv")
    x = torch.randn(B, L, H)

    def fn():
        xx = x.detach().requires_grad_()
        y, s = layer(xx)
        (y.square().mean() + s.abs().square().mean()).backward()

    return fn


def _long_table(lengths, B, H, N, repeat) -> list[dict[str, Any]]:
    rows = []
    for name in ("lssl", "s4", "s4d"):
        first = None
        for L in lengths:
            t = timeit(long_conv_case(name, B, L, H, N), repeat=repeat)["median"]
            mem = peak_memory("rnnx.bench.ssm:long_conv_case", name=name, B=B, L=L, H=H, N=N)
            per_step = mem / L
            first = first or per_step or 1.0
            rows.append(
                {
                    "layer": name,
                    "L": L,
                    "fwd+bwd ms": ms(t),
                    "peak MiB": mem / 2**20,
                    "KiB per step": per_step / 1024,
                    "per step vs shortest": per_step / first,
                }
            )
            print(f"  {name} L={L}: {ms(t):.0f} ms, {mem / 2**20:.0f} MiB", flush=True)
    return rows


# ----------------------------------------------------------------------------- step latency


def _step_table(positions, H, N, repeat) -> list[dict[str, Any]]:
    rows = []
    chunk = 4096
    for name in FAMILY:
        torch.manual_seed(0)
        layer = layers.create(name, H, d_state=N).eval()
        row: dict[str, Any] = {"layer": name, "step mode": layer.step_mode}
        times = []
        with torch.no_grad():
            for p in positions:
                g = torch.Generator().manual_seed(p)
                state, done = None, 0
                while done < p:  # prefill in the layer's default (parallel) mode
                    n = min(chunk, p - done)
                    _, state = layer(torch.randn(1, n, H, generator=g), state)
                    done += n
                tok = torch.randn(1, 1, H, generator=g)
                t = timeit(functools.partial(layer.step, tok, state), repeat=max(repeat, 20))
                times.append(t["median"])
                row[f"p={p} µs"] = t["median"] * 1e6
        row["last / first"] = times[-1] / times[0]
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"{t * 1e6:.0f} µs" for t in times), flush=True)
    return rows


# ----------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> dict[str, Any]:
    B, L, H, N = args.batch, args.length, args.features, args.state
    lengths = [int(v) for v in args.long_lengths.split(",") if v.strip()]
    positions = [int(v) for v in args.positions.split(",") if v.strip()]
    long_B, long_H = 8, 128
    if args.quick:
        B, L, H, N = 2, 128, 16, 8
        lengths, positions, long_B, long_H = [256, 512], [1, 64], 2, 8
    tables = {t.strip() for t in args.tables.split(",") if t.strip()}
    repeat = args.repeat
    payload: dict[str, Any] = {"benchmark": "ssm", "targets": TARGETS}
    threads = torch.get_num_threads()
    if "train" in tables:
        print(f"\n[train] batch {B}, length {L}, features {H}, state {N}", flush=True)
        rows = _train_table(args, B, L, H, N, repeat)
        print(
            f"\nSSM layers forward+backward, float32, batch {B}, length {L}, features {H}, "
            f"state {N}, {threads} threads (median of {repeat})\n"
        )
        print(
            markdown_table(
                rows,
                [
                    "layer",
                    "mode",
                    "fwd+bwd ms",
                    "s5-pytorch fwd+bwd ms",
                    "recurrent fwd+bwd ms",
                    "s5-pytorch / rnnx",
                    "recurrent / rnnx",
                ],
            )
        )
        payload["train"] = {"shape": {"batch": B, "length": L, "features": H, "state": N}}
        payload["train"]["rows"] = rows
    if "long" in tables:
        print(f"\n[long] batch {long_B}, features {long_H}, state {N}, L in {lengths}", flush=True)
        rows = _long_table(lengths, long_B, long_H, N, max(1, repeat // 2))
        print(
            f"\nConvolutional view, forward+backward, float32, batch {long_B}, features "
            f"{long_H}, state {N}, {threads} threads; peak = extra resident memory of "
            "one call in a fresh process\n"
        )
        print(
            markdown_table(
                rows,
                ["layer", "L", "fwd+bwd ms", "peak MiB", "KiB per step", "per step vs shortest"],
            )
        )
        payload["long"] = {"batch": long_B, "features": long_H, "state": N, "rows": rows}
    if "step" in tables:
        print(f"\n[step] batch 1, features {H}, state {N}, positions {positions}", flush=True)
        rows = _step_table(positions, H, N, repeat)
        print(
            f"\nStep latency (one token, batch 1, features {H}, state {N}, {threads} "
            "threads; median)\n"
        )
        cols = ["layer", "step mode", *[f"p={p} µs" for p in positions], "last / first"]
        print(markdown_table(rows, cols))
        payload["step"] = {"features": H, "state": N, "positions": positions, "rows": rows}
    print(
        "\ntargets: s5-pytorch / rnnx >= 2 for S4D and S5 (train); step latency flat in p "
        "(last / first about 1); peak memory per step flat in L (long)"
    )
    payload["machine"] = machine_info()
    if args.out:
        print(f"results: {write_json(args.out, payload)}")
    return payload
