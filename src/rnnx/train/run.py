"""Train, resume, evaluate, compare: the functions behind ``rnnx train|eval|compare``.

A run directory (``runs/<task>-<layer>-<time>`` unless ``--out-dir``) holds::

    config.json                 the run config, and how to rebuild the model
    checkpoints/last.safetensors   training state (atomic; ``--resume`` continues from it)
    model.safetensors           final weights
    logs/version_<k>/metrics.csv   CSV logs (one version per attempt of a resumed run)
    logs/tb/                    TensorBoard logs
    results.json                test metrics, parameters, wall time, references
    curves.png                  learning curves
    status.json                 running, finished, failed or interrupted (and how to resume)

A run directory is never overwritten: ``train`` refuses a directory that holds a run
unless ``overwrite=True`` (``--overwrite``), and the default directory name carries the
time (with a suffix when two runs start in the same second). A run that fails before
its first checkpoint removes the directory it made; one that fails later keeps it,
marked ``failed`` in ``status.json``, to be resumed. The first Ctrl-C finishes the
current step, saves a checkpoint and stops with the ``--resume`` command to continue;
a second Ctrl-C stops at once (the last periodic checkpoint stays).

With no arguments, ``rnnx train`` trains a small S4D classifier on scikit-learn's
digits (64-step pixel sequences) and prints the test accuracy. Under ``torchrun``
(``WORLD_SIZE`` > 1) the same command trains with DDP (NCCL on CUDA, gloo on the CPU):
the global batch is split across the processes (see :mod:`rnnx.train.sampler`).
``--accelerator`` picks the device (``auto``: CUDA when torch sees a GPU, else the CPU;
:func:`trainer_placement`); ``rnnx train --devices N`` starts N processes on this machine
with torchrun.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from rnnx import _plugins
from rnnx.train.config import RunConfig
from rnnx.train.errors import CheckpointError, RunDirectoryExists


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


class AcceleratorError(ValueError):
    """The requested accelerator or device count cannot be used here."""


ACCELERATORS = ("auto", "cpu", "cuda", "mps")


def resolve_accelerator(name: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"mps"`` for a requested accelerator: ``"auto"`` is CUDA
    when torch sees a GPU, else the CPU. Raises :class:`AcceleratorError` (one line: what
    was asked, what this machine has) for an unknown name or a missing device."""
    import torch

    if name not in ACCELERATORS:
        raise AcceleratorError(
            f"accelerator: expected one of {', '.join(ACCELERATORS)}, got {name!r}"
        )
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
        raise AcceleratorError(
            f"accelerator: 'cuda' was requested but torch {torch.__version__} ({build}) "
            "sees no CUDA device here; use --accelerator cpu (or auto)"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise AcceleratorError(
            "accelerator: 'mps' was requested but torch sees no Apple GPU (MPS) here; "
            "use --accelerator cpu (or auto)"
        )
    return name


def trainer_placement(
    accelerator: str, devices: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Where and how Lightning runs: the Trainer's ``accelerator``, ``devices``,
    ``num_nodes`` and the DDP process-group backend (``"nccl"`` on CUDA, ``"gloo"``
    elsewhere; None for one process).

    ``accelerator`` as resolved by :func:`resolve_accelerator`. ``devices`` (0: one per
    process) are the processes on this machine: under torchrun (``LOCAL_WORLD_SIZE`` in
    ``env``) they are torchrun's, and a different explicit count is an error; outside
    it, more than one needs torchrun (``rnnx train --devices N`` starts it).
    """
    env = dict(os.environ) if env is None else env
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 0:
        raise AcceleratorError(f"devices: expected an int >= 0, got {devices!r}")
    world = int(env.get("WORLD_SIZE", 1))
    local = env.get("LOCAL_WORLD_SIZE")
    if local is not None:
        per_node = int(local)
        if devices and devices != per_node:
            raise AcceleratorError(
                f"devices: {devices} requested, but torchrun started {per_node} process(es) "
                "on this machine (--nproc-per-node); drop --devices or make them equal"
            )
    elif devices > 1:
        raise AcceleratorError(
            f"devices: {devices} needs one process per device; run `rnnx train --devices "
            f"{devices} ...` (it starts them with torchrun) or torchrun yourself"
        )
    else:
        per_node = 1
    return {
        "accelerator": accelerator,
        "devices": per_node,
        "num_nodes": max(1, world // per_node),
        "process_group_backend": (
            None if world <= 1 else ("nccl" if accelerator == "cuda" else "gloo")
        ),
    }


#: Lightning's names for the precisions a run can use.
Precision = Literal["32", "bf16-mixed", "16-mixed", "64"]


def resolve_precision(precision: str, accelerator: str = "cpu") -> Precision:
    """Lightning's precision for ``--precision``; ``"auto"`` is ``"bf16-mixed"`` where
    bf16 is native (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX), else
    ``"32"``."""
    if precision == "auto":
        if accelerator == "cuda":
            import torch

            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32"
        return "bf16-mixed" if cpu_has_bf16() else "32"
    if precision not in ("32", "bf16-mixed", "16-mixed", "64"):
        raise ValueError(f"precision: expected auto, 32, bf16-mixed or 64, got {precision!r}")
    return cast(Precision, precision)  # one of them, checked just above


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

    check_layer_fits(cfg.model.layer, task)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    backbone = cfg.model.backbone(d_input=task.d_input, vocab_size=task.vocab_size)
    return build_model(
        task.kind,
        backbone,
        n_classes=task.n_classes,
        d_output=task.d_output,
        pooling=cfg.model.pooling or "mean",
        patch_scan=patch_scan_of(cfg, task),
        **forecasting_head(cfg, task),
        **video_head(cfg, task),
    )


def patch_scan_of(cfg: RunConfig, task):
    """The :class:`~rnnx.models.vision.PatchScanConfig` of a run on an image task
    (``task.info["image_shape"]``), None for a sequence task; one clear error when
    ``model.patch_scan`` does not fit the task's data."""
    image = task.info.get("image_shape")
    if cfg.model.patch_scan and image is None:
        raise ValueError(
            f"patch_scan: {task.name} gives sequences, not images (its info has no "
            "image_shape); a patch scan reads images: drop --patch-scan"
        )
    if image is not None and not cfg.model.patch_scan:
        raise ValueError(
            f"patch_scan: {task.name} gives images {tuple(image)}, which the sequence "
            "backbones read through a patch scan: drop --no-patch-scan (or train on a "
            "sequence layout of the same data)"
        )
    if image is None:
        return None
    from rnnx.train.recipe import image_shape

    shape = image_shape(image)
    assert shape is not None  # image is not None here
    return cfg.model.patch_scan_config(shape)


def check_layer_fits(layer: str, task) -> None:
    """One clear error when ``--model`` is a layer of the wrong kind for the task: video
    prediction stacks layers over frames (``names("spatial")``); every other kind,
    video classification included (a CNN per frame, then a layer over time), stacks
    layers over sequences (``names("sequence")``)."""
    import rnnx.layers as layers

    need = "spatial" if task.kind == "video_prediction" else "sequence"
    have = layers.get(layer).kind
    if have != need:
        what = {"spatial": "a layer over frames", "sequence": "a layer over sequences"}
        raise ValueError(
            f"--model {layer}: is {what[have]} ({have}); the task {task.name} "
            f"({task.kind}) needs {what[need]}: one of {', '.join(layers.names(need))}"
        )


def video_head(cfg: RunConfig, task) -> dict[str, Any]:
    """``patch_size`` of a video prediction model (``{}`` for other kinds; one clear
    error if it is set for a task that has neither frames nor images to cut: image
    tasks take it through :func:`patch_scan_of`)."""
    if task.kind == "video_prediction":
        from rnnx.models.video import DEFAULT_PATCH_SIZE

        return {"patch_size": cfg.model.patch_size or DEFAULT_PATCH_SIZE}
    if cfg.model.patch_size is not None and task.info.get("image_shape") is None:
        raise ValueError(
            f"--patch-size: only video prediction and image tasks cut their inputs into "
            f"patches; {task.name} is a {task.kind} task of sequences"
        )
    return {}


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
    # one channel, or a list of them for several targets (time-major outputs)
    channel = [int(c) for c in channel] if isinstance(channel, list | tuple) else int(channel)
    if cfg.model.instance_norm:
        out["instance_norm"] = channel
    if cfg.model.linear_skip:
        out["linear_skip"] = [channel, int(task.train.x.shape[1])]
    return out


def model_spec(cfg: RunConfig, task, model, precision: str | None = None) -> dict[str, Any]:
    """What ``config.json`` needs to rebuild the model without the data (and to evaluate
    it as the run did: the precision it was trained and tested in)."""
    return {
        "run": cfg.to_dict(),
        "precision": precision or resolve_precision(cfg.train.precision),
        # a video model's own config: its backbone reads CNN features, not the frames
        "backbone": getattr(model, "config", model.backbone.config).to_dict(),
        "head": {
            "kind": task.kind,
            "n_classes": task.n_classes,
            "d_output": task.d_output,
            "pooling": cfg.model.pooling or "mean",
            **forecasting_head(cfg, task),
            "patch_scan": scan.to_dict() if (scan := patch_scan_of(cfg, task)) else None,
            **video_head(cfg, task),
        },
        "task": {
            "name": task.name,
            "vocab": task.info.get("vocab"),
            "tokenizer": task.info.get("tokenizer")
            or ("chars" if task.info.get("vocab") else None),
        },
        "imports": list(_plugins.IMPORTED),
    }


def eval_batch_size(cfg: RunConfig) -> int:
    """The evaluation batch size of a run: ``eval_batch_size``, else twice the batch."""
    return cfg.train.eval_batch_size or 2 * int(cfg.train.batch_size or 32)


def _loaders(task, cfg: RunConfig, rank: int, world: int):
    import torch
    from torch.utils.data import DataLoader

    from rnnx.train.sampler import ShardedBatchSampler

    t = cfg.train
    assert t.batch_size is not None  # recipe.apply filled it
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
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` (or continue the run in ``out_dir`` with ``resume=True``) and test it.

    ``out_dir`` must not hold a run already, unless ``overwrite`` (module docstring).
    Settings left at ``None`` are filled by the recipe from the task's data
    (:func:`rnnx.train.recipe.apply`); ``config.json`` and ``results.json`` hold the
    complete config. The budget is ``max_steps`` optimizer steps and
    ``budget_minutes`` on a clock (:class:`~rnnx.train.callbacks.Budget`); with
    ``select="best"`` the weights with the best validation metric are the ones tested
    and saved (:class:`~rnnx.train.callbacks.ModelSelection`). The test metric is
    always computed on the whole test split, in the run's precision, by
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
    from rnnx.train.config import validate
    from rnnx.train.interrupt import GracefulInterrupt
    from rnnx.train.module import MAIN_METRIC, TaskModule
    from rnnx.train.plots import plot_curves

    validate(cfg)  # every setting checked before any data are read
    _quiet_lightning()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    rank, world = _world()
    say = print if (verbose and rank == 0) else (lambda *a, **k: None)
    placement = trainer_placement(resolve_accelerator(cfg.train.accelerator), cfg.train.devices)
    accelerator = placement["accelerator"]
    check_run_dir(out_dir, resume=resume, overwrite=overwrite, rank=rank)

    task = get_task(cfg.task.name, seed=cfg.train.seed, **cfg.task.kwargs)
    cfg, derived = recipe.apply(cfg, task)
    t = cfg.train
    metric, higher = MAIN_METRIC[task.kind]
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
    assert t.batch_size is not None and t.lr is not None and t.weight_decay is not None  # recipe
    val_every = t.val_every or recipe.val_interval(steps, t.batch_size, len(task.val))
    budget = Budget(steps, t.budget_minutes or 0.0, t.budget_clock)
    selection = ModelSelection(metric, higher, t.patience or 0)
    module = TaskModule(
        model,
        task.kind,
        lr=t.lr,
        weight_decay=t.weight_decay,
        warmup=t.warmup,
        budget=budget,
        teacher_forcing=t.teacher_forcing is not False,
    )

    out = Path(out_dir) if out_dir is not None else default_run_dir(task.name, cfg, world)
    ckpt = out / "checkpoints" / "last.safetensors"
    precision = resolve_precision(t.precision, accelerator)
    spec = model_spec(cfg, task, model, precision)

    logs = out / "logs"
    attempt = len(list(logs.glob("version_*"))) if resume and logs.exists() else 0
    clock = " of CPU time" if t.budget_clock == "cpu" else ""
    minutes = f", at most {t.budget_minutes:g} min{clock}" if t.budget_minutes else ""
    n_params = sum(p.numel() for p in model.parameters())
    mixer = model.backbone.blocks[0].mixer
    # what runs once Lightning has moved the model (mode "auto" resolves per device)
    mode = mixer.resolve_mode(accelerator) if mixer.mode_setting == "auto" else mixer.mode
    say(
        f"rnnx train: {cfg.model.layer} ({n_params:,} parameters, mode {mode}, "
        f"precision {precision} on {accelerator}"
        f"{f', {world} processes' if world > 1 else ''}) on "
        f"{task.summary()}; run directory {out}" + (f"; resuming from {ckpt}" if resume else "")
    )
    inferred = task.info.get("inferred")
    if inferred:
        say("inferred from the data: " + describe_inferred(inferred))
    say(
        f"recipe: d_model {cfg.model.d_model}, {cfg.model.n_layers} blocks"
        f"{', bidirectional' if cfg.model.bidirectional else ''}"
        + (
            f", patch scan ({cfg.model.patch_size}x{cfg.model.patch_size} patches; orders "
            f"{cfg.model.scan_orders}; merge {cfg.model.scan_merge}"
            f"{'' if cfg.model.scan_shared else '; a layer per order'})"
            if cfg.model.patch_scan
            else ""
        )
        + f", dropout {cfg.model.dropout:g}; "
        f"{steps} steps of batch {t.batch_size}{minutes}, lr {t.lr:g}, weight decay "
        f"{t.weight_decay:g}; validate every {val_every} steps, select {t.select}"
        + (f", patience {t.patience}" if t.patience else "")
        + (f"; normalisation: {task.info['normalisation']}" if "normalisation" in task.info else "")
    )

    stop = GracefulInterrupt(ckpt, out, enabled=world == 1)
    strategy: Any = "auto"
    if placement["process_group_backend"]:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend=placement["process_group_backend"])
    trainer = L.Trainer(
        max_epochs=-1,
        max_steps=steps,
        accelerator=accelerator,
        devices=placement["devices"],
        num_nodes=placement["num_nodes"],
        strategy=strategy,
        precision=precision,
        gradient_clip_val=t.grad_clip or None,
        logger=[
            CSVLogger(str(out), name="logs", version=attempt),
            TensorBoardLogger(str(logs), name="tb", version=attempt),
        ],
        callbacks=[
            budget,
            selection,
            run_state := RunState(sampler, ckpt, t.checkpoint_every),
            *callbacks,
            stop,
        ],
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
    with guarded_run(out, spec, stop, resume=resume, overwrite=overwrite, rank=rank):
        trainer.fit(module, train_dl, val_dl, ckpt_path=str(ckpt) if resume else None)
        train_s = run_state.train_seconds
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
        # the whole test split, on rank 0, as `rnnx eval` computes it
        metrics = (
            evaluate_split(
                model, task.kind, task.test, batch_size=eval_batch_size(cfg), precision=precision
            )
            if rank == 0
            else {}
        )

    result: dict[str, Any] = {}
    if rank == 0:
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
            "accelerator": accelerator,
            "processes": world,
            "resumed": resume,
            "attempts": attempt + 1,
            "config": cfg.to_dict(),
            **({"inferred": inferred} if inferred else {}),
            "task_info": {k: v for k, v in task.info.items() if k != "vocab"},
            "run_dir": str(out),
        }
        save_weights(model, out / "model.safetensors", metadata=spec)
        atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str) + "\n")
        png = plot_curves(
            logs, out / "curves.png", title=f"{cfg.model.layer} on {task.name}", metric=metric
        )
        result["curves"] = str(png) if png else None
        write_status(out, "finished", steps=result["steps"])
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
    batches, the same autocast (``bf16-mixed`` / ``16-mixed``: autocast to bfloat16 /
    float16 on the model's device, as Lightning trains), the same float64 sums, so
    ``rnnx eval`` reproduces a run's test metric exactly.
    """
    import torch
    from torch.utils.data import DataLoader

    from rnnx.train.module import TaskModule

    dtypes = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
    if precision not in ("32", "64", *dtypes):
        raise ValueError(f"precision: expected 32, bf16-mixed, 16-mixed or 64, got {precision!r}")
    if precision == "64":
        model = model.double()
    device = next(model.parameters()).device
    module = TaskModule(model, kind, lr=0.0, weight_decay=0.0)
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    autocast = (
        torch.autocast(device.type, dtype=dtypes[precision])
        if precision in dtypes
        else contextlib.nullcontext()
    )
    try:
        with torch.inference_mode(), autocast:
            for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                if precision == "64":
                    batch = [b.double() if b.is_floating_point() else b for b in batch]
                batch = [b.to(device) for b in batch]
                _, s = module.loss_and_sums(batch)
                for k, v in s.items():
                    sums[k] = sums.get(k, 0.0) + v.to(torch.float64)
    finally:
        model.train(was_training)
    return TaskModule.metrics_from_sums(kind, {k: float(v) for k, v in sums.items()})


def describe_inferred(inferred: dict[str, Any]) -> str:
    """``kind classification, classes 3, channels 2, lengths 20-40`` for the run header."""

    def fmt(v: Any) -> str:
        if isinstance(v, list | tuple) and len(v) > 8:
            return f"[{', '.join(map(str, v[:8]))}, ... ({len(v)})]"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(map(str, v)) + "]"
        return str(v)

    return ", ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in inferred.items())


# ---------------------------------------------------------------------- run directories


def _safe_name(task_name: str) -> str:
    """A file-name-safe short form of a task name (``text:/data/notes.txt`` -> ``text-notes``)."""
    kind, _, rest = task_name.partition(":")
    if rest and ("/" in rest or "\\" in rest or "." in Path(rest).name):
        rest = Path(rest).stem or Path(rest).name
    name = f"{kind}-{rest}" if rest else kind
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"


def default_run_dir(task_name: str, cfg: RunConfig, world: int = 1) -> Path:
    """``runs/<task>-<layer>-<time>``, with ``-2``, ``-3``... if that name is taken."""
    stamp = os.environ.get("TORCHELASTIC_RUN_ID") if world > 1 else None
    stamp = stamp or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{_safe_name(task_name)}-{cfg.model.layer}-{stamp}"
    if world > 1:
        return base  # every process must agree on it; the launch id is unique
    out, k = base, 1
    while out.exists():
        k += 1
        out = base.with_name(f"{base.name}-{k}")
    return out


def _holds_run(path: Path) -> list[str]:
    return [
        n
        for n in ("config.json", "model.safetensors", "checkpoints", "results.json", "logs")
        if (path / n).exists()
    ]


def check_out_dir(out_dir: str | Path, *, overwrite: bool = False) -> None:
    """Refuse an ``out_dir`` that already holds something, unless ``overwrite`` and it is
    an rnnx run directory (anything else is never deleted)."""
    out = Path(out_dir)
    if not out.exists():
        return
    if not out.is_dir():
        raise RunDirectoryExists(f"--out-dir {out}: exists and is not a directory")
    if not any(out.iterdir()):
        return
    held = _holds_run(out)
    if not held:
        raise RunDirectoryExists(
            f"--out-dir {out}: is not empty and is not an rnnx run directory (no config.json); "
            "rnnx will not write into it or delete it: choose another --out-dir"
        )
    if not overwrite:
        status = read_status(out).get("status", "unknown")
        raise RunDirectoryExists(
            f"--out-dir {out}: already holds a run (status {status}; {', '.join(held)}); "
            f"pass --overwrite to replace it, continue it with `rnnx train --resume {out}`, "
            "or choose another --out-dir"
        )


def check_run_dir(
    out_dir: str | Path | None, *, resume: bool, overwrite: bool, rank: int = 0
) -> None:
    """Refuse a run directory before any data are read: a resumed run needs a whole
    checkpoint, a new one a directory that holds no run (unless ``overwrite``)."""
    if resume:
        if out_dir is None:
            raise ValueError("--resume: expected the run directory to continue")
        check_resumable(out_dir)
    elif out_dir is not None and rank == 0:
        check_out_dir(out_dir, overwrite=overwrite)


@contextlib.contextmanager
def guarded_run(
    out: Path, spec: dict[str, Any], stop, *, resume: bool, overwrite: bool, rank: int
) -> Iterator[None]:
    """The run directory around training: create it (emptied with ``overwrite``; kept on
    resume), write ``config.json`` and ``status.json``, hand Ctrl-C to ``stop`` (a
    :class:`~rnnx.train.interrupt.GracefulInterrupt`), and if the block fails, remove the
    directory or mark it (:func:`after_failure`)."""
    from rnnx.train.checkpoint import atomic_write_text

    fresh = rank == 0 and not resume and prepare_run_dir(out, overwrite=overwrite)
    try:
        if rank == 0:
            atomic_write_text(out / "config.json", json.dumps(spec, indent=2) + "\n")
            write_status(out, "running")
        with stop.installed():
            yield
    except BaseException as exc:
        after_failure(out, stop.ckpt, exc, fresh=fresh, rank=rank)
        raise


def prepare_run_dir(out: Path, *, overwrite: bool = False) -> bool:
    """Create ``out`` (after :func:`check_out_dir`), emptying it first with ``overwrite``.
    Returns True: the directory holds nothing but this run from now on."""
    check_out_dir(out, overwrite=overwrite)
    if out.exists() and any(out.iterdir()):  # an rnnx run, and overwrite was asked for
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return True


def read_status(out: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(out) / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def write_status(out: Path, status: str, **extra: Any) -> None:
    """``status.json``: ``running``, ``finished``, ``failed`` or ``interrupted``, and when."""
    from rnnx.train.checkpoint import atomic_write_text

    payload = {
        "status": status,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        **extra,
    }
    atomic_write_text(Path(out) / "status.json", json.dumps(payload, indent=2) + "\n")


def check_resumable(out_dir: str | Path) -> None:
    """A run directory with a whole checkpoint that did not finish yet (else one clear error)."""
    from rnnx.train.checkpoint import check_safetensors

    out = Path(out_dir)
    read_run_config(out, flag="--resume")
    ckpt = out / "checkpoints" / "last.safetensors"
    if not ckpt.exists():
        raise FileNotFoundError(
            f"--resume {out}: no checkpoint at {ckpt} (the run stopped before its first one; "
            "start it again)"
        )
    check_safetensors(ckpt)
    status = read_status(out)
    if status.get("status") == "finished" or (not status and (out / "results.json").exists()):
        raise ValueError(
            f"--resume {out}: this run finished (see {out / 'results.json'}); nothing to resume. "
            "Start a new run to train again"
        )


def after_failure(out: Path, ckpt: Path, exc: BaseException, *, fresh: bool, rank: int) -> None:
    """What a run that stopped early leaves: nothing, if it never wrote a checkpoint (its
    directory is removed); else its directory, marked in ``status.json``, and a note on
    ``exc`` with the ``--resume`` command (the CLI prints it on the error's line)."""
    from rnnx.train.errors import RunInterrupted

    if rank != 0 or not out.exists():
        return
    interrupted = isinstance(exc, RunInterrupted | KeyboardInterrupt)
    if not ckpt.exists():
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        return
    why = " ".join(str(exc).split()) or type(exc).__name__
    write_status(
        out,
        "interrupted" if interrupted else "failed",
        error=None if interrupted else f"{type(exc).__name__}: {why}",
        resume=f"rnnx train --resume {out}",
    )
    if not interrupted and hasattr(exc, "add_note"):
        exc.add_note(f"{out} keeps its last checkpoint; to continue: rnnx train --resume {out}")


# ---------------------------------------------------------------------- loading

_SPEC_KEYS = ("run", "backbone", "head", "task")


def read_run_config(path: str | Path, *, flag: str = "checkpoint") -> dict[str, Any]:
    """The ``config.json`` of a run directory, or one clear error naming what is wrong."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{flag} {p}: no such run directory")
    cfg = p / "config.json" if p.is_dir() else p
    if not cfg.exists():
        raise CheckpointError(f"{flag} {p}: not an rnnx run directory (no config.json)")
    return _parse_spec(cfg)


def _parse_spec(cfg: Path) -> dict[str, Any]:
    try:
        spec = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint: {cfg} is not valid JSON ({' '.join(str(exc).split())}): "
            "the file is damaged"
        ) from None
    missing = [k for k in _SPEC_KEYS if not isinstance(spec, dict) or k not in spec]
    if missing:
        raise CheckpointError(
            f"checkpoint: {cfg} is not an rnnx run config (missing {', '.join(missing)})"
        )
    return spec


def import_recorded(spec: dict[str, Any]) -> None:
    """Import the ``--import`` modules a run was trained with (its plugin tasks/layers)."""
    for module in spec.get("imports") or []:
        if module not in _plugins.IMPORTED:
            try:
                _plugins.import_module(module)
            except ValueError as exc:
                raise ValueError(
                    f"this run was trained with --import {module}, which does not import "
                    f"now: {' '.join(str(exc).split())}"
                ) from None


def tokenizer_of(spec: dict[str, Any]):
    """The character/byte tokenizer saved with a language model, or None."""
    from rnnx.data.text import Tokenizer

    return Tokenizer.from_spec(spec.get("task") or {})


def find_run_files(path: str | Path) -> tuple[Path, Path]:
    """``(config.json, weights)`` for a run directory, a ``model.safetensors`` or a
    training checkpoint (``checkpoints/last.safetensors``)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"checkpoint: {p} does not exist (expected a run directory or a .safetensors "
            "file inside one)"
        )
    if p.is_dir():
        cfg = p / "config.json"
        weights = p / "model.safetensors"
        if not weights.exists():
            weights = p / "checkpoints" / "last.safetensors"
        if not cfg.exists():
            raise CheckpointError(f"checkpoint: {p} is not an rnnx run directory (no config.json)")
        if not weights.exists():
            raise CheckpointError(
                f"checkpoint: {p} holds no weights (neither model.safetensors nor "
                "checkpoints/last.safetensors): the run stopped before saving any"
            )
    else:
        weights = p
        cfg = p.parent / "config.json"
        if not cfg.exists():
            cfg = p.parent.parent / "config.json"
        if not cfg.exists():
            raise CheckpointError(
                f"checkpoint: no config.json beside {p} (or one level up): rnnx needs the "
                "run directory's config.json to rebuild the model"
            )
    return cfg, weights


def load_model(path: str | Path):
    """``(model, spec)`` from a run directory or checkpoint file; no pickle involved.

    Every problem is a :class:`~rnnx.train.errors.CheckpointError` (or
    ``FileNotFoundError``) naming the file: missing, empty, truncated, corrupt, or
    weights that do not fit the model its ``config.json`` describes.
    """
    import torch

    from rnnx.models import BackboneConfig, build_model
    from rnnx.train.checkpoint import FORMAT, check_safetensors, load_checkpoint, load_weights

    cfg_path, weights = find_run_files(path)
    spec = _parse_spec(cfg_path)
    import_recorded(spec)
    header = check_safetensors(weights)
    head = spec["head"]
    try:
        model = build_model(
            head["kind"],
            BackboneConfig(**spec["backbone"]),
            n_classes=head["n_classes"],
            d_output=head["d_output"],
            pooling=head["pooling"],
            instance_norm=head.get("instance_norm"),
            linear_skip=head.get("linear_skip"),
            patch_scan=head.get("patch_scan"),
            patch_size=head.get("patch_size"),
        )
    except (TypeError, KeyError) as exc:
        raise CheckpointError(
            f"checkpoint: {cfg_path} does not describe a model rnnx can build "
            f"({type(exc).__name__}: {exc})"
        ) from None
    fmt = (header.get("__metadata__") or {}).get("format")
    if fmt == FORMAT:
        sd = load_checkpoint(weights)["state_dict"]
        sd = {k.removeprefix("model."): v for k, v in sd.items()}
    else:
        sd = load_weights(weights)
    own = model.state_dict()
    for k, v in list(sd.items()):
        if k in own and own[k].is_complex() and not v.is_complex():
            sd[k] = torch.view_as_complex(v)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" and {len(items) - 3} more" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise CheckpointError(
            f"checkpoint: {weights} does not fit the model of {cfg_path} ({'; '.join(parts)})"
        )
    model.load_state_dict(sd)
    model.eval()
    return model, spec


def check_task_fits(spec: dict[str, Any], task) -> None:
    """One clear error when ``task`` asks another model than the saved one: another kind,
    input width, vocabulary, number of classes or of outputs."""
    head, backbone = spec["head"], spec["backbone"]
    saved = spec["run"]["task"]["name"]
    problems = []
    if task.kind != head["kind"]:
        problems.append(f"it is a {task.kind} task, the model does {head['kind']}")
    vocab = backbone.get("vocab_size")
    if (task.vocab_size is None) != (vocab is None):
        problems.append(
            "it has token inputs, the model real-valued ones"
            if vocab is None
            else "it has real-valued inputs, the model token ids"
        )
    elif vocab is not None and task.vocab_size > vocab:
        problems.append(f"vocabulary of {task.vocab_size} tokens, the model has {vocab}")
    elif vocab is None and task.d_input != backbone.get("d_input"):
        problems.append(f"{task.d_input} input channels, the model {backbone.get('d_input')}")
    classes = ("classification", "tagging", "video_classification")
    if head["kind"] in classes and task.n_classes != head["n_classes"]:
        problems.append(f"{task.n_classes} classes, the model {head['n_classes']}")
    image, scan = task.info.get("image_shape"), head.get("patch_scan")
    if (image is None) != (scan is None):
        problems.append(
            "it gives images, the model reads sequences"
            if scan is None
            else "it gives sequences, the model reads images"
        )
    elif scan is not None and list(image) != list(scan["image_shape"]):
        problems.append(f"images of shape {tuple(image)}, the model {tuple(scan['image_shape'])}")
    if head["kind"] == "regression" and task.d_output != head["d_output"]:
        problems.append(f"{task.d_output} outputs, the model {head['d_output']}")
    if problems:
        raise ValueError(
            f"--task {task.name}: does not fit the model trained on {saved}: " + "; ".join(problems)
        )


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
    A language model's saved vocabulary is handed to a task that takes one (``text:``),
    so another file is encoded as the model was trained.
    """
    from rnnx.data import get_task, task_entry
    from rnnx.train.config import ConfigError, validate

    model, spec = load_model(path)
    run = RunConfig.from_dict(spec["run"])
    name = task_name or run.task.name
    kwargs = dict(run.task.kwargs if name == run.task.name else {}) | (task_kwargs or {})
    try:
        validate(RunConfig(model=run.model, task=type(run.task)(name, kwargs)))
    except ConfigError as exc:
        raise ValueError(f"--task: {exc.detail}") from None
    tok = tokenizer_of(spec)
    fn_params = _plugins.accepted_kwargs(task_entry(name).fn)[0]
    if tok is not None and "vocab" in fn_params and "vocab" not in (task_kwargs or {}):
        kwargs.update(tok.task_kwargs())
    task = get_task(name, seed=run.train.seed, **kwargs)
    check_task_fits(spec, task)
    kind = spec["head"]["kind"]
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
