"""Chunked linear attention, delta rules and mLSTM against the PyTorch references of
flash-linear-attention and mlstm_kernels, forward+backward on the CPU; decode latency.

For each op at batch 4, 4 heads, length 2048, head dim 64 (float32, batch-first), the
time of forward+backward (``o.backward(g)`` with a fixed dense ``g``) of:

* ``rnnx``: the chunked op (:mod:`rnnx.ops.chunk`, :mod:`rnnx.ops.delta`,
  :mod:`rnnx.ops.mlstm`; GLA with its native intra-chunk kernel);
* ``rnnx rec``: rnnx's recurrent reference (a loop over ``unbind(1)``: linear-cost
  backward), the baseline when a peer is missing;
* ``fla rec``: flash-linear-attention's naive recurrent reference (``fla.ops.*.naive``:
  ``naive_recurrent_gla``, ``naive_recurrent_simple_gla``, ``delta_rule_recurrence``,
  ``naive_recurrent_gated_delta_rule``, ``naive_recurrent_linear_attn``);
* ``fla chunk``: its naive chunked reference (``naive_chunk_simple_gla``,
  ``delta_rule_chunkwise``, ``naive_chunk_gated_delta_rule``, ``naive_chunk_linear_attn``).
  GLA (a decay per key dimension) has no naive chunked form in fla; its row compares
  with ``naive_chunk_simple_gla`` (a scalar decay: less work) as the issue asks;
* ``xlstm chunk``: mlstm_kernels' ``chunkwise--native_custbw`` (PyTorch chunkwise
  forward with a hand-written backward) for the mLSTM row.

``max|Δ|`` is the largest difference of the forward outputs against the peer (relative
to the output's largest magnitude). Then the decode step (``layer.step`` on one token)
of each layer at d_model 256 after prefills of increasing length: the latency must not
grow with the position.

Peers, in a scratch venv (never installed with rnnx)::

    python3 -m venv /work/scratch/fla-venv
    /work/scratch/fla-venv/bin/pip install torch==2.13.0
    /work/scratch/fla-venv/bin/pip install --no-deps fla-core mlstm_kernels einops numpy

then make them visible after rnnx's own packages::

    SCRATCH=/work/scratch/fla-venv/lib/python3.11/site-packages
    PYTHONPATH=.venv/lib/python3.11/site-packages:$SCRATCH \\
        flock /tmp/rnnx-bench.lock .venv/bin/rnnx bench linear_attention

Only fla's plain-PyTorch ``naive.py`` files are loaded, from their paths, without
running ``fla/__init__`` (which imports triton and fails on a CPU-only machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import rnnx.layers as layers
from rnnx.bench._common import (
    import_peer,
    interleaved,
    machine_info,
    markdown_table,
    ms,
    timeit,
    write_json,
)
from rnnx.ops.chunk import gla, linear_attention, simple_gla
from rnnx.ops.delta import delta_rule, gated_delta_rule
from rnnx.ops.mlstm import mlstm

DESCRIPTION = "chunked linear attention / delta rules / mLSTM vs fla and mlstm_kernels"

TARGETS = {
    "gla, deltanet, gated_deltanet: fla rec / rnnx": 10.0,
    "gla, deltanet, gated_deltanet: fla chunk / rnnx": 1.5,
    "mlstm: xlstm chunk / rnnx": 1.0,
    "decode: slowest / fastest position": 1.5,
}

OPS = ("linear_attention", "simple_gla", "gla", "deltanet", "gated_deltanet", "mlstm")
DECODE_LAYERS = ("linear_attention", "retnet", "gla", "deltanet", "gated_deltanet", "mlstm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated from {OPS}")
    parser.add_argument(
        "--decode", default=",".join(DECODE_LAYERS), help="layers for the decode table ('' skips)"
    )
    parser.add_argument("--no-peer-recurrent", action="store_true", help="skip fla rec (slow)")


# ----------------------------------------------------------------------------- peers


def _fla_naive(rel: str) -> tuple[Any | None, str]:
    """``fla/ops/<rel>`` loaded from its file (the package ``__init__`` needs triton)."""
    try:
        spec = importlib.util.find_spec("fla")
    except (ImportError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if spec is None or not spec.submodule_search_locations:
        return None, "fla-core is not installed (pip install --no-deps fla-core einops)"
    path = os.path.join(spec.submodule_search_locations[0], "ops", rel)
    try:
        mspec = importlib.util.spec_from_file_location(f"_rnnx_peer_fla_{rel}", path)
        assert mspec is not None and mspec.loader is not None
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        return module, ""
    except Exception as exc:  # a peer may fail in many ways (missing einops, moved files)
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def _mlstm_kernels() -> tuple[Callable | None, str]:
    mod, why = import_peer("mlstm_kernels.torch")
    if mod is None:
        return None, why
    try:
        return mod.get_mlstm_kernel("chunkwise--native_custbw"), ""
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


# ----------------------------------------------------------------------------- cases


def _inputs(op: str, B: int, T: int, H: int, K: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = {
        "q": torch.randn(B, T, H, K, generator=g),
        "k": torch.randn(B, T, H, K, generator=g),
        "v": torch.randn(B, T, H, K, generator=g),
    }
    if op == "simple_gla":
        x["g"] = F.logsigmoid(torch.randn(B, T, H, generator=g) + 3)
    elif op == "gla":
        x["g"] = F.logsigmoid(torch.randn(B, T, H, K, generator=g)) / 16
    elif op in ("deltanet", "gated_deltanet"):
        x["k"] = F.normalize(x["k"], dim=-1)
        x["beta"] = torch.rand(B, T, H, generator=g)
        if op == "gated_deltanet":
            x["g"] = F.logsigmoid(torch.randn(B, T, H, generator=g) + 3)
    elif op == "mlstm":
        x["i"] = torch.randn(B, T, H, generator=g)
        x["f"] = torch.randn(B, T, H, generator=g) + 3
    return x


def _head_first(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2).contiguous()


class _Case:
    """The functions of one row: each maps the leaf tensors to an output in rnnx's layout."""

    def __init__(self, op: str) -> None:
        self.op = op
        self.rnnx: Callable[..., torch.Tensor]
        self.rnnx_rec: Callable[..., torch.Tensor]
        self.peer_rec: Callable[..., torch.Tensor] | None = None
        self.peer_chunk: Callable[..., torch.Tensor] | None = None
        self.peer_rec_name = self.peer_chunk_name = ""
        self.missing: list[str] = []


