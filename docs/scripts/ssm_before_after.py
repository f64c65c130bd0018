"""`rnnx bench ssm` on two versions of rnnx, side by side, and one before/after table.

Runs the benchmark's ``train`` table (and optionally ``long``) and a bidirectional
training step for every version in alternating order (A B, then B A, ...), each run in
its own process with ``PYTHONPATH`` pointing at that version's ``src``, so that the
machine's drift hits both alike; prints the medians over the rounds and their ratio.
Run it under the benchmark lock, e.g. to compare a branch with the commit before it::

    git archive <base> src | tar -x -C /tmp/rnnx-before
    flock /tmp/rnnx-bench.lock python docs/scripts/ssm_before_after.py \\
        /tmp/rnnx-before/src src --rounds 2 --tables train,long,bidirectional \\
        --out /tmp/ssm-before-after

The ``s5-pytorch`` peer column appears when the peer is on ``--peer-path`` (see
``rnnx bench ssm --help``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# A bidirectional training step (the bench has no bidirectional row): forward+backward
# of one layer in "conv" mode, batch 16, length 1024, 256 features, state 64.
BIDIRECTIONAL = r"""
import json, sys, torch
import rnnx.layers as layers
from rnnx.bench._common import timeit
torch.set_num_threads(int(sys.argv[2]))
B, L, H, N = (2, 128, 16, 8) if sys.argv[4] == "quick" else (16, 1024, 256, 64)
torch.manual_seed(0)
x = torch.randn(B, L, H)
out = {}
for name in ("s4d", "s4", "lssl"):
    torch.manual_seed(0)
    layer = layers.get(name)(H, d_state=N, bidirectional=True, mode="conv")
    def fn():
        xx = x.detach().requires_grad_()
        y, _ = layer(xx)
        y.square().mean().backward()
    out[name + " conv (bidirectional) ms"] = timeit(fn, repeat=int(sys.argv[3]))["median"] * 1e3
json.dump(out, open(sys.argv[1], "w"))
"""


def _run(src: str, args: list[str], peer: str | None) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(src).resolve()), peer) if p)
    subprocess.run(args, env=env, check=True)


def _bench(src, table, out, threads, repeat, peer, quick):
    cmd = [sys.executable, "-m", "rnnx.cli", "bench", "ssm", "--tables", table]
    if quick:
        cmd.append("--quick")
    if table == "train":
        cmd.append("--no-recurrent")
    cmd += ["--repeat", str(repeat), "--threads", str(threads), "--out", str(out)]
    _run(src, cmd, peer)
    rows = json.loads(Path(out).read_text())[table]["rows"]
    got, peers = {}, {}
    for r in rows:
        key = f"{r['layer']} L={r['L']}" if table == "long" else f"{r['layer']} {r['mode']}"
        got[key + " ms"] = r["fwd+bwd ms"]
        if table == "long":
            got[key + " peak MiB"] = r["peak MiB"]
        peers[key] = r.get("s5-pytorch fwd+bwd ms")
    return got, peers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", help="src/ of the first version")
    ap.add_argument("after", help="src/ of the second version")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tables", default="train,bidirectional")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peer-path", default=None, help="site-packages holding s5-pytorch")
    ap.add_argument("--out", default="ssm-before-after")
    ap.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = args.tables.split(",")
    times: dict[str, dict[str, dict[str, list[float]]]] = {}
    peer: dict[str, list[float]] = {}
    for r in range(args.rounds):
        order = [("before", args.before), ("after", args.after)]
        for tag, src in order if r % 2 == 0 else order[::-1]:
            for table in tables:
                path = out / f"{tag}-{table}-{r}.json"
                print(f"round {r + 1}: {tag} {table}", flush=True)
                if table == "bidirectional":
                    cmd = [sys.executable, "-c", BIDIRECTIONAL, str(path)]
                    size = "quick" if args.quick else "full"
                    _run(src, [*cmd, str(args.threads), str(args.repeat), size], None)
                    got, peers = json.loads(path.read_text()), {}
                else:
                    got, peers = _bench(
                        src, table, path, args.threads, args.repeat, args.peer_path, args.quick
                    )
                for row, ms in got.items():
                    times.setdefault(table, {}).setdefault(row, {}).setdefault(tag, []).append(ms)
                for ms in peers.values():
                    if ms:
                        peer.setdefault(tag, []).append(ms)
                        break
    lines = []
    if peer:
        lines.append(
            "s5-pytorch peer, median ms (same runs): "
            + ", ".join(f"{t} {statistics.median(v):.0f}" for t, v in peer.items())
        )
    for table, rows in times.items():
        lines += ["", f"{table}:", "", "| row | before | after | before / after (runs) |"]
        lines.append("|---|---|---|---|")
        for row, by in rows.items():
            b, a = statistics.median(by["before"]), statistics.median(by["after"])
            runs = f" ({'/'.join(f'{x:.0f}' for x in by['before'])} vs "
            runs += f"{'/'.join(f'{x:.0f}' for x in by['after'])})"
            lines.append(f"| {row} | {b:.0f} | {a:.0f} | {b / a:.2f}{runs} |")
    text = "\n".join(lines)
    print(text)
    (out / "summary.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
