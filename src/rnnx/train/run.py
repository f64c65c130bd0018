"""Train, resume, evaluate, compare: the functions behind ``rnnx train|eval|compare``.

A run directory (``runs/<task>-<layer>-<time>`` unless ``--out-dir``) holds::

    config.json                 the run config, and how to rebuild the model
    checkpoints/last.safetensors   training state (atomic; ``--resume`` continues from it)
    model.safetensors           final weights
    logs/version_<k>/metrics.csv   CSV logs (one version per attempt of a resumed run)
    logs/tb/                    TensorBoard logs
    results.json                test metrics, parameters, wall time, references
    curves.png                  learning curves

With no arguments, ``rnnx train`` trains a small S4D classifier on scikit-learn's
digits (64-step pixel sequences) and prints the test accuracy. Under ``torchrun``
(``WORLD_SIZE`` > 1) the same command trains with DDP (gloo on CPU): the global batch
is split across the processes (see :mod:`rnnx.train.sampler`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnx.train.config import RunConfig


def _quiet_lightning() -> None:
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
        "lightning.pytorch.utilities.distributed",
        "lightning.fabric.utilities.distributed",
        "lightning.pytorch.trainer.connectors.checkpoint_connector",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for msg in (
        ".*does not have many workers.*",
        ".*GPU available but not used.*",
        ".*is smaller than the logging interval.*",
        ".*resuming from a checkpoint that ended before the epoch ended.*",
        ".*exists and is not empty.*",
        ".*Checkpoint directory .* exists and is not empty.*",
        ".*Found .* module\\(s\\) in eval mode.*",
        ".*`isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
    ):
        warnings.filterwarnings("ignore", message=msg)


def cpu_has_bf16() -> bool:
    """Whether the CPU has native bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16-mixed" if cpu_has_bf16() else "32"
    if precision not in ("32", "bf16-mixed", "16-mixed", "64"):
        raise ValueError(f"precision: expected auto, 32, bf16-mixed or 64, got {precision!r}")
    return precision


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def build_task_and_model(cfg: RunConfig):
    """``(task, model)`` for a run config; the model initialised from the seed.

    ``cfg`` must be complete (:func:`rnnx.train.recipe.apply` fills what the recipe
    derives from the data); :func:`train` does that before it calls this.
    """
    from rnnx.data import get_task

    task = get_task(cfg.task.name, seed=cfg.train.seed, **cfg.task.kwargs)
    return task, build_model_for(cfg, task)


def build_model_for(cfg: RunConfig, task):
    """The model of ``cfg`` for ``task``, initialised from ``cfg.train.seed``."""
    import lightning as L

    from rnnx.models import build_model

    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    backbone = cfg.model.backbone(d_input=task.d_input, vocab_size=task.vocab_size)
    return build_model(
        task.kind,
        backbone,
        n_classes=task.n_classes,
        d_output=task.d_output,
        pooling=cfg.model.pooling or "mean",
        **forecasting_head(cfg, task),
    )


def forecasting_head(cfg: RunConfig, task) -> dict[str, Any]:
    """``instance_norm`` and ``linear_skip`` arguments of a forecasting head, from
    ``model.instance_norm`` / ``model.linear_skip`` and the task's target channel."""
    out: dict[str, Any] = {"instance_norm": None, "linear_skip": None}
    wanted = [k for k in ("instance_norm", "linear_skip") if getattr(cfg.model, k)]
    if not wanted:
        return out
    channel = task.info.get("target_channel")
    if task.kind != "regression" or channel is None:
        raise ValueError(
            f"{', '.join(wanted)}: {task.name} names no target channel "
            "(info['target_channel']): these are for forecasting a continuation of an "
            "input channel"
        )
    if cfg.model.instance_norm:
        out["instance_norm"] = int(channel)
    if cfg.model.linear_skip:
        out["linear_skip"] = [int(channel), int(task.train.x.shape[1])]
    return out


