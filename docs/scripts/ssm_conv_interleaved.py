"""The convolutional SSM layers of two versions of rnnx in one process, timed interleaved.

On a shared machine the load changes between two benchmark runs by more than a code
change does; timing both versions in the same process, one call each in turn (order
swapped every round), lets the load hit both alike. The other version's ``src`` is
copied to a temporary folder as the package ``rnnx_before`` (its imports renamed), the
layers are built with the same weights (the current one loads the other's state dict),
their outputs compared, and forward+backward timed::

    git archive <base> src | tar -x -C /tmp/rnnx-before
    flock /tmp/rnnx-bench.lock python docs/scripts/ssm_conv_interleaved.py \\
        /tmp/rnnx-before/src --rounds 7

Prints a markdown table: median ms of each version, before / after (> 1: faster now).
On a loaded machine ``--threads 1 --clock cpu`` (the process's CPU time, one thread)
is far steadier than wall time.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import rnnx.layers as layers


def load_other(src: Path) -> object:
    """The ``rnnx`` package under ``src``, imported as ``rnnx_before``."""
    tmp = Path(tempfile.mkdtemp(prefix="rnnx-before-"))
    shutil.copytree(src / "rnnx", tmp / "rnnx_before")
    pattern = re.compile(r"\brnnx(?=[.\s]|$)", re.M)
    for path in (tmp / "rnnx_before").rglob("*.py"):
        path.write_text(pattern.sub("rnnx_before", path.read_text()))
    sys.path.insert(0, str(tmp))
    return importlib.import_module("rnnx_before.layers")


CASES = [
    # name, batch, length, features, kwargs
    ("s4d", 16, 1024, 256, {}),
    ("s4", 16, 1024, 256, {}),
    ("lssl", 16, 1024, 256, {}),
    ("s4d", 16, 1024, 256, {"bidirectional": True}),
    ("s4", 16, 1024, 256, {"bidirectional": True}),
    ("lssl", 16, 1024, 256, {"bidirectional": True}),
    ("s4d", 8, 16000, 128, {}),
    ("s4", 8, 16000, 128, {}),
    ("lssl", 8, 16000, 128, {}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path, help="src/ of the other version")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--state", type=int, default=64)
    ap.add_argument("--only", default="", help="comma-separated case indices")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or this process's CPU time (steadier on a loaded machine with "
        "--threads 1: no time waiting for the CPU, no threads spinning)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    other = load_other(args.before)
    pick = {int(i) for i in args.only.split(",") if i.strip()}
    print("| layer | B | L | H | before ms | after ms | before / after | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (name, B, L, H, kw) in enumerate(CASES):
        if pick and i not in pick:
            continue
        if args.quick:
            B, L, H = 2, min(L, 256), 8
        old = other.get(name)(H, d_state=args.state, mode="conv", **kw)
        new = layers.get(name)(H, d_state=args.state, mode="conv", **kw)
        new.load_state_dict(old.state_dict())
        x = torch.randn(B, L, H, generator=torch.Generator().manual_seed(i))

        def run(layer, x=x):
            xx = x.detach().requires_grad_()
            y, _ = layer(xx)
            y.square().mean().backward()
            return y.detach()

        diff = float((run(old) - run(new)).abs().max())  # also the warm-up
        times = {"before": [], "after": []}
        for r in range(args.rounds):
            pair = [("before", old), ("after", new)]
            for tag, layer in pair if r % 2 == 0 else pair[::-1]:
                t0 = clock()
                run(layer)
                times[tag].append(clock() - t0)
        b, a = (statistics.median(times[t]) * 1e3 for t in ("before", "after"))
        label = name + (" (bidirectional)" if kw.get("bidirectional") else "")
        print(f"| {label} | {B} | {L} | {H} | {b:.0f} | {a:.0f} | {b / a:.2f} | {diff:.1e} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
