"""rnnx.ops.ssd (Mamba-2): the chunked algorithm against its recurrent reference.

Shape: batch 4, length 2048, 4 heads of 64 channels, state 64, one group of B/C, float32.

* ``fwd`` / ``fwd+bwd``: the chunked algorithm (rows ``chunked``, ``backend="torch"``)
  against ``ssd_reference`` (a loop over ``unbind(1)`` with stack at the end:
  linear-cost backward), and against the paper's own
  minimal chunked listing, ``mamba_ssm.modules.ssd_minimal.ssd_minimal_discrete``
  (plain PyTorch; Listing 1 of arXiv 2405.21060) when mamba_ssm is installed (see
  :mod:`rnnx.bench.selective_scan` for how; its triton import gets a stand-in). Outputs
  are compared with both.
* ``chunk sweep``: chunked forward+backward time per chunk size.
* ``peak MiB``: extra peak memory of one forward+backward (fresh process each).
* ``decode``: one-token :meth:`Mamba2.step` latency after prefills of growing length.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import torch

from rnnx.bench._common import machine_info, markdown_table, ms, peak_memory, write_json
from rnnx.bench.selective_scan import decode_latency, load_mamba_module, no_grad, time_in_turns
from rnnx.ops.ssd import ssd, ssd_reference

DESCRIPTION = "Mamba-2 SSD: chunked vs recurrent reference (and mamba_ssm's ssd_minimal)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--headdim", type=int, default=64)
    parser.add_argument("--state", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--chunks", default="32,64,128,256", help="chunk sizes of the sweep")
    parser.add_argument("--no-peer", action="store_true", help="skip mamba_ssm")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory runs")
    parser.add_argument("--positions", default="0,1024,4096,16384", help="decode positions")


def make_inputs(batch: int, length: int, heads: int, headdim: int, state: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(batch, length, heads, headdim, generator=g),
        "dt": torch.nn.functional.softplus(torch.randn(batch, length, heads, generator=g) - 3),
        "A": -torch.linspace(1.0, 16.0, heads),
        "B": torch.randn(batch, length, 1, state, generator=g),
        "C": torch.randn(batch, length, 1, state, generator=g),
    }


def _rnnx(inp: dict, variant: str, chunk: int):
    """``variant``: ``"chunked"`` (:func:`ssd`, backend ``"torch"``) or ``"reference"``
    (:func:`ssd_reference`, the recurrence)."""
    if variant == "reference":
        return ssd_reference(inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"])[0]
    return ssd(
        inp["x"], inp["dt"], inp["A"], inp["B"], inp["C"], chunk_size=chunk, backend="torch"
    )[0]


def _minimal(fn, inp: dict, chunk: int):
    H = inp["x"].shape[2]
    B = inp["B"].expand(-1, -1, H, -1)
    C = inp["C"].expand(-1, -1, H, -1)
    # its inputs are discretised: X Δ and A Δ per step
    return fn(inp["x"] * inp["dt"].unsqueeze(-1), inp["A"] * inp["dt"], B, C, chunk)[0]


def fwd_bwd_callable(
    backend: str, batch: int, length: int, heads: int, headdim: int, state: int, chunk: int
) -> Any:
    """A zero-argument forward+backward (also the peak-memory target); one short run
    first, so that one-time costs (libraries, allocator pools) are not counted."""
    warm = make_inputs(1, 2 * chunk, heads, headdim, state)
    warm["x"].requires_grad_()
    _rnnx(warm, backend, chunk).sum().backward()
    inp = make_inputs(batch, length, heads, headdim, state)
    for v in inp.values():
        v.requires_grad_()

    def fn() -> None:
        for v in inp.values():
            v.grad = None
        _rnnx(inp, backend, chunk).sum().backward()

    return fn


def run(args: argparse.Namespace) -> dict[str, Any]:
    Bz, L, H, P, N, K = args.batch, args.length, args.heads, args.headdim, args.state, args.chunk
    sweep = [int(c) for c in args.chunks.split(",") if c.strip()]
    positions = [int(p) for p in args.positions.split(",") if p.strip()]
    if args.quick:
        Bz, L, H, P, N, K = 2, 256, 2, 16, 16, 64
        sweep, positions = [32, 64], [0, 64, 256]
    repeat = args.repeat
    shape = (Bz, L, H, P, N)
    inp = make_inputs(*shape)
    t: dict[str, float] = {}
    notes: list[str] = []
    with torch.no_grad():
        y = _rnnx(inp, "chunked", K)
        y_ref = _rnnx(inp, "reference", K)
    diffs = {"reference": float((y - y_ref).abs().max() / y_ref.abs().max())}
    forward = {
        f"{b} fwd": no_grad(functools.partial(_rnnx, inp, b, K)) for b in ("chunked", "reference")
    }
    backward = {f"{b} fwd+bwd": fwd_bwd_callable(b, *shape, K) for b in ("chunked", "reference")}

    module, why = (
        (None, "--no-peer")
        if args.no_peer
        else load_mamba_module(
            "modules/ssd_minimal.py",
            {"mamba_ssm.ops.triton.ssd_combined": {"mamba_chunk_scan_combined": None}},
        )
    )
    if module is None or L % K:
        why = why or f"ssd_minimal needs a length divisible by the chunk ({L} % {K})"
        notes.append(f"mamba_ssm ssd_minimal skipped: {why}")
        print(f"  mamba_ssm ssd_minimal skipped: {why}", flush=True)
    else:
        fn = module.ssd_minimal_discrete
        with torch.no_grad():
            y_min = _minimal(fn, inp, K)
        diffs["ssd_minimal"] = float((y - y_min).abs().max() / y_min.abs().max())
        forward["minimal fwd"] = no_grad(lambda: _minimal(fn, inp, K))
        grad_inp = {k: v.detach().clone().requires_grad_() for k, v in inp.items()}

        def minimal_fwd_bwd() -> None:
            for v in grad_inp.values():
                v.grad = None
            _minimal(fn, grad_inp, K).sum().backward()

        backward["minimal fwd+bwd"] = minimal_fwd_bwd
        print("  mamba_ssm ssd_minimal loaded", flush=True)
    t.update(time_in_turns(forward, repeat))
    print("  forward: done", flush=True)
    t.update(time_in_turns(backward, repeat))
    print("  forward+backward: done", flush=True)

    def ratio(a: str, b: str) -> float | None:
        return t[a] / t[b] if t.get(a) and t.get(b) else None

    rows = []
    for p in ("fwd", "fwd+bwd"):
        rows.append(
            {
                "pass": p,
                "chunked ms": ms(t[f"chunked {p}"]),
                "reference ms": ms(t[f"reference {p}"]),
                "ssd_minimal ms": ms(t[f"minimal {p}"]) if t.get(f"minimal {p}") else None,
                "reference / chunked": ratio(f"reference {p}", f"chunked {p}"),
                "ssd_minimal / chunked": ratio(f"minimal {p}", f"chunked {p}"),
            }
        )
    swept = time_in_turns({c: fwd_bwd_callable("chunked", *shape, c) for c in sweep}, repeat)
    sweep_rows = [
        {"chunk": c, "fwd+bwd ms": ms(v), "reference / this": t["reference fwd+bwd"] / v}
        for c, v in swept.items()
    ]
    print("  chunk sweep: done", flush=True)
    memory: dict[str, float] = {}
    if not args.no_memory:
        for backend in ("chunked", "reference"):
            memory[backend] = (
                peak_memory(
                    "rnnx.bench.ssd:fwd_bwd_callable",
                    backend=backend,
                    batch=Bz,
                    length=L,
                    heads=H,
                    headdim=P,
                    state=N,
                    chunk=K,
                )
                / 2**20
            )
        print("  memory: done", flush=True)
    from rnnx.layers.mamba2 import Mamba2

    torch.manual_seed(0)
    layer = Mamba2(H * P // 2, d_state=N, headdim=P, chunk_size=K).eval()
    decode = decode_latency(layer, positions, repeat)
    print("  decode: done", flush=True)

    print(
        f"\nSSD, float32, batch {Bz}, length {L}, {H} heads x {P}, state {N}, chunk {K}, "
        f"{torch.get_num_threads()} threads (median of {repeat} rounds, each path once per "
        "round)\n"
    )
    cols = [
        "pass",
        "chunked ms",
        "reference ms",
        "ssd_minimal ms",
        "reference / chunked",
        "ssd_minimal / chunked",
    ]
    print(markdown_table(rows, cols))
    print(
        "\noutputs, max |diff| / max |output|: "
        + ", ".join(f"vs {k} {v:.1e}" for k, v in diffs.items())
    )
    print("\nchunk size sweep (chunked forward+backward):\n")
    print(markdown_table(sweep_rows, ["chunk", "fwd+bwd ms", "reference / this"]))
    if memory:
        print("\nextra peak memory of one forward+backward (MiB):")
        print(markdown_table([{k: round(v, 1) for k, v in memory.items()}], list(memory)))
    print(f"\ndecode: Mamba2(d_model={layer.d_model}, d_state={N}, headdim={P}).step, batch 1\n")
    print(markdown_table(decode, ["position", "step us", "vs first"]))
    for n in notes:
        print(f"note: {n}")
    payload = {
        "benchmark": "ssd",
        "shape": {"batch": Bz, "length": L, "heads": H, "headdim": P, "state": N, "chunk": K},
        "rows": rows,
        "relative_output_diffs": diffs,
        "chunk_sweep": sweep_rows,
        "peak_mib": memory,
        "decode": decode,
        "notes": notes,
        "machine": machine_info(),
    }
    if args.out:
        print(f"results: {write_json(args.out, payload)}")
    return payload
