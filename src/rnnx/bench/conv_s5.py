"""ConvS5 (arXiv 2310.19694) against ConvLSTM (arXiv 1506.04214) at the same state size:
a training step and autoregressive sampling, as the number of frames grows, on the CPU.

At batch 2, 16 channels, 16x16 frames, float32, for T = 16, 32, 64, 128, 256 frames:

* ``train``: forward + backward of one layer (loss = mean square of the output), ConvS5
  in its default mode ``"scan"`` (the input convolution over all frames at once, one
  :func:`rnnx.ops.scan` over time, the output convolution over all frames) against the
  baseline in its default mode (ConvLSTM: the loop over frames).
* ``sample``: autoregressive generation of T frames from one frame, each output fed back
  as the next input with ``layer.step`` (one frame at a time, constant memory), under
  ``torch.no_grad()``; reported per frame.

Same state size: ``--state S`` is the baseline's ``d_state`` (ConvLSTM: S hidden
channels, so h and c hold 2S numbers per pixel); ConvS5 gets ``d_state = 2S`` modes,
stored as S complex numbers per pixel (conjugate symmetry), i.e. 2S real numbers per
pixel too. Ratios are ``baseline / ConvS5`` (> 1: ConvS5 is faster), timed in
alternating rounds in this run (:func:`rnnx.bench._common.interleaved`); the crossover
is the smallest T measured from which ConvS5's ratio stays above 1.

The baseline is looked up by name (``--baseline``, default ``conv_lstm``) in the layer
registry; where it is not registered the benchmark says so and times ConvS5 alone.

Run: ``rnnx bench conv_s5`` (``--quick`` for a smoke run; ``--threads N``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

import rnnx.layers as layers
from rnnx.bench._common import interleaved, machine_info, markdown_table, ms, write_json
from rnnx.layers.base import RecurrentLayer
from rnnx.layers.conv_s5 import ConvS5

GROUP = "layers"
DESCRIPTION = "ConvS5 vs ConvLSTM (same state size): train step and per-frame sampling vs frames"

BASELINE = "conv_lstm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", default="16,32,64,128,256", help="comma-separated T")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="frame height = width")
    parser.add_argument(
        "--state", type=int, default=16, help="the baseline's d_state S (ConvS5: 2S modes)"
    )
    parser.add_argument("--baseline", default=BASELINE, help="registered spatial layer name")
    parser.add_argument("--tables", default="train,sample", help="comma-separated: train, sample")


def baseline_class(name: str) -> tuple[type[RecurrentLayer] | None, str]:
    """The baseline's class, or None and why not (not registered in this rnnx)."""
    try:
        return layers.get(name), ""
    except ValueError as exc:
        return None, f"{name!r} is not a registered layer here ({str(exc).splitlines()[0]})"


def _train_fn(layer: RecurrentLayer, x: torch.Tensor) -> Callable[[], None]:
    def fn() -> None:
        xx = x.detach().requires_grad_()
        y, _ = layer(xx)
        y.square().mean().backward()

    return fn


def _sample_fn(layer: RecurrentLayer, x0: torch.Tensor, T: int) -> Callable[[], None]:
    def fn() -> None:
        with torch.no_grad():
            x, state = x0, None
            for _ in range(T):
                x, state = layer.step(x, state)

    return fn


def _rows(
    table: str,
    frames: list[int],
    ours: RecurrentLayer,
    base: RecurrentLayer | None,
    shape: tuple[int, int, int],
    repeat: int,
) -> list[dict[str, Any]]:
    B, C, S = shape
    rows = []
    for T in frames:
        g = torch.Generator().manual_seed(T)
        if table == "train":
            x = torch.randn(B, T, C, S, S, generator=g)
            fns = {"conv_s5": _train_fn(ours, x)}
            if base is not None:
                fns["baseline"] = _train_fn(base, x)
            per = 1.0
        else:
            x0 = torch.randn(B, 1, C, S, S, generator=g)
            fns = {"conv_s5": _sample_fn(ours, x0, T)}
            if base is not None:
                fns["baseline"] = _sample_fn(base, x0, T)
            per = 1.0 / T
        t = interleaved(fns, repeat, warmup=1)
        unit = "ms" if table == "train" else "ms/frame"
        row: dict[str, Any] = {"T": T, f"conv_s5 {unit}": ms(t["conv_s5"] * per)}
        if base is not None:
            row[f"baseline {unit}"] = ms(t["baseline"] * per)
            row["baseline / conv_s5"] = t["baseline"] / t["conv_s5"]
        rows.append(row)
        shown = ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k != "T")
        print(f"  {table} T={T}: {shown}", flush=True)
    return rows


def crossover(rows: list[dict[str, Any]]) -> str:
    """In words: the smallest T from which ConvS5 is faster at every larger T measured."""
    ratios = [(r["T"], r.get("baseline / conv_s5")) for r in rows]
    if not ratios or any(v is None for _, v in ratios):
        return "no baseline measured"
    start = None
    for T, v in reversed(ratios):
        if v is not None and v > 1.0:
            start = T
        else:
            break
    if start is None:
        return "ConvS5 is slower at every T measured"
    if start == ratios[0][0]:
        return f"ConvS5 is faster at every T measured (from T = {start})"
    return f"ConvS5 is faster from T = {start} on"


def run(args: argparse.Namespace) -> dict[str, Any]:
    frames = [int(v) for v in args.frames.split(",") if v.strip()]
    B, C, size, S = args.batch, args.channels, args.size, args.state
    if args.quick:
        frames, B, C, size, S = [2, 4], 1, 4, 5, 2
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    ours = ConvS5(C, d_state=2 * S)
    cls, why = baseline_class(args.baseline)
    base = None
    if cls is None:
        print(f"  baseline skipped: {why}; timing ConvS5 alone")
    else:
        torch.manual_seed(0)
        base = layers.create(args.baseline, C, d_state=S)
        print(
            f"  baseline: {args.baseline} (d_state={S}, mode {base.mode!r}); "
            f"conv_s5 (d_state={2 * S}: {ours.n_stored} complex modes per pixel, "
            f"mode {ours.mode!r}, scan backend {ours.resolved_backend()!r})",
            flush=True,
        )
    payload: dict[str, Any] = {
        "benchmark": "conv_s5",
        "shape": {"batch": B, "channels": C, "height": size, "width": size, "frames": frames},
        "state": {"baseline d_state": S, "conv_s5 d_state": 2 * S, "reals per pixel": 2 * S},
        "baseline": args.baseline if base is not None else None,
        "baseline_skipped": why or None,
    }
    for table in tables:
        if table not in ("train", "sample"):
            raise ValueError(f"--tables: expected train and/or sample, got {table!r}")
        print(f"\n[{table}] batch {B}, channels {C}, {size}x{size}, T in {frames}", flush=True)
        rows = _rows(table, frames, ours, base, (B, C, size), args.repeat)
        what = (
            "training step (forward + backward)"
            if table == "train"
            else "autoregressive sampling, step one frame at a time (per frame)"
        )
        print(
            f"\nConvS5 vs {args.baseline if base is not None else '(no baseline)'}: {what}, "
            f"float32, batch {B}, {C} channels, {size}x{size}, state {2 * S} reals per pixel, "
            f"{threads} threads (median of {args.repeat} interleaved rounds)\n"
        )
        print(markdown_table(rows, list(rows[0])))
        cross = crossover(rows)
        print(f"\ncrossover ({table}): {cross}")
        payload[table] = {"rows": rows, "crossover": cross}
    payload["machine"] = machine_info()
    if args.out:
        print(f"results: {write_json(args.out, payload)}")
    return payload
