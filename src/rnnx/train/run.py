"""``rnnx train``: build a model from a registered layer, train it on a task, report.

With no arguments it trains a small S4D classifier on scikit-learn's digits (64-step
pixel sequences) and prints the test accuracy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="s4d", help="registered layer name (rnnx list)")
    p.add_argument("--task", default="digits", help="task name (default: digits)")
    p.add_argument("--mode", default=None, help="layer mode (default: the layer's default)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--d-state", type=int, default=None, help="state size, for layers with one")
    p.add_argument("--mlp-ratio", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--pooling", default="mean", choices=("mean", "last"))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: keep)")
    p.add_argument(
        "--out-dir", default=None, help="run directory (default runs/<task>-<model>-<time>)"
    )
    p.add_argument(
        "--limit-batches",
        type=float,
        default=1.0,
        help="fraction (or count) of batches per epoch, for smoke runs",
    )


def main_train(args: argparse.Namespace) -> int:
    try:
        import lightning as L
    except ImportError:
        print("rnnx train needs Lightning: pip install 'rnnx[train]'")
        return 2
    import torch
    from torch.utils.data import DataLoader

    from rnnx.data import MissingDependencyError, get_task
    from rnnx.models import BackboneConfig, SequenceClassifier
    from rnnx.train.module import ClassificationModule

    if args.threads:
        torch.set_num_threads(args.threads)
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
    L.seed_everything(args.seed, workers=True, verbose=False)

    try:
        task = get_task(args.task, seed=args.seed)
    except MissingDependencyError as exc:
        print(f"rnnx train: {exc}")
        return 2
    layer_kwargs: dict[str, Any] = {}
    if args.d_state is not None:
        layer_kwargs["d_state"] = args.d_state
    cfg = BackboneConfig(
        layer=args.model,
        d_model=args.d_model,
        n_layers=args.n_layers,
        d_input=task.d_input,
        layer_kwargs=layer_kwargs,
        mode=args.mode,
        mlp_ratio=args.mlp_ratio,
        dropout=args.dropout,
    )
    model = SequenceClassifier(cfg, task.n_classes, pooling=args.pooling)
    module = ClassificationModule(model, lr=args.lr, weight_decay=args.weight_decay)

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out_dir or os.path.join("runs", f"{task.name}-{args.model}-{stamp}"))
    out.mkdir(parents=True, exist_ok=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"rnnx train: {args.model} ({n_params:,} parameters, mode "
        f"{model.backbone.blocks[0].mixer.mode}) on {task.name} "
        f"({len(task.train)} train / {len(task.val)} val / {len(task.test)} test); "
        f"logs in {out}"
    )

    loaders = {
        split: DataLoader(
            getattr(task, split), batch_size=args.batch_size, shuffle=(split == "train")
        )
        for split in ("train", "val", "test")
    }
    limit = args.limit_batches if args.limit_batches <= 1 else int(args.limit_batches)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu" if not torch.cuda.is_available() else "auto",
        devices=1,
        gradient_clip_val=args.grad_clip or None,
        logger=L.pytorch.loggers.CSVLogger(str(out), name="", version=""),
        enable_checkpointing=False,
        enable_model_summary=False,
        deterministic=False,
        limit_train_batches=limit,
        limit_val_batches=limit,
        default_root_dir=str(out),
    )
    t0 = time.time()
    trainer.fit(module, loaders["train"], loaders["val"])
    train_s = time.time() - t0
    (test,) = trainer.test(module, loaders["test"], verbose=False)
    result = {
        "task": task.name,
        "model": args.model,
        "config": cfg.to_dict(),
        "args": vars(args) | {"func": None},
        "parameters": n_params,
        "test_acc": float(test["test_acc"]),
        "test_loss": float(test["test_loss"]),
        "train_seconds": round(train_s, 1),
        "task_info": task.info,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(
        f"\ntest accuracy: {result['test_acc']:.4f}  (test loss {result['test_loss']:.4f}, "
        f"{train_s:.0f} s of training)"
    )
    ref = task.info.get("reference")
    if ref:
        print("reference: " + ", ".join(f"{k} {v}" for k, v in ref.items()))
    print(f"results: {out / 'results.json'}")
    return 0
