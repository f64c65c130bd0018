"""The configuration of a training run: model, task and trainer, from defaults, TOML and flags.

Precedence, lowest first: the dataclass defaults below, the task's recommended
settings (``register_task(defaults=...)``), a TOML file (``--config run.toml``), then
command-line flags. A TOML file has up to three tables::

    [model]
    layer = "s4d"          # any registered layer (`rnnx list`)
    d_model = 128
    n_layers = 4
    layer_kwargs = { d_state = 64 }

    [task]
    name = "ucr:FordA"
    kwargs = { val_fraction = 0.1 }

    [train]
    epochs = 20
    lr = 3e-3
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rnnx.models import BackboneConfig


@dataclass
class ModelConfig:
    """The model: a backbone of blocks around one registered layer, and the head's pooling."""

    layer: str = "s4d"
    """Registered layer name (``rnnx list``)."""
    d_model: int = 64
    """Width of the residual stream."""
    n_layers: int = 2
    """Number of blocks."""
    d_state: int | None = None
    """Shortcut for ``layer_kwargs["d_state"]`` (layers with a state size)."""
    layer_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the layer."""
    mode: str | None = None
    """Layer mode for training (None: the layer's default)."""
    mlp_ratio: float = 0.0
    """Per-block MLP width as a multiple of d_model (0: no MLP)."""
    glu: bool = False
    """Gated (SwiGLU) MLP instead of GELU."""
    dropout: float = 0.0
    """Dropout on the residual branches."""
    norm: str = "layer"
    """``"layer"`` or ``"rms"``."""
    pooling: str = "mean"
    """Sequence heads: ``"mean"`` over valid steps or ``"last"`` valid step."""

    def backbone(self, *, d_input: int, vocab_size: int | None) -> BackboneConfig:
        kwargs = dict(self.layer_kwargs)
        if self.d_state is not None:
            kwargs["d_state"] = self.d_state
        return BackboneConfig(
            layer=self.layer,
            d_model=self.d_model,
            n_layers=self.n_layers,
            d_input=d_input,
            vocab_size=vocab_size,
            layer_kwargs=kwargs,
            mode=self.mode,
            mlp_ratio=self.mlp_ratio,
            glu=self.glu,
            dropout=self.dropout,
            norm=self.norm,
        )


@dataclass
class TaskConfig:
    """Which task, and its keyword arguments (see ``rnnx list tasks``)."""

    name: str = "digits"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The optimisation and the trainer."""

    epochs: int = 30
    """Passes over the training split."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: ``epochs`` decides)."""
    batch_size: int = 64
    """Global batch size (split evenly across DDP processes)."""
    eval_batch_size: int = 0
    """Batch size for validation and test (0: ``2 * batch_size``)."""
    lr: float = 3e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on biases, norms, 1-D parameters, or SSM parameters
    that set their own through ``p._optim``)."""
    warmup: float = 0.05
    """Fraction of the steps with a linear warm-up; then cosine decay to 0."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    precision: str = "auto"
    """``"32"``, ``"bf16-mixed"``, or ``"auto"``: bf16-mixed where bf16 is native (a CUDA
    GPU that supports it; a CPU with AVX512-BF16 or AMX), else 32."""
    accelerator: str = "auto"
    """``"auto"`` (CUDA when torch sees a GPU, else the CPU), ``"cpu"``, ``"cuda"`` or
    ``"mps"``. DDP uses NCCL on CUDA and gloo otherwise."""
    devices: int = 0
    """Processes (one per device) on this machine; 0: one, or torchrun's count under
    torchrun. ``rnnx train --devices N`` (N > 1) starts N processes with torchrun."""
    seed: int = 0
    """Seeds the model's initialisation, the data order and dropout."""
    checkpoint_every: int = 200
    """Write ``checkpoints/last.safetensors`` every this many steps and at the end of
    every epoch (0: only at epoch ends)."""
    val_every: int = 0
    """Validate every this many training batches (0: once per epoch)."""
    limit_batches: float = 1.0
    """Fraction (<= 1) or number (> 1) of batches per epoch, for smoke runs."""
    threads: int = 0
    """torch threads (0: torch's default)."""
    log_every: int = 10
    """Log training metrics every this many steps."""


@dataclass
class RunConfig:
    """A whole run; ``config.json`` of a run directory holds its :meth:`to_dict`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(
            model=_build(ModelConfig, d.get("model", {}), "model"),
            task=_build(TaskConfig, d.get("task", {}), "task"),
            train=_build(TrainConfig, d.get("train", {}), "train"),
        )


def _build(cls, values: dict[str, Any], section: str):
    known = {f.name for f in fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(
            f"[{section}]: unknown key(s) {sorted(unknown)}; expected some of {sorted(known)}"
        )
    return cls(**values)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for section, values in over.items():
        if not isinstance(values, dict):
            raise ValueError(f"config: [{section}] must be a table, got {values!r}")
        for k, v in values.items():
            if k in ("layer_kwargs", "kwargs") and isinstance(v, dict):
                out.setdefault(section, {}).setdefault(k, {}).update(v)
            else:
                out.setdefault(section, {})[k] = v
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    unknown = set(data) - {"model", "task", "train"}
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {sorted(unknown)}; expected model, task, train")
    return data


def resolve(
    overrides: dict[str, dict[str, Any]], config_file: str | Path | None = None
) -> RunConfig:
    """Defaults < task defaults < TOML file < ``overrides`` (from the command line)."""
    from rnnx.data import task_entry

    file_values = load_toml(config_file) if config_file else {}
    name = (
        overrides.get("task", {}).get("name")
        or file_values.get("task", {}).get("name")
        or TaskConfig.name
    )
    merged = RunConfig().to_dict()
    merged = _merge(merged, task_entry(name).defaults)
    merged = _merge(merged, file_values)
    merged = _merge(merged, overrides)
    return RunConfig.from_dict(merged)


def parse_value(text: str) -> Any:
    """A TOML literal (``3``, ``0.5``, ``true``, ``[1, 2]``), or else the string itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    out = {}
    for item in pairs or []:
        if "=" not in item:
            raise ValueError(f"{flag}: expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = parse_value(v.strip())
    return out
