"""The configuration of a training run: model, task and trainer, from defaults, TOML and flags.

Precedence, lowest first: the dataclass defaults below, the recipe's settings derived
from the task's data (:mod:`rnnx.train.recipe`: every field whose default is ``None``
is filled from the data's size, length and number of classes when the run starts),
the task's recommended settings (``register_task(defaults=...)``), a TOML file
(``--config run.toml``), then command-line flags. A TOML file has up to three tables::

    [model]
    layer = "s4d"          # any registered layer (`rnnx list`)
    d_model = 128
    n_layers = 4
    layer_kwargs = { d_state = 64 }

    [task]
    name = "ucr:FordA"
    kwargs = { val_fraction = 0.1 }

    [train]
    max_steps = 2000
    budget_minutes = 10
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
    d_model: int | None = None
    """Width of the residual stream (None: the recipe's, from the data)."""
    n_layers: int | None = None
    """Number of blocks (None: the recipe's, from the data)."""
    d_state: int | None = None
    """Shortcut for ``layer_kwargs["d_state"]`` (layers with a state size)."""
    layer_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the layer."""
    mode: str | None = None
    """Layer mode for training (None: the layer's default)."""
    mlp_ratio: float | None = None
    """Per-block MLP width as a multiple of d_model (0: no MLP; None: the recipe's)."""
    glu: bool = False
    """Gated (SwiGLU) MLP instead of GELU."""
    dropout: float | None = None
    """Dropout on the residual branches (None: the recipe's, from the data's size)."""
    norm: str = "layer"
    """``"layer"`` or ``"rms"``."""
    pooling: str | None = None
    """Sequence heads: ``"mean"`` over valid steps or ``"last"`` valid step (None: the
    recipe's: ``"last"`` for forecasting, where the state after the context is what
    predicts, ``"mean"`` otherwise)."""
    instance_norm: bool | None = None
    """Forecasting: normalise each input window by its own per-channel mean and std and
    map the forecast back with the target channel's (RevIN without affine parameters;
    :class:`rnnx.models.SequenceRegressor`). Needs a task whose ``info`` names its
    ``target_channel``. None: the recipe's (on for such tasks)."""
    linear_skip: bool | None = None
    """Forecasting: add a linear map from the target channel's context window to the
    forecast (DLinear's "Linear", arXiv 2205.13504, inside the model;
    :class:`rnnx.models.SequenceRegressor`). Needs a task whose ``info`` names its
    ``target_channel``. None: the recipe's (on for such tasks)."""
    bidirectional: bool | None = None
    """Run every block forward and on the reversed sequence (only the valid part of
    each sequence is reversed) and add the two outputs, as LSSL/S4 do for
    classification: the backbone is then non-causal (no state passing, no ``step``).
    None: the recipe's (on for sequence classification, off otherwise)."""

    def backbone(self, *, d_input: int, vocab_size: int | None) -> BackboneConfig:
        unset = [k for k in ("d_model", "n_layers") if getattr(self, k) is None]
        if unset:
            raise ValueError(
                f"model: {', '.join(unset)} not set; rnnx.train.recipe.apply fills them "
                "from the task's data"
            )
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
            mlp_ratio=self.mlp_ratio or 0.0,
            glu=self.glu,
            dropout=self.dropout or 0.0,
            norm=self.norm,
            bidirectional=bool(self.bidirectional),
        )


@dataclass
class TaskConfig:
    """Which task, and its keyword arguments (see ``rnnx list tasks``)."""

    name: str = "digits"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The optimisation and the trainer.

    The budget is counted in optimizer steps (``max_steps``) and in wall-clock minutes
    (``budget_minutes``); the run stops at whichever comes first, and the learning
    rate warms up and decays over that budget (the schedule follows the larger of the
    two fractions used, so a run cut by the clock still ends its decay at the
    deadline). Fields left at ``None`` are filled by the recipe from the task's data
    (:mod:`rnnx.train.recipe`, docs/training.md).
    """

    epochs: int | None = None
    """Passes over the training split, if set: then ``max_steps`` is ``epochs`` times the
    batches per epoch (None: the budget is ``max_steps``)."""
    max_steps: int = -1
    """Optimizer steps of the run (-1: the recipe's, from the data's size, or ``epochs``)."""
    budget_minutes: float | None = None
    """Time limit of training (and its validations), in minutes on ``budget_clock``; the
    run stops cleanly when it is spent and says so (0: no limit; None: the recipe's)."""
    budget_clock: str = "wall"
    """What ``budget_minutes`` counts: ``"wall"``-clock time, or ``"cpu"``, this process's
    CPU time (all its threads): the fair measure on a machine shared with other jobs."""
    batch_size: int | None = None
    """Global batch size, split evenly across DDP processes (None: the recipe's)."""
    eval_batch_size: int = 0
    """Batch size for validation and test (0: ``2 * batch_size``)."""
    lr: float | None = None
    """Peak learning rate of AdamW (None: the recipe's)."""
    weight_decay: float | None = None
    """AdamW weight decay (not on biases, norms, 1-D parameters, or SSM parameters
    that set their own through ``p._optim``; None: the recipe's)."""
    warmup: float = 0.05
    """Fraction of the budget with a linear warm-up; then cosine decay to 0."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    select: str = "best"
    """Which weights the run tests and saves as its model: ``"best"``, those with the best
    validation metric within its noise (an accuracy within one standard error of the
    highest counts as equally good, and the latest such checkpoint is kept; other
    metrics: the strictly best, ties to the later; :class:`rnnx.train.callbacks.ModelSelection`),
    or ``"last"``, those at the end of training."""
    patience: int | None = None
    """Stop when this many validations in a row fell short of the best one (by more than
    its noise; 0: never; None: the recipe's)."""
    precision: str = "auto"
    """``"32"``, ``"bf16-mixed"``, or ``"auto"``: bf16-mixed if the CPU has native
    bf16 instructions (AVX512-BF16 or AMX), else 32."""
    seed: int = 0
    """Seeds the model's initialisation, the data order and dropout."""
    checkpoint_every: int = 200
    """Write ``checkpoints/last.safetensors`` every this many steps, and at the end of an
    epoch once this many steps have passed since the last one (0: at every epoch end)."""
    val_every: int = 0
    """Validate every this many optimizer steps (0: the recipe's, 40 validations per run,
    down to 10 where the validation split is large; at most one per step)."""
    limit_batches: float = 1.0
    """Fraction (<= 1) or number (> 1) of training and validation batches per epoch, for
    smoke runs; the test split is always evaluated whole."""
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
