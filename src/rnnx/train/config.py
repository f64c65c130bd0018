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

import ast
import copy
import inspect
import itertools
import math
import textwrap
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rnnx._names import did_you_mean
from rnnx.models import BackboneConfig
from rnnx.models.vision import MERGES, PatchScanConfig, parse_orders


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
    """Layer mode for training, an algorithm such as ``"chunk"`` or ``"scan"`` (None: the
    layer's default)."""
    backend: str | None = None
    """Implementation of the layer's ops: ``"auto"``, ``"native"``, ``"torch"`` (the
    layer's ``backends``; None: ``"auto"``)."""
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
    patch_scan: bool | None = None
    """Image tasks (``info["image_shape"]``): cut each image into patches and read the
    patch grid with the layer in several scan orders, merged (:mod:`rnnx.models.vision`,
    ViG/VMamba style; non-causal, replaces ``bidirectional``). None: the recipe's (on
    for tasks that give images, off otherwise)."""
    patch_size: int | None = None
    """Side of the square patches that images and frames are cut into. Image tasks: the
    patches of a patch scan, a divisor of the images' height and width (None: the
    recipe's, the smallest that gives at most 64 patches). Video prediction: frames are
    cut into patch_size x patch_size squares stacked as channels (space-to-depth) before
    the first layer, so the layers run on a grid patch_size times smaller per side
    (:class:`rnnx.models.VideoPredictor`; None: the recipe's, 4). Other tasks take none."""
    scan_orders: str = "row,row_rev,col,col_rev"
    """Scan orders of a patch scan, comma-separated: ``row``, ``col``, ``zigzag``,
    ``zigzag_col``, each also reversed with ``_rev`` (docs/vision.md)."""
    scan_merge: str = "mean"
    """How a patch scan merges its orders: ``"mean"``, or ``"linear"`` (a learned map of
    their concatenation, starting as the mean)."""
    scan_shared: bool = True
    """Patch scan: one layer reads every order (run as one batch), or, with false, one
    layer per order."""

    def patch_scan_config(self, image_shape: tuple[int, int, int]) -> PatchScanConfig:
        """The patch scan of this config over images of ``(channels, height, width)``."""
        if self.patch_size is None:
            raise ValueError(
                "model: patch_size not set; rnnx.train.recipe.apply fills it from the task's "
                "image shape"
            )
        return PatchScanConfig(
            image_shape=image_shape,
            patch_size=self.patch_size,
            orders=parse_orders(self.scan_orders),
            merge=self.scan_merge,
            shared=self.scan_shared,
        )

    def backbone(self, *, d_input: int, vocab_size: int | None) -> BackboneConfig:
        unset = [k for k in ("d_model", "n_layers") if getattr(self, k) is None]
        if unset:
            raise ValueError(
                f"model: {', '.join(unset)} not set; rnnx.train.recipe.apply fills them "
                "from the task's data"
            )
        assert self.d_model is not None and self.n_layers is not None  # checked just above
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
            backend=self.backend,
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
    """Registered task (``rnnx list tasks``), or your own data: ``text:FILE``,
    ``csv:FILE``, ``npz:FILE``, ``ts:PATH``."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the task."""


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
    teacher_forcing: bool | None = None
    """Video prediction: train on the true frames, the whole clip in parallel (true), or
    predict the future frames from the model's own predictions, as it is tested (false;
    backpropagation through the rollout). None: the recipe's."""
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


# ---------------------------------------------------------------------- validation


class ConfigError(ValueError):
    """A bad configuration value, found before anything starts.

    ``section`` and ``key`` name the setting (``[train] epochs``), ``detail`` says what
    was given and what is expected; the CLI adds the flag that sets it.
    """

    def __init__(self, section: str, key: str | None, detail: str) -> None:
        self.section, self.key, self.detail = section, key, detail
        where = f"[{section}] {key}" if key else f"[{section}]"
        super().__init__(f"{where}: {detail}")