def _case(op: str) -> _Case:
    c = _Case(op)
    if op == "linear_attention":
        c.rnnx = lambda q, k, v: linear_attention(q, k, v)[0]
        c.rnnx_rec = lambda q, k, v: linear_attention(q, k, v, backend="reference")[0]
        m, why = _fla_naive("linear_attn/naive.py")
        if m is not None:
            c.peer_rec = lambda q, k, v: m.naive_recurrent_linear_attn(q, k, v)[0]
            c.peer_chunk = lambda q, k, v: m.naive_chunk_linear_attn(q, k, v)
            c.peer_rec_name, c.peer_chunk_name = (
                "naive_recurrent_linear_attn",
                "naive_chunk_linear_attn",
            )
        else:
            c.missing.append(f"fla: {why}")
    elif op == "simple_gla":
        c.rnnx = lambda q, k, v, g: simple_gla(q, k, v, g)[0]
        c.rnnx_rec = lambda q, k, v, g: simple_gla(q, k, v, g, backend="reference")[0]
        m, why = _fla_naive("simple_gla/naive.py")
        if m is not None:
            c.peer_rec = lambda q, k, v, g: m.naive_recurrent_simple_gla(q, k, v, g)[0]
            c.peer_chunk = lambda q, k, v, g: m.naive_chunk_simple_gla(q, k, v, g)[0]
            c.peer_rec_name, c.peer_chunk_name = (
                "naive_recurrent_simple_gla",
                "naive_chunk_simple_gla",
            )
        else:
            c.missing.append(f"fla: {why}")
    elif op == "gla":
        c.rnnx = lambda q, k, v, g: gla(q, k, v, g)[0]
        c.rnnx_rec = lambda q, k, v, g: gla(q, k, v, g, backend="reference")[0]
        m, why = _fla_naive("gla/naive.py")
        ms_, why2 = _fla_naive("simple_gla/naive.py")
        if m is not None:
            c.peer_rec = lambda q, k, v, g: m.naive_recurrent_gla(q, k, v, g)[0]
            c.peer_rec_name = "naive_recurrent_gla"
        else:
            c.missing.append(f"fla: {why}")
        if ms_ is not None:
            # the scalar-gated chunked reference (fla has no naive chunked vector-gated GLA)
            c.peer_chunk = lambda q, k, v, g: ms_.naive_chunk_simple_gla(q, k, v, g[..., 0])[0]
            c.peer_chunk_name = "naive_chunk_simple_gla (scalar decay)"
        else:
            c.missing.append(f"fla: {why2}")
    elif op == "deltanet":
        c.rnnx = lambda q, k, v, beta: delta_rule(q, k, v, beta)[0]
        c.rnnx_rec = lambda q, k, v, beta: delta_rule(q, k, v, beta, backend="reference")[0]
        delta_naive, why = _fla_naive("delta_rule/naive.py")
        if delta_naive is not None:

            def rec(q, k, v, beta):
                hf = [_head_first(t) for t in (q, k, v, beta)]
                return delta_naive.delta_rule_recurrence(*hf)[0].transpose(1, 2)

            def chk(q, k, v, beta):
                hf = [_head_first(t) for t in (q, k, v, beta)]
                return delta_naive.delta_rule_chunkwise(*hf, chunk_size=64)[0].transpose(1, 2)

            c.peer_rec, c.peer_chunk = rec, chk
            c.peer_rec_name, c.peer_chunk_name = "delta_rule_recurrence", "delta_rule_chunkwise"
        else:
            c.missing.append(f"fla: {why}")
    elif op == "gated_deltanet":
        c.rnnx = lambda q, k, v, beta, g: gated_delta_rule(q, k, v, g, beta)[0]
        c.rnnx_rec = lambda q, k, v, beta, g: gated_delta_rule(
            q, k, v, g, beta, backend="reference"
        )[0]
        m, why = _fla_naive("gated_delta_rule/naive.py")
        if m is not None:
            c.peer_rec = lambda q, k, v, beta, g: m.naive_recurrent_gated_delta_rule(
                q, k, v, beta, g
            )[0]
            c.peer_chunk = lambda q, k, v, beta, g: m.naive_chunk_gated_delta_rule(
                q, k, v, g, beta, chunk_size=64
            )[0]
            c.peer_rec_name = "naive_recurrent_gated_delta_rule"
            c.peer_chunk_name = "naive_chunk_gated_delta_rule"
        else:
            c.missing.append(f"fla: {why}")
    elif op == "mlstm":
        c.rnnx = lambda q, k, v, i, f: mlstm(q, k, v, i, f)[0]
        c.rnnx_rec = lambda q, k, v, i, f: mlstm(q, k, v, i, f, backend="reference")[0]
        kernel, why = _mlstm_kernels()
        if kernel is not None:

            def xl(q, k, v, i, f):
                hf = [_head_first(t) for t in (q, k, v, i, f)]
                return kernel(*hf, chunk_size=64).transpose(1, 2)

            c.peer_chunk = xl
            c.peer_chunk_name = "mlstm_kernels chunkwise--native_custbw"
        else:
            c.missing.append(f"mlstm_kernels: {why}")
    else:
        raise ValueError(f"--ops: unknown op {op!r} (expected some of {OPS})")
    return c


