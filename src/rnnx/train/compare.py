"""``rnnx compare``: several layers, one task, the same budget, one markdown leaderboard.

Every model gets the same resolved settings (task, step and time budget, batch
size, learning rate, width, depth, seed: the recipe derives them from the data, not
from the layer) and is trained one after the other; only ``model.layer`` changes.
The leaderboard is sorted by the task's headline metric (accuracy, bits per
character, or MSE) and written to ``<out>/leaderboard.md`` and ``<out>/compare.json``
next to each run's own directory.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from pathlib import Path
from typing import Any

from rnnx.train.config import resolve


def leaderboard(results: list[dict[str, Any]]) -> str:
    """A markdown table of run results, best first."""
    if not results:
        return ""
    metric, higher = results[0]["metric"], results[0]["higher_is_better"]
    rows = sorted(results, key=lambda r: r["test"][metric], reverse=higher)
    extra = [k for k in rows[0]["test"] if k != metric]
    head = [
        "rank",
        "model",
        f"test {metric}",
        *[f"test {k}" for k in extra],
        "parameters",
        "steps",
        "selected step",
        "train s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows, 1):
        cells = [
            str(i),
            r["model"],
            f"{r['test'][metric]:.4f}",
            *[f"{r['test'][k]:.4f}" for k in extra],
            f"{r['parameters']:,}",
            str(r["steps"]),
            str(r.get("selected_step", r["steps"])),
            f"{r['train_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(
    models: list[str],
    overrides: dict[str, dict],
    config_file: str | None = None,
    *,
    out_dir: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train each of ``models`` with the same settings into ``out_dir/<model>``.

    ``out_dir`` must be new or empty, or hold an earlier comparison and ``overwrite``
    (each model's run directory is then replaced).
    """
    from rnnx.layers import get
    from rnnx.train.config import validate
    from rnnx.train.errors import RunDirectoryExists
    from rnnx.train.run import _safe_name, check_out_dir

    if not models:
        raise ValueError("--models: expected at least one layer name")
    base = resolve(overrides, config_file)
    configs = []
    for m in models:
        try:
            get(m)  # unknown names fail before anything trains
        except ValueError as exc:
            raise ValueError(f"--models: {exc}".replace("layer: ", "")) from None
        cfg = copy.deepcopy(base)
        cfg.model.layer = m
        configs.append(validate(cfg))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(out_dir or Path("runs") / f"compare-{_safe_name(base.task.name)}-{stamp}")
    if root.exists() and not root.is_dir():
        raise RunDirectoryExists(f"--out-dir {root}: exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise RunDirectoryExists(
                f"--out-dir {root}: already holds a comparison or other files; pass "
                "--overwrite to replace its runs, or choose another --out-dir"
            )
        if not (root / "compare.json").exists() and not any(
            (root / m / "config.json").exists() for m in models
        ):
            raise RunDirectoryExists(
                f"--out-dir {root}: is not empty and holds no rnnx comparison; rnnx will not "
                "write into it: choose another --out-dir"
            )
    for cfg in configs:
        check_out_dir(root / cfg.model.layer, overwrite=overwrite)
    from rnnx.train.run import train

    results = []
    for cfg in configs:
        results.append(
            train(cfg, out_dir=root / cfg.model.layer, overwrite=overwrite, progress=progress)
        )
    table = leaderboard(results)
    # Every run got the same settings (the recipe reads the data, not the layer).
    run = results[0]["config"]
    m, t = run["model"], run["train"]
    minutes = f", at most {t['budget_minutes']:g} min" if t.get("budget_minutes") else ""
    budget = (
        f"{base.task.name}; d_model {m['d_model']}, {m['n_layers']} layers"
        f"{', bidirectional' if m.get('bidirectional') else ''}, "
        f"{results[0]['budget']['max_steps']} steps{minutes}, "
        f"batch {t['batch_size']}, lr {t['lr']}, select {t['select']}, seed {t['seed']}"
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "leaderboard.md").write_text(f"Budget: {budget}\n\n{table}")
    (root / "compare.json").write_text(
        json.dumps({"budget": budget, "results": results}, indent=2, default=str) + "\n"
    )
    print(f"\n## {base.task.name}: same budget ({budget})\n\n{table}")
    print(f"leaderboard: {root / 'leaderboard.md'}")
    return results