@dataclass(frozen=True)
class Range:
    """Numbers in ``[lo, hi]`` (open ends with ``lo_open``/``hi_open``), plus ``also``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple[Any, ...] = ()

    def describe(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        text = " and ".join(parts) or "finite"
        return text + "".join(f" (or {a!r})" for a in self.also)

    def ok(self, v: Any) -> bool:
        if v in self.also:
            return True
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


@dataclass(frozen=True)
class OneOf:
    """One of a few strings."""

    values: tuple[str, ...]

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))

    def ok(self, v: Any) -> bool:
        return v in self.values


#: Allowed values of config fields, checked by :func:`validate` before anything starts;
#: the types come from the dataclass annotations (a field without an entry here is
#: checked for its type only).
LIMITS: dict[tuple[str, str], Range | OneOf] = {
    ("model", "d_model"): Range(1),
    ("model", "n_layers"): Range(1),
    ("model", "d_state"): Range(1),
    ("model", "mlp_ratio"): Range(0),
    ("model", "dropout"): Range(0, 1, hi_open=True),
    ("model", "norm"): OneOf(("layer", "rms")),
    ("model", "pooling"): OneOf(("mean", "last")),
    ("model", "patch_size"): Range(1),
    ("model", "scan_merge"): OneOf(MERGES),
    ("train", "epochs"): Range(1),
    ("train", "max_steps"): Range(1, also=(-1,)),
    ("train", "budget_minutes"): Range(0),
    ("train", "budget_clock"): OneOf(("wall", "cpu")),
    ("train", "batch_size"): Range(1),
    ("train", "eval_batch_size"): Range(0),
    ("train", "lr"): Range(0, lo_open=True),
    ("train", "weight_decay"): Range(0),
    ("train", "warmup"): Range(0, 1),
    ("train", "grad_clip"): Range(0),
    ("train", "select"): OneOf(("best", "last")),
    ("train", "patience"): Range(0),
    ("train", "precision"): OneOf(("auto", "32", "bf16-mixed", "16-mixed", "64")),
    ("train", "accelerator"): OneOf(("auto", "cpu", "cuda", "mps")),
    ("train", "devices"): Range(0),
    ("train", "seed"): Range(0, 2**32 - 1),
    ("train", "checkpoint_every"): Range(0),
    ("train", "val_every"): Range(0),
    ("train", "limit_batches"): Range(0, lo_open=True),
    ("train", "threads"): Range(0),
    ("train", "log_every"): Range(1),
}


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is dict:
        return "a table (dict)"
    if origin is list:
        return "a list"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def _given(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})"


def coerce(tp: Any, value: Any) -> tuple[bool, Any]:
    """``(ok, value)``: ``value`` checked against the annotation ``tp`` (an int is a
    valid float; a bool is never a number)."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            return type(None) in args, value
        for a in args:
            if a is not type(None):
                ok, v = coerce(a, value)
                if ok:
                    return True, v
        return False, value
    if origin is not None:
        return isinstance(value, origin), value
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(tp, type):
        return isinstance(value, tp), value
    return True, value