def _fwd_bwd(fn: Callable[..., torch.Tensor], tensors: list[torch.Tensor]) -> Callable[[], None]:
    """Forward and backward with a dense upstream gradient, as in training (``o.sum()``
    would hand every backward a stride-0 gradient that some kernels copy per matrix)."""
    leaves = [t.detach().requires_grad_() for t in tensors]
    upstream: list[torch.Tensor] = []

    def run() -> None:
        for t in leaves:
            t.grad = None
        out = fn(*leaves)
        if not upstream:
            upstream.append(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        out.backward(upstream[0])

    return run


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-30))


def _measure_op(op: str, B: int, T: int, H: int, K: int, args) -> dict[str, Any]:
    case = _case(op)
    x = list(_inputs(op, B, T, H, K).values())
    row: dict[str, Any] = {"op": op}
    key = "xlstm chunk" if op == "mlstm" else "fla chunk"
    contenders = {"rnnx": _fwd_bwd(case.rnnx, x)}
    if case.peer_chunk is not None:
        contenders[key] = _fwd_bwd(case.peer_chunk, x)
    t = interleaved(contenders, args.repeat)
    t_rnnx = t["rnnx"]
    row["rnnx ms"] = ms(t_rnnx)
    t_rec = timeit(_fwd_bwd(case.rnnx_rec, x), repeat=1, warmup=0)["median"]
    row["rnnx rec ms"] = ms(t_rec)
    row["rnnx rec / rnnx"] = t_rec / t_rnnx
    with torch.no_grad():
        o = case.rnnx(*x)
        row["max|Δ| rec"] = _max_rel_diff(o, case.rnnx_rec(*x))
    peer_notes = []
    if case.peer_rec is not None and not args.no_peer_recurrent:
        t_peer = timeit(_fwd_bwd(case.peer_rec, x), repeat=1, warmup=0)["median"]
        row["fla rec ms"] = ms(t_peer)
        row["fla rec / rnnx"] = t_peer / t_rnnx
        with torch.no_grad():
            row["max|Δ| fla rec"] = _max_rel_diff(o, case.peer_rec(*x))
        peer_notes.append(case.peer_rec_name)
    if case.peer_chunk is not None:
        row[f"{key} ms"] = ms(t[key])
        row[f"{key} / rnnx"] = t[key] / t_rnnx
        if op != "gla":  # the scalar-decay peer computes another function
            with torch.no_grad():
                row[f"max|Δ| {key}"] = _max_rel_diff(o, case.peer_chunk(*x))
        peer_notes.append(case.peer_chunk_name)
    row["peers"] = "; ".join(peer_notes + case.missing)
    return row


