"""The learning-curve PNG of a run, from its CSV logs."""

from __future__ import annotations

import csv
from pathlib import Path


def read_metrics(log_root: str | Path) -> list[dict[str, float]]:
    """Rows of every ``metrics.csv`` under ``log_root`` (one per attempt of a resumed
    run), in attempt order; later attempts replace the rows of steps they redo."""
    rows: dict[tuple, dict[str, float]] = {}
    files = sorted(
        Path(log_root).glob("**/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[-1]) if p.parent.name[-1].isdigit() else 0,
    )
    for path in files:
        with open(path) as f:
            for i, row in enumerate(csv.DictReader(f)):
                values = {k: float(v) for k, v in row.items() if v not in ("", None)}
                key = (values.get("step", i), tuple(sorted(k for k in values if k != "step")))
                rows[key] = values
    return sorted(rows.values(), key=lambda r: r.get("step", 0))


def plot_curves(log_root: str | Path, out: str | Path, *, title: str, metric: str) -> Path | None:
    """Training loss per step and the validation ``metric`` per evaluation -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(log_root)
    if not rows:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    train = [(r["step"], r["train_loss_step"]) for r in rows if "train_loss_step" in r]
    if train:
        ax1.plot(*zip(*train), lw=0.8, label="train loss (step)")
    epoch = [(r["step"], r["train_loss_epoch"]) for r in rows if "train_loss_epoch" in r]
    if epoch:
        ax1.plot(*zip(*epoch), "o-", label="train loss (epoch mean)")
    val_loss = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if val_loss:
        ax1.plot(*zip(*val_loss), "s-", label="val loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=8)
    val = [(r["step"], r[f"val_{metric}"]) for r in rows if f"val_{metric}" in r]
    if val:
        ax2.plot(*zip(*val), "o-", color="C2")
    ax2.set_xlabel("step")
    ax2.set_ylabel(f"validation {metric}")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
