"""Classic nonlinear RNNs (rnnx's fused CPU time loop) against torch.nn and flashrnn.

At batch 16, length 1024, input = hidden = 256, float32 (the shape of the issue):

* ``lstm fwd+bwd`` / ``lstm fwd``: :class:`rnnx.layers.LSTM` loaded from a
  ``torch.nn.LSTM`` with :meth:`~rnnx.layers.LSTM.from_torch` (same weights; the outputs
  are compared) against that ``nn.LSTM`` (oneDNN on the CPU). Forward+backward sums the
  outputs and backpropagates into the input and every weight; ``fwd`` runs under
  ``torch.no_grad()``.
* ``gru fwd+bwd`` / ``gru fwd``: the same for GRU.
* ``slstm fwd+bwd``: the time loop of an sLSTM with 4 heads (block-diagonal recurrent
  weights), given the input preactivations — :func:`rnnx.ops.rnn.rnn_sequence` (native)
  against rnnx's own reference (a Python loop over ``unbind(1)`` under autograd, stacked
  once: linear-cost backward) and against ``flashrnn``'s CPU backend
  (``flashrnn(..., function="slstm", backend="vanilla_fwbw")``, a PyTorch loop with a
  hand-written backward) on the same preactivations and recurrent weights. flashrnn
  clamps the normaliser at 1 (``n = max(f n + i, 1)``) where rnnx follows the xLSTM
  paper's equations, so only the cost is compared, not the values.
* ``decode``: one token, batch 1, hidden 256: ``LSTM.step`` against
  ``torch.nn.LSTMCell`` (µs per token, the state carried over 200 tokens).

Times are medians over rounds in which every contender runs once, in turn, after two
warm-up rounds (the machine is
shared: contenders measured side by side see the same load).

flashrnn is not a dependency of rnnx. To include it::

    python3 -m venv /work/scratch/flashrnn-venv
    /work/scratch/flashrnn-venv/bin/pip install torch==2.13.0
    /work/scratch/flashrnn-venv/bin/pip install --no-deps flashrnn==1.0.8 einops
    PYTHONPATH=/work/scratch/flashrnn-venv/lib/python3.11/site-packages rnnx bench rnn

(``--no-deps``: its CUDA extensions are compiled on first use of a CUDA backend only; the
``vanilla_fwbw`` backend is plain PyTorch.) Without it the benchmark says it skips the
peer.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch

from rnnx.bench._common import (
    import_peer,
    interleaved,
    machine_info,
    markdown_table,
    write_json,
)

GROUP = "layers"
DESCRIPTION = "LSTM/GRU/sLSTM fused time loop vs torch.nn, flashrnn; decode vs LSTMCell"

TARGETS = {
    "lstm fwd+bwd: torch/rnnx": 1.0,
    "lstm fwd: torch/rnnx": 1.0,
    "gru fwd+bwd: torch/rnnx": 1.0,
    "slstm fwd+bwd: flashrnn/rnnx": 5.0,
    "slstm fwd+bwd: reference/rnnx": 3.0,
    "decode: rnnx/LSTMCell (at most)": 2.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256, help="input = hidden size")
    parser.add_argument("--heads", type=int, default=4, help="sLSTM heads")
    parser.add_argument("--decode-tokens", type=int, default=200)
    parser.add_argument("--no-peer", action="store_true", help="skip flashrnn")


def _fwd_bwd(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def fn() -> None:
        module.zero_grad(set_to_none=True)
        xx = x.detach().requires_grad_()
        y = module(xx)[0]
        y.sum().backward()

    return fn


def _fwd(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def fn() -> None:
        with torch.no_grad():
            module(x)

    return fn


def _classic_rows(kind: str, B: int, T: int, H: int, repeat: int) -> list[dict[str, Any]]:
    import rnnx.layers as layers
    from rnnx.layers._classic import ClassicRNN

    torch.manual_seed(0)
    ref = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(H, H, batch_first=True)
    cls = layers.get(kind)
    assert issubclass(cls, ClassicRNN)  # lstm, gru
    ours = cls.from_torch(ref)
    x = torch.randn(B, T, H)
    with torch.no_grad():
        diff = (ours(x)[0] - ref(x)[0]).abs().max().item()
    rows = []
    for what, make in (("fwd+bwd", _fwd_bwd), ("fwd", _fwd)):
        t = interleaved({"rnnx": make(ours, x), "torch": make(ref, x)}, repeat)
        rows.append(
            {
                "case": f"{kind} {what}",
                "rnnx ms": t["rnnx"] * 1e3,
                "baseline": f"torch.nn.{ref.__class__.__name__}",
                "baseline ms": t["torch"] * 1e3,
                "baseline/rnnx": t["torch"] / t["rnnx"],
                "max |Δy|": diff,
            }
        )
    return rows


def _slstm_rows(
    B: int, T: int, H: int, NH: int, repeat: int, peer: bool
) -> tuple[list[dict[str, Any]], str]:
    from rnnx.ops.rnn import rnn_sequence

    torch.manual_seed(0)
    DH = H // NH
    gx = torch.randn(B, T, 4 * H)
    R = torch.randn(4 * H, DH) / DH**0.5
    state = tuple(torch.zeros(B, H) for _ in range(4))

    def ours(backend: str) -> Callable[[], None]:
        def fn() -> None:
            g = gx.detach().requires_grad_()
            w = R.detach().requires_grad_()
            y, _ = rnn_sequence("slstm", g, w, state, num_heads=NH, backend=backend)
            y.sum().backward()

        return fn

    fns = {"rnnx": ours("auto"), "reference": ours("torch")}
    note = "flashrnn: skipped (--no-peer)"
    if peer:
        mod, why = import_peer("flashrnn")
        if mod is None:
            note = f"flashrnn: skipped, cannot import it ({why})"
        else:
            note = "flashrnn: flashrnn(..., function='slstm', backend='vanilla_fwbw')"
            # Same preactivations and weights in flashrnn's layouts: Wx (B, T, G, NH, DH),
            # R (G, NH, DH_in, DH_out), b (G, NH, DH) (zero: gx already holds the biases).
            Wx = gx.view(B, T, 4, NH, DH)
            Rf = R.view(4, NH, DH, DH).transpose(-1, -2).contiguous()
            bf = torch.zeros(4, NH, DH)

            def theirs() -> None:
                g = Wx.detach().requires_grad_()
                w = Rf.detach().requires_grad_()
                b = bf.detach().requires_grad_()
                h, _ = mod.flashrnn(
                    g, w, b, function="slstm", backend="vanilla_fwbw", dtype="float32"
                )
                h[0].sum().backward()

            fns["flashrnn"] = theirs
    t = interleaved(fns, repeat)
    rows = []
    for name in ("reference", "flashrnn"):
        if name in t:
            rows.append(
                {
                    "case": f"slstm fwd+bwd ({NH} heads)",
                    "rnnx ms": t["rnnx"] * 1e3,
                    "baseline": "rnnx reference loop" if name == "reference" else "flashrnn",
                    "baseline ms": t[name] * 1e3,
                    "baseline/rnnx": t[name] / t["rnnx"],
                }
            )
    return rows, note


def _decode_row(H: int, tokens: int, repeat: int) -> dict[str, Any]:
    import rnnx.layers as layers

    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(H, H)
    ours = layers.get("lstm")(H)
    x = torch.randn(1, 1, H)
    x0 = x[:, 0]
    s_cell = (torch.zeros(1, H), torch.zeros(1, H))
    s_ours = ours.init_state(1)

    def run_cell() -> None:
        with torch.no_grad():
            s = s_cell
            for _ in range(tokens):
                s = cell(x0, s)

    def run_ours() -> None:
        with torch.no_grad():
            s = s_ours
            for _ in range(tokens):
                _, s = ours.step(x, s)

    t = interleaved({"rnnx": run_ours, "cell": run_cell}, repeat)
    return {
        "case": "decode (batch 1, 1 token)",
        "rnnx µs": t["rnnx"] / tokens * 1e6,
        "LSTMCell µs": t["cell"] / tokens * 1e6,
        "rnnx/LSTMCell": t["rnnx"] / t["cell"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    B, T, H, NH = args.batch, args.length, args.hidden, args.heads
    tokens = args.decode_tokens
    if args.quick:
        B, T, H, NH, tokens = 2, 32, 16, 4, 10
    rows: list[dict[str, Any]] = []
    for kind in ("lstm", "gru"):
        rows += _classic_rows(kind, B, T, H, args.repeat)
        print(f"  {kind}: done", flush=True)
    srows, note = _slstm_rows(B, T, H, NH, args.repeat, not args.no_peer)
    rows += srows
    print(f"  slstm: done ({note})", flush=True)
    decode = _decode_row(H, tokens, args.repeat)
    print("  decode: done", flush=True)

    print(
        f"\nrnn, float32, batch {B}, length {T}, input = hidden = {H}, "
        f"{torch.get_num_threads()} threads (median of {args.repeat} interleaved rounds)\n"
    )
    print(
        markdown_table(
            rows, ["case", "rnnx ms", "baseline", "baseline ms", "baseline/rnnx", "max |Δy|"]
        )
    )
    print()
    print(markdown_table([decode], ["case", "rnnx µs", "LSTMCell µs", "rnnx/LSTMCell"]))
    print(f"\n{note}")
    print(
        "targets: baseline/rnnx >= 1 vs torch.nn (LSTM fwd+bwd and fwd, GRU fwd+bwd); "
        "sLSTM >= 5 vs flashrnn and >= 3 vs the reference; decode rnnx/LSTMCell <= 2"
    )
    payload = {
        "benchmark": "rnn",
        "shape": {"batch": B, "length": T, "hidden": H, "slstm_heads": NH, "dtype": "float32"},
        "targets": TARGETS,
        "rows": rows,
        "decode": decode,
        "peers": note,
        "machine": machine_info(),
    }
    if args.out:
        print(f"results: {write_json(args.out, payload)}")
    return payload
