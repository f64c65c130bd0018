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
    progress: bool = True,
) -> list[dict[str, Any]]:
    from rnnx.layers import get
    from rnnx.train.run import train

    if not models:
        raise ValueError("--models: expected at least one layer name")
    for m in models:
        get(m)  # unknown names fail before anything trains
    base = resolve(overrides, config_file)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = Path(out_dir or Path("runs") / f"compare-{base.task.name.replace(':', '-')}-{stamp}")
    results = []
    for m in models:
        cfg = copy.deepcopy(base)
        cfg.model.layer = m
        results.append(train(cfg, out_dir=root / m, progress=progress))
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
