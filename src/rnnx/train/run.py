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
(``WORLD_SIZE`` > 1) the same command trains with DDP (NCCL on CUDA, gloo on the CPU):
the global batch is split across the processes (see :mod:`rnnx.train.sampler`).
``--accelerator`` picks the device (``auto``: CUDA when torch sees a GPU, else the CPU;
:func:`trainer_placement`); ``rnnx train --devices N`` starts N processes on this machine
with torchrun.
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


def resolve_precision(precision: str, accelerator: str = "cpu") -> str:
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
    return precision


def _world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def build_task_and_model(cfg: RunConfig):
    """``(task, model)`` for a run config; the model initialised from the seed."""
    import lightning as L

    from rnnx.data import get_task
    from rnnx.models import build_model

    task = get_task(cfg.task.name, seed=cfg.train.seed, **cfg.task.kwargs)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    backbone = cfg.model.backbone(d_input=task.d_input, vocab_size=task.vocab_size)
    model = build_model(
        task.kind,
        backbone,
        n_classes=task.n_classes,
        d_output=task.d_output,
        pooling=cfg.model.pooling,
    )
    return task, model


def model_spec(cfg: RunConfig, task, model) -> dict[str, Any]:
    """What ``config.json`` needs to rebuild the model without the data."""
    return {
        "run": cfg.to_dict(),
        "backbone": model.backbone.config.to_dict(),
        "head": {
            "kind": task.kind,
            "n_classes": task.n_classes,
            "d_output": task.d_output,
            "pooling": cfg.model.pooling,
        },
        "task": {"name": task.name, "vocab": task.info.get("vocab")},
    }


def _loaders(task, cfg: RunConfig, rank: int, world: int):
    import torch
    from torch.utils.data import DataLoader

    from rnnx.train.sampler import ShardedBatchSampler

    t = cfg.train
    eval_bs = t.eval_batch_size or 2 * t.batch_size
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

    Returns the results dict (also written to ``results.json``).
    """
    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from rnnx.train.callbacks import RunState
    from rnnx.train.checkpoint import SafetensorsCheckpointIO, atomic_write_text, save_weights
    from rnnx.train.module import MAIN_METRIC, TaskModule
    from rnnx.train.plots import plot_curves

    _quiet_lightning()
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    rank, world = _world()
    say = print if (verbose and rank == 0) else (lambda *a, **k: None)
    placement = trainer_placement(resolve_accelerator(t.accelerator), t.devices)
    accelerator = placement["accelerator"]

    task, model = build_task_and_model(cfg)
    module = TaskModule(model, task.kind, lr=t.lr, weight_decay=t.weight_decay, warmup=t.warmup)
    sampler, train_dl, val_dl, test_dl = _loaders(task, cfg, rank, world)

    if out_dir is None:
        stamp = os.environ.get("TORCHELASTIC_RUN_ID") if world > 1 else None
        stamp = stamp or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        safe = task.name.replace(":", "-")
        out_dir = Path("runs") / f"{safe}-{cfg.model.layer}-{stamp}"
    out = Path(out_dir)
    ckpt = out / "checkpoints" / "last.safetensors"
    if resume and not ckpt.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
    spec = model_spec(cfg, task, model)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(spec, indent=2) + "\n")

    logs = out / "logs"
    attempt = len(list(logs.glob("version_*"))) if logs.exists() else 0
    precision = resolve_precision(t.precision, accelerator)
    n_params = sum(p.numel() for p in model.parameters())
    mixer = model.backbone.blocks[0].mixer
    # what runs once Lightning has moved the model (mode "auto" resolves per device)
    mode = mixer.resolve_mode(accelerator) if mixer.mode_setting == "auto" else mixer.mode
    say(
        f"rnnx train: {cfg.model.layer} ({n_params:,} parameters, mode {mode}, "
        f"precision {precision} on {accelerator}{f', {world} processes' if world > 1 else ''}) on "
        f"{task.summary()}; run directory {out}" + (f"; resuming from {ckpt}" if resume else "")
    )

    limit = t.limit_batches if t.limit_batches <= 1 else int(t.limit_batches)
    strategy: Any = "auto"
    if placement["process_group_backend"]:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend=placement["process_group_backend"])
    trainer = L.Trainer(
        max_epochs=t.epochs,
        max_steps=t.max_steps,
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
        callbacks=[RunState(sampler, ckpt, t.checkpoint_every), *callbacks],
        plugins=[SafetensorsCheckpointIO()],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        use_distributed_sampler=False,
        limit_train_batches=limit,
        limit_val_batches=limit,
        limit_test_batches=limit,
        val_check_interval=t.val_every or None,
        log_every_n_steps=t.log_every,
        default_root_dir=str(out),
    )
    t0 = time.time()
    trainer.fit(module, train_dl, val_dl, ckpt_path=str(ckpt) if resume else None)
    train_s = time.time() - t0
    trainer.test(module, test_dl, verbose=False)
    metrics = module.test_metrics
    metric, higher = MAIN_METRIC[task.kind]

    result = {
        "task": task.name,
        "model": cfg.model.layer,
        "kind": task.kind,
        "metric": metric,
        "higher_is_better": higher,
        "test": metrics,
        f"test_{metric}": metrics.get(metric),
        "parameters": n_params,
        "train_seconds": round(train_s, 1),
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "precision": precision,
        "accelerator": accelerator,
        "processes": world,
        "resumed": resume,
        "config": cfg.to_dict(),
        "task_info": {k: v for k, v in task.info.items() if k != "vocab"},
        "run_dir": str(out),
    }
    if rank == 0:
        save_weights(model, out / "model.safetensors", metadata=spec)
        atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str) + "\n")
        png = plot_curves(
            logs, out / "curves.png", title=f"{cfg.model.layer} on {task.name}", metric=metric
        )
        result["curves"] = str(png) if png else None
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    value = metrics.get(metric, float("nan"))
    say(f"\ntest {metric}: {value:.4f}  ({shown}; {train_s:.0f} s of training)")
    ref = task.info.get("reference")
    if ref:
        say("reference: " + ", ".join(f"{k} {v}" for k, v in ref.items()))
    say(f"results: {out / 'results.json'}")
    return result


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
    batch_size: int = 128,
    task_kwargs: dict | None = None,
) -> dict[str, Any]:
    """Metrics of a trained model on a task split (default: the task it was trained on)."""
    import torch
    from torch.utils.data import DataLoader

    from rnnx.data import get_task
    from rnnx.train.module import TaskModule

    model, spec = load_model(path)
    run = RunConfig.from_dict(spec["run"])
    name = task_name or run.task.name
    kwargs = dict(run.task.kwargs if name == run.task.name else {}) | (task_kwargs or {})
    task = get_task(name, seed=run.train.seed, **kwargs)
    kind = spec["head"]["kind"]
    if task.kind != kind:
        raise ValueError(f"task: the model was trained for {kind!r}, {name!r} is {task.kind!r}")
    module = TaskModule(model, kind, lr=0.0, weight_decay=0.0)
    sums: dict[str, float] = {}
    with torch.no_grad():
        for batch in DataLoader(getattr(task, split), batch_size=batch_size):
            _, s = module.loss_and_sums(batch)
            for k, v in s.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    metrics = TaskModule.metrics_from_sums(kind, sums)
    return {"task": task.name, "split": split, "metrics": metrics, "checkpoint": str(path)}