def _measure_decode(name: str, d_model: int, positions: list[int], rounds: int) -> dict[str, Any]:
    """Median latency of ``layer.step`` on one token after prefills of each length; the
    positions are timed in interleaved rounds so that machine drift hits them alike."""
    torch.manual_seed(0)
    layer = layers.get(name)(d_model).eval()
    token = torch.randn(1, 1, d_model)
    times: dict[int, list[float]] = {p: [] for p in positions}
    with torch.no_grad():
        states = {
            p: layer(torch.randn(1, p, d_model))[1] if p else layer.init_state(1) for p in positions
        }
        for p in positions:  # warm up every path once
            layer.step(token, states[p])
        for _ in range(rounds):
            for p in positions:
                t0 = time.perf_counter()
                layer.step(token, states[p])
                times[p].append(time.perf_counter() - t0)
    row: dict[str, Any] = {"layer": name}
    medians = [statistics.median(times[p]) for p in positions]
    for p, t in zip(positions, medians):
        row[f"µs @ {p}"] = t * 1e6
    row["slowest / fastest"] = max(medians) / min(medians)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    B, T, H, K = args.batch, args.length, args.heads, args.head_dim
    d_model, positions = 256, [0, 1024, 4096]
    if args.quick:
        B, T, H, K = 1, 256, 2, 32
        d_model, positions = 64, [0, 256]
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    rows = []
    for op in ops:
        rows.append(_measure_op(op, B, T, H, K, args))
        print(f"  {op}: done", flush=True)
    cols = [
        "op", "rnnx ms", "rnnx rec ms", "fla rec ms", "fla chunk ms", "xlstm chunk ms",
        "rnnx rec / rnnx", "fla rec / rnnx", "fla chunk / rnnx", "xlstm chunk / rnnx",
        "max|Δ| rec", "max|Δ| fla rec", "max|Δ| fla chunk", "max|Δ| xlstm chunk",
    ]  # fmt: skip
    print(
        f"\nforward+backward, float32, batch {B}, heads {H}, length {T}, head dim {K}, "
        f"{torch.get_num_threads()} threads (times: median of {args.repeat} rounds, rnnx and "
        "its chunked peer alternating; recurrent references: one run)\n"
    )
    print(markdown_table(rows, cols))
    print("\npeers:")
    for r in rows:
        print(f"  {r['op']}: {r['peers'] or '-'}")
    decode_rows = []
    for name in [n.strip() for n in args.decode.split(",") if n.strip()]:
        decode_rows.append(_measure_decode(name, d_model, positions, max(50, 20 * args.repeat)))
    if decode_rows:
        print(
            f"\ndecode: layer.step on one token after a prefill, d_model {d_model}, batch 1 "
            "(median of interleaved rounds)\n"
        )
        dcols = ["layer", *[f"µs @ {p}" for p in positions], "slowest / fastest"]
        print(markdown_table(decode_rows, dcols))
    print(
        "\ntargets: gla, deltanet, gated_deltanet: fla rec / rnnx >= 10, fla chunk / rnnx >= 1.5;"
        " mlstm: xlstm chunk / rnnx >= 1.0; decode slowest / fastest <= 1.5"
    )
    payload = {
        "benchmark": "linear_attention",
        "shape": {"batch": B, "heads": H, "length": T, "head_dim": K, "dtype": "float32"},
        "targets": TARGETS,
        "rows": rows,
        "decode": {"d_model": d_model, "positions": positions, "rows": decode_rows},
        "machine": machine_info(),
    }
    if args.out:
        print(f"results: {write_json(args.out, payload)}")
    return payload