def model_spec(cfg: RunConfig, task, model, precision: str | None = None) -> dict[str, Any]:
    """What ``config.json`` needs to rebuild the model without the data (and to evaluate
    it as the run did: the precision it was trained and tested in)."""
    return {
        "run": cfg.to_dict(),
        "precision": precision or resolve_precision(cfg.train.precision),
        "backbone": model.backbone.config.to_dict(),
        "head": {
            "kind": task.kind,
            "n_classes": task.n_classes,
            "d_output": task.d_output,
            "pooling": cfg.model.pooling or "mean",
            **forecasting_head(cfg, task),
        },
        "task": {"name": task.name, "vocab": task.info.get("vocab")},
    }


def eval_batch_size(cfg: RunConfig) -> int:
    return cfg.train.eval_batch_size or 2 * int(cfg.train.batch_size or 32)


def _loaders(task, cfg: RunConfig, rank: int, world: int):
    import torch
    from torch.utils.data import DataLoader

    from rnnx.train.sampler import ShardedBatchSampler

    t = cfg.train
    eval_bs = eval_batch_size(cfg)
    train_sampler = ShardedBatchSampler(
        len(task.train),
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        drop_last=True,
        rank=rank,
        world_size=world,
    )

    def loader(ds, sampler):
        # A private generator: creating an iterator must not draw from the global RNG
        # (a resumed run would otherwise see different dropout masks).
        g = torch.Generator().manual_seed(t.seed)
        return DataLoader(ds, batch_sampler=sampler, num_workers=0, generator=g)

    def eval_loader(ds):
        return loader(
            ds, ShardedBatchSampler(len(ds), eval_bs, shuffle=False, rank=rank, world_size=world)
        )

    return (
        train_sampler,
        loader(task.train, train_sampler),
        eval_loader(task.val),
        eval_loader(task.test),
    )