def _build(cls, values: dict[str, Any], section: str):
    """``cls(**values)`` with every key known and every value of its annotated type."""
    if not isinstance(values, dict):
        raise ConfigError(section, None, f"expected a table of settings, got {_given(values)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    out = {}
    for key, value in values.items():
        if key not in hints or key not in known:
            raise ConfigError(
                section,
                key,
                f"unknown setting{did_you_mean(key, known)} (known [{section}] settings: "
                + ", ".join(known)
                + ")",
            )
        ok, v = coerce(hints[key], value)
        if not ok:
            raise ConfigError(
                section, key, f"expected {_type_name(hints[key])}, got {_given(value)}"
            )
        out[key] = v
    obj = cls(**out)
    for f in fields(cls):
        rule = LIMITS.get((section, f.name))
        v = getattr(obj, f.name)
        if rule is not None and v is not None and not rule.ok(v):
            what = f"{_type_name(hints[f.name])} " if isinstance(rule, Range) else ""
            raise ConfigError(section, f.name, f"expected {what}{rule.describe()}, got {v!r}")
    return obj


def _new_vocabulary(m: ModelConfig, cls: Any) -> None:
    """Map an old mode or backend name of ``m`` to the new one, with one
    DeprecationWarning (docs/contract.md: old names work for one release)."""
    from rnnx._vocab import OLD_BACKENDS, deprecated

    alias = cls.old_mode(m.mode)
    if alias is not None:
        mode, backend = alias
        new = f"mode = {mode!r}" + (f" with backend = {backend!r}" if backend else "")
        deprecated("[model] mode", str(m.mode), new)
        m.mode = mode
        if backend is not None and m.backend in (None, "auto"):
            m.backend = backend
    new_backend = OLD_BACKENDS.get(m.backend) if isinstance(m.backend, str) else None
    if m.backend not in cls.backends and new_backend in cls.backends:
        deprecated("[model] backend", str(m.backend), f"backend = {new_backend!r}")
        m.backend = new_backend


def validate(cfg: RunConfig) -> RunConfig:
    """Check what the field types cannot: the layer and task exist, the layer has the mode
    and takes the keyword arguments, the task takes its keyword arguments. Raises
    :class:`ConfigError` naming the setting; returns ``cfg``."""
    from rnnx import layers
    from rnnx._plugins import accepted_kwargs
    from rnnx.data import task_entry

    m = cfg.model
    try:
        cls = layers.get(m.layer)
    except ValueError as exc:
        raise ConfigError("model", "layer", str(exc).removeprefix("layer: ")) from None
    _new_vocabulary(m, cls)
    if m.mode is not None and m.mode not in cls.modes:
        raise ConfigError(
            "model",
            "mode",
            f"layer {m.layer!r} has no mode {m.mode!r}{did_you_mean(m.mode, cls.modes)} "
            f"(its modes: {', '.join(cls.modes)})",
        )
    kwargs = dict(m.layer_kwargs)
    if m.d_state is not None:
        kwargs["d_state"] = m.d_state
    if m.backend is not None and m.backend not in cls.backends:
        raise ConfigError(
            "model",
            "backend",
            f"layer {m.layer!r} has no backend {m.backend!r}"
            f"{did_you_mean(m.backend, cls.backends)} (its backends: {', '.join(cls.backends)})",
        )
    names, var = accepted_kwargs(cls)
    taken = [n for n in names if n not in ("d_model", "mode", "backend")]
    for k in kwargs if not var else ():
        if k in taken:
            continue
        if k == "d_state" and "d_state" not in m.layer_kwargs:
            raise ConfigError("model", "d_state", f"layer {m.layer!r} has no state size d_state")
        raise ConfigError(
            "model",
            "layer_kwargs",
            f"layer {m.layer!r} takes no argument {k!r}{did_you_mean(k, taken)} "
            f"(it takes: {', '.join(taken) or 'no arguments besides d_model'})",
        )
    try:
        parse_orders(m.scan_orders)
    except ValueError as exc:
        raise ConfigError("model", "scan_orders", str(exc).removeprefix("scan_orders: ")) from None
    if m.patch_scan and m.bidirectional:
        raise ConfigError(
            "model",
            "bidirectional",
            "a patch scan reads its scan orders instead of a backward pass; add reversed "
            "orders to scan_orders (e.g. row,row_rev) and drop bidirectional",
        )
    try:
        entry = task_entry(cfg.task.name)
    except ValueError as exc:
        raise ConfigError("task", "name", str(exc).removeprefix("task: ")) from None
    names, var = accepted_kwargs(entry.fn)
    taken = [n for n in names[1 if entry.parametric else 0 :] if n != "seed"]
    if not var:
        for k in cfg.task.kwargs:
            if k not in taken:
                raise ConfigError(
                    "task",
                    "kwargs",
                    f"task {entry.name!r} takes no argument {k!r}{did_you_mean(k, taken)} "
                    f"(it takes: {', '.join(taken) or 'no arguments'})",
                )
    return cfg


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass (read from its source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    out = {}
    for a, b in itertools.pairwise(body):
        if (
            isinstance(a, ast.AnnAssign)
            and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant)
            and isinstance(b.value.value, str)
        ):
            out[a.target.id] = " ".join(b.value.value.split())
    return out


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
    """The tables of a run's TOML file; one clear error for a missing or malformed file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"--config {path}: is a directory, expected a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"--config {path}: not valid TOML ({exc})") from None
    unknown = set(data) - {"model", "task", "train"}
    if unknown:
        first = sorted(unknown)[0]
        raise ValueError(
            f"--config {path}: unknown table(s) {sorted(unknown)}"
            f"{did_you_mean(first, ['model', 'task', 'train'])} (expected [model], [task], [train])"
        )
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(section, None, f"expected a table, got {_given(values)}")
    return data


def resolve(
    overrides: dict[str, dict[str, Any]], config_file: str | Path | None = None
) -> RunConfig:
    """Defaults < task defaults < TOML file < ``overrides`` (from the command line),
    validated (:func:`validate`); a path task's path is made absolute."""
    from rnnx.data import canonical_task_name, task_entry

    file_values = load_toml(config_file) if config_file else {}
    name = (
        overrides.get("task", {}).get("name")
        or file_values.get("task", {}).get("name")
        or TaskConfig.name
    )
    if not isinstance(name, str):
        raise ConfigError("task", "name", f"expected a string, got {_given(name)}")
    try:
        defaults = task_entry(name).defaults
    except ValueError as exc:
        raise ConfigError("task", "name", str(exc).removeprefix("task: ")) from None
    merged = RunConfig().to_dict()
    merged = _merge(merged, defaults)
    merged = _merge(merged, file_values)
    merged = _merge(merged, overrides)
    cfg = validate(RunConfig.from_dict(merged))
    cfg.task.name = canonical_task_name(cfg.task.name)
    return cfg


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
