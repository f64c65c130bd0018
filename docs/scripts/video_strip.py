"""A strip of one test video of a trained video prediction run: the context frames, the
true future, the model's rollout and the copy-last-frame baseline.

Reproduce ``docs/img/moving_digits.png`` from a run directory (``rnnx train --task
moving_digits ...``)::

    python docs/scripts/video_strip.py RUN_DIR --out docs/img/moving_digits.png
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
    ap.add_argument("run", help="run directory of a video prediction run")
    ap.add_argument("--out", default="docs/img/moving_digits.png")
    ap.add_argument("--index", type=int, default=0, help="which test video")
    args = ap.parse_args()
    model, spec = load_model(args.run)
    run = RunConfig.from_dict(spec["run"])
    task = get_task(run.task.name, seed=run.train.seed, **run.task.kwargs)
    x, y = task.test[args.index]
    with torch.inference_mode():
        pred = model.rollout(x[None], y.shape[0])[0]
    base = copy_last_frame(x[None], y.shape[0])[0]
    m, b = frame_metrics(pred[None], y[None]), frame_metrics(base[None], y[None])
    title = (
        f"{run.model.layer}: MSE {float(m['mse'].mean()):.1f}, SSIM {float(m['ssim'].mean()):.3f}"
        f"; copy-last: MSE {float(b['mse'].mean()):.1f}, SSIM {float(b['ssim'].mean()):.3f}"
    )
    out = save_strip(args.out, x, y, {run.model.layer: pred, "copy last": base}, title=title)
    print(f"{out}: {title}")


if __name__ == "__main__":
    main()