def train(
    cfg: RunConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` (or continue the run in ``out_dir`` with ``resume=True``) and test it.

    Settings left at ``None`` are filled by the recipe from the task's data
    (:func:`rnnx.train.recipe.apply`); ``config.json`` and ``results.json`` hold the
    complete config. The budget is ``max_steps`` optimizer steps and
    ``budget_minutes`` of wall-clock time (:class:`~rnnx.train.callbacks.Budget`);
    with ``select="best"`` the weights with the best validation metric are the ones
    tested and saved (:class:`~rnnx.train.callbacks.ModelSelection`). The test metric
    is always computed on the whole test split, in the run's precision, by
    :func:`evaluate_split` (the function ``rnnx eval`` uses).

    Returns the results dict (also written to ``results.json``).
    """
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from rnnx.data import get_task
    from rnnx.train import recipe
    from rnnx.train.callbacks import Budget, ModelSelection, RunState
    from rnnx.train.checkpoint import SafetensorsCheckpointIO, atomic_write_text, save_weights
    from rnnx.train.module import MAIN_METRIC, TaskModule
    from rnnx.train.plots import plot_curves

    _quiet_lightning()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    rank, world = _world()
    say = print if (verbose and rank == 0) else (lambda *a, **k: None)

    task = get_task(cfg.task.name, seed=cfg.train.seed, **cfg.task.kwargs)
    cfg, derived = recipe.apply(cfg, task)
    t = cfg.train
    metric, higher = MAIN_METRIC[task.kind]
    if t.select not in ("best", "last"):
        raise ValueError(f"select: expected 'best' or 'last', got {t.select!r}")
    if t.select == "best" and task.info.get("val_is_test"):
        raise ValueError(
            f"select: {task.name} has no validation split of its own (its validation curve "
            "is drawn on the test split), so selecting the best validation checkpoint "
            "would select on the test split; use --select last, or keep a validation split"
        )
    model = build_model_for(cfg, task)
    sampler, train_dl, val_dl, _ = _loaders(task, cfg, rank, world)
    limit = t.limit_batches if t.limit_batches <= 1 else int(t.limit_batches)
    n = len(train_dl)
    per_epoch = max(1, int(n * limit)) if isinstance(limit, float) else min(n, limit)
    steps = recipe.total_steps(t, per_epoch)
    val_every = t.val_every or recipe.val_interval(steps, t.batch_size, len(task.val))
    budget = Budget(steps, t.budget_minutes or 0.0, t.budget_clock)
    selection = ModelSelection(metric, higher, t.patience or 0)
    module = TaskModule(
        model, task.kind, lr=t.lr, weight_decay=t.weight_decay, warmup=t.warmup, budget=budget
    )

    if out_dir is None:
        stamp = os.environ.get("TORCHELASTIC_RUN_ID") if world > 1 else None
        stamp = stamp or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        safe = task.name.replace(":", "-")
        out_dir = Path("runs") / f"{safe}-{cfg.model.layer}-{stamp}"
    out = Path(out_dir)
    ckpt = out / "checkpoints" / "last.safetensors"
    if resume and not ckpt.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
    precision = resolve_precision(t.precision)
    spec = model_spec(cfg, task, model, precision)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(spec, indent=2) + "\n")

    logs = out / "logs"
    attempt = len(list(logs.glob("version_*"))) if logs.exists() else 0
    n_params = sum(p.numel() for p in model.parameters())
    mode = model.backbone.blocks[0].mixer.mode
    clock = " of CPU time" if t.budget_clock == "cpu" else ""
    minutes = f", at most {t.budget_minutes:g} min{clock}" if t.budget_minutes else ""
    say(
        f"rnnx train: {cfg.model.layer} ({n_params:,} parameters, mode {mode}, "
        f"precision {precision}{f', {world} processes' if world > 1 else ''}) on "
        f"{task.summary()}; run directory {out}" + (f"; resuming from {ckpt}" if resume else "")
    )
    say(
        f"recipe: d_model {cfg.model.d_model}, {cfg.model.n_layers} blocks"
        f"{', bidirectional' if cfg.model.bidirectional else ''}, dropout {cfg.model.dropout:g}; "
        f"{steps} steps of batch {t.batch_size}{minutes}, lr {t.lr:g}, weight decay "
        f"{t.weight_decay:g}; validate every {val_every} steps, select {t.select}"
        + (f", patience {t.patience}" if t.patience else "")
        + (f"; normalisation: {task.info['normalisation']}" if "normalisation" in task.info else "")
    )

    strategy: Any = "auto"
    if world > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo")
    trainer = L.Trainer(
        max_epochs=-1,
        max_steps=steps,
        accelerator="cpu",
        devices=int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
        num_nodes=max(1, world // int(os.environ.get("LOCAL_WORLD_SIZE", 1))),
        strategy=strategy,
        precision=precision,
        gradient_clip_val=t.grad_clip or None,
        logger=[
            CSVLogger(str(out), name="logs", version=attempt),
            TensorBoardLogger(str(logs), name="tb", version=attempt),
        ],
        callbacks=[budget, selection, RunState(sampler, ckpt, t.checkpoint_every), *callbacks],
        plugins=[SafetensorsCheckpointIO()],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,
        limit_train_batches=limit,
        limit_val_batches=limit,
        num_sanity_val_steps=0,
        val_check_interval=val_every,
        check_val_every_n_epoch=None,
        log_every_n_steps=t.log_every,
        default_root_dir=str(out),
    )
    t0 = time.time()
    trainer.fit(module, train_dl, val_dl, ckpt_path=str(ckpt) if resume else None)
    train_s = time.time() - t0
    if budget.stopped_by == "budget_minutes":
        say(
            f"rnnx train: the {t.budget_minutes:g}-minute budget{clock} is spent: stopped "
            f"cleanly after {trainer.global_step} of {steps} steps"
        )
    elif selection.early_stopped:
        say(
            f"rnnx train: no better validation {metric} in {t.patience} validations: "
            f"stopped early after {trainer.global_step} of {steps} steps"
        )
    selected = int(trainer.global_step)
    if t.select == "best":
        if not selection.restore(model):
            raise RuntimeError(
                "select: no validation ran, so there is no best checkpoint to select; "
                "validate more often (--val-every) or use --select last"
            )
        selected = selection.best_step

    result: dict[str, Any] = {}
    if rank == 0:
        metrics = evaluate_split(
            model, task.kind, task.test, batch_size=eval_batch_size(cfg), precision=precision
        )
        result = {
            "task": task.name,
            "model": cfg.model.layer,
            "kind": task.kind,
            "metric": metric,
            "higher_is_better": higher,
            "test": metrics,
            f"test_{metric}": metrics.get(metric),
            "test_items": len(task.test),
            "parameters": n_params,
            "train_seconds": round(train_s, 1),
            "steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch),
            "selected_step": selected,
            "selection": {
                "select": t.select,
                "selected_step": selected,
                "val": selection.best if t.select == "best" else selection.history[-1:],
                "val_peak": selection.peak,
                "tolerance": round(selection.tolerance, 6),
                "validations": len(selection.history),
                "val_every": val_every,
                "patience": t.patience,
                "early_stopped": selection.early_stopped,
                "history": selection.history,
            },
            "budget": {
                "max_steps": steps,
                "minutes": t.budget_minutes,
                "clock": t.budget_clock,
                "steps_done": int(trainer.global_step),
                "seconds_used": round(budget.elapsed(), 1),
                "wall_seconds": round(budget.used()["wall"], 1),
                "cpu_seconds": round(budget.used()["cpu"], 1),
                "stopped_by": (
                    "patience" if selection.early_stopped else (budget.stopped_by or "steps")
                ),
            },
            "precision": precision,
            "normalisation": task.info.get("normalisation"),
            "recipe": derived,
            "processes": world,
            "resumed": resume,
            "config": cfg.to_dict(),
            "task_info": {k: v for k, v in task.info.items() if k != "vocab"},
            "run_dir": str(out),
        }
        save_weights(model, out / "model.safetensors", metadata=spec)
        atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str) + "\n")
        png = plot_curves(
            logs, out / "curves.png", title=f"{cfg.model.layer} on {task.name}", metric=metric
        )
        result["curves"] = str(png) if png else None
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        value = metrics.get(metric, float("nan"))
        noise = " (within its noise)" if selection.tolerance else ""
        which = f"the best validation {metric}{noise}, step {selected}"
        which = which if t.select == "best" else "last"
        say(
            f"\ntest {metric}: {value:.4f}  ({shown}; weights: {which}; "
            f"{len(task.test)} test items; {train_s:.0f} s of training)"
        )
        ref = task.info.get("reference")
        if ref:
            say("reference: " + ", ".join(f"{k} {v}" for k, v in ref.items()))
        say(f"results: {out / 'results.json'}")
    return result


def evaluate_split(
    model, kind: str, dataset, *, batch_size: int, precision: str = "32"
) -> dict[str, float]:
    """Metrics of ``model`` on a whole split, batch by batch in order, in ``precision``.

    The one function behind the test metric of a run and ``rnnx eval``: the same
    batches, the same autocast (``bf16-mixed``: CPU autocast to bfloat16, as Lightning
    trains), the same float64 sums, so ``rnnx eval`` reproduces a run's test metric
    exactly.
    """
    import contextlib

    import torch
    from torch.utils.data import DataLoader

    from rnnx.train.module import TaskModule

    if precision not in ("32", "bf16-mixed", "64"):
        raise ValueError(f"precision: expected 32, bf16-mixed or 64, got {precision!r}")
    if precision == "64":
        model = model.double()
    module = TaskModule(model, kind, lr=0.0, weight_decay=0.0)
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if precision == "bf16-mixed"
        else contextlib.nullcontext()
    )
    try:
        with torch.inference_mode(), autocast:
            for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                if precision == "64":
                    batch = [b.double() if b.is_floating_point() else b for b in batch]
                _, s = module.loss_and_sums(batch)
                for k, v in s.items():
                    sums[k] = sums.get(k, 0.0) + v.to(torch.float64)
    finally:
        model.train(was_training)
    return TaskModule.metrics_from_sums(kind, {k: float(v) for k, v in sums.items()})


# ---------------------------------------------------------------------- loading


def find_run_files(path: str | Path) -> tuple[Path, Path]:
    """``(config.json, weights)`` for a run directory, a ``model.safetensors`` or a
    training checkpoint (``checkpoints/last.safetensors``)."""
    p = Path(path)
    if p.is_dir():
        cfg = p / "config.json"
        weights = p / "model.safetensors"
        if not weights.exists():
            weights = p / "checkpoints" / "last.safetensors"
    else:
        weights = p
        cfg = p.parent / "config.json"
        if not cfg.exists():
            cfg = p.parent.parent / "config.json"
    if not cfg.exists() or not weights.exists():
        raise FileNotFoundError(
            f"checkpoint: expected a run directory (config.json + model.safetensors) or a "
            f".safetensors file inside one, got {path}"
        )
    return cfg, weights


def load_model(path: str | Path):
    """``(model, spec)`` from a run directory or checkpoint file; no pickle involved."""
    import torch

    from rnnx.models import BackboneConfig, build_model
    from rnnx.train.checkpoint import FORMAT, load_checkpoint, load_weights

    cfg_path, weights = find_run_files(path)
    spec = json.loads(cfg_path.read_text())
    head = spec["head"]
    model = build_model(
        head["kind"],
        BackboneConfig(**spec["backbone"]),
        n_classes=head["n_classes"],
        d_output=head["d_output"],
        pooling=head["pooling"],
        instance_norm=head.get("instance_norm"),
        linear_skip=head.get("linear_skip"),
    )
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        fmt = (f.metadata() or {}).get("format")
    if fmt == FORMAT:
        sd = load_checkpoint(weights)["state_dict"]
        sd = {k.removeprefix("model."): v for k, v in sd.items()}
    else:
        sd = load_weights(weights)
    own = model.state_dict()
    for k, v in list(sd.items()):
        if k in own and own[k].is_complex() and not v.is_complex():
            sd[k] = torch.view_as_complex(v)
    model.load_state_dict(sd)
    model.eval()
    return model, spec


def evaluate(
    path: str | Path,
    task_name: str | None = None,
    *,
    split: str = "test",
    batch_size: int | None = None,
    task_kwargs: dict | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Metrics of a trained model on a task split (default: the task it was trained on).

    By default in the precision the run was trained and tested in and with its
    evaluation batch size, so the test metric equals the run's ``results.json``.
    """
    from rnnx.data import get_task

    model, spec = load_model(path)
    run = RunConfig.from_dict(spec["run"])
    name = task_name or run.task.name
    kwargs = dict(run.task.kwargs if name == run.task.name else {}) | (task_kwargs or {})
    task = get_task(name, seed=run.train.seed, **kwargs)
    kind = spec["head"]["kind"]
    if task.kind != kind:
        raise ValueError(f"task: the model was trained for {kind!r}, {name!r} is {task.kind!r}")
    precision = precision or spec.get("precision") or "32"
    batch_size = batch_size or eval_batch_size(run)
    metrics = evaluate_split(
        model, kind, getattr(task, split), batch_size=batch_size, precision=precision
    )
    return {
        "task": task.name,
        "split": split,
        "metrics": metrics,
        "precision": precision,
        "batch_size": batch_size,
        "checkpoint": str(path),
    }
