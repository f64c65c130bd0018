"""A/B timing of every registered layer in its default mode, for two rnnx checkouts.

Times, with public APIs only (``rnnx.layers.names``/``get``, ``forward``), each layer's
forward and forward+backward at one moderate shape, in the layer's default mode and
backend, so it runs unchanged against a checkout from before a refactor and one after
(mode and backend names may differ between them; the defaults compute the same thing).
With ``RNNX_NATIVE=0`` every op runs its PyTorch implementation, so running the script
both ways covers the native paths and the PyTorch paths. Each figure is the *minimum*
over ``--repeat`` calls; run it alternately against the two checkouts, several rounds,
and keep the minimum per row (``--merge``)::

    for r in 1 2 3; do for v in before after; do for n in 1 0; do
      RNNX_NATIVE=$n PYTHONPATH=/path/to/$v/src \\
        python docs/scripts/layers_ab.py --threads 1 --out ab/$v-n$n-$r.json
    done; done; done
    python docs/scripts/layers_ab.py --merge ab
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
import warnings
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


def measure(batch: int, length: int, d_model: int, repeat: int) -> dict[str, float]:
    import rnnx.layers as L

    out: dict[str, float] = {}
    for name in L.names("sequence"):  # (B, L, D) layers; spatial ones take frames
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecations and one-time notices
            layer = L.get(name)(d_model=d_model)
        x = torch.randn(batch, length, d_model)
        xg = x.clone().requires_grad_()

        def fwd(layer=layer, x=x) -> object:
            with torch.no_grad():
                return layer(x)

        def fwd_bwd(layer=layer, xg=xg) -> object:
            y, _ = layer(xg)
            y.sum().backward()
            return y

        out[f"{name} fwd"] = _min_time(fwd, repeat)
        out[f"{name} fwd+bwd"] = _min_time(fwd_bwd, repeat)
        f, fb = out[f"{name} fwd"], out[f"{name} fwd+bwd"]
        print(f"{name:>16}: fwd {f:8.2f} ms  fwd+bwd {fb:8.2f} ms")
    return out


def merge(folder: str) -> None:
    """Per native setting, the minimum per row over rounds, and after/before."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            r = json.load(f)
        key = (r["version"], r["native"])
        best = rows.setdefault(key, {})
        for k, v in r["times"].items():
            best[k] = min(v, best.get(k, float("inf")))
    for native in sorted({n for _, n in rows}, reverse=True):
        before, after = rows.get(("before", native), {}), rows.get(("after", native), {})
        print(f"\nRNNX_NATIVE={native}\n\n| layer, pass | before ms | after ms | after/before |")
        print("|---|---|---|---|")
        for k in before:
            if k in after:
                print(f"| {k} | {before[k]:.2f} | {after[k]:.2f} | {after[k] / before[k]:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="JSON file (its name says before/after: 'before' or 'after')")
    p.add_argument("--merge", metavar="FOLDER", help="merge the JSON files of a folder")
    a = p.parse_args()
    if a.merge:
        merge(a.merge)
        return
    torch.set_num_threads(a.threads)
    times = measure(a.batch, a.length, a.d_model, a.repeat)
    if a.out:
        version = "before" if "before" in os.path.basename(a.out) else "after"
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        record = {
            "version": version,
            "native": os.environ.get("RNNX_NATIVE", "1"),
            "threads": a.threads,
            "shape": [a.batch, a.length, a.d_model],
            "torch": torch.__version__,
            "times": times,
        }
        with open(a.out, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
