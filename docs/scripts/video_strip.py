"""A strip of one test video of trained video prediction runs: the context frames, the
true future, each run's rollout and the copy-last-frame baseline.

Reproduce ``docs/img/moving_digits.png`` from run directories (``rnnx train --task
moving_digits --model M --out-dir RUN_DIR ...``), one row per run::

    python docs/scripts/video_strip.py RUN_DIR [RUN_DIR ...] --out docs/img/moving_digits.png

Every run must be on the same task with the same task settings and seed (the strip shows
one test video of that task); the script refuses runs that are not.
"""

from __future__ import annotations

import argparse

import torch

from rnnx.data import get_task
from rnnx.train.config import RunConfig
from rnnx.train.run import load_model
from rnnx.train.video import copy_last_frame, frame_metrics, save_strip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories of video prediction runs")
    ap.add_argument("--out", default="docs/img/moving_digits.png")
    ap.add_argument("--index", type=int, default=0, help="which test video")
    args = ap.parse_args()
    loaded = [load_model(r) for r in args.runs]
    runs = [RunConfig.from_dict(spec["run"]) for _, spec in loaded]
    tasks = {(r.task.name, r.train.seed, repr(sorted(r.task.kwargs.items()))) for r in runs}
    if len(tasks) != 1:
        raise SystemExit(f"runs: expected runs of one task, settings and seed, got {sorted(tasks)}")
    run = runs[0]
    task = get_task(run.task.name, seed=run.train.seed, **run.task.kwargs)
    x, y = task.test[args.index]
    preds: dict[str, torch.Tensor] = {}
    parts = []
    for (model, _), r in zip(loaded, runs, strict=True):
        with torch.inference_mode():
            pred = model.rollout(x[None], y.shape[0])[0]
        m = frame_metrics(pred[None], y[None])
        name = r.model.layer if r.model.layer not in preds else f"{r.model.layer} ({len(preds)})"
        preds[name] = pred
        parts.append(f"{name} {float(m['mse'].mean()):.0f}")
    base = copy_last_frame(x[None], y.shape[0])[0]
    b = frame_metrics(base[None], y[None])
    preds["copy last"] = base
    title = f"test video {args.index}, MSE: " + ", ".join(
        [*parts, f"copy-last {float(b['mse'].mean()):.0f}"]
    )
    out = save_strip(args.out, x, y, preds, title=title)
    print(f"{out}: {title}")


if __name__ == "__main__":
    main()
