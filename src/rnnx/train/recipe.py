"""The training recipe: settings derived from the task's data, never from its name.

:func:`apply` fills every setting of a :class:`~rnnx.train.config.RunConfig` left at
``None`` from a few statistics of the training split (:class:`DataStats`: the kind of
task, the number of training sequences, their length, the number of classes, the
number of training tokens). What the task registers as its defaults, a TOML file and
command-line flags all come after the recipe and override it. The returned
``derived`` dict says, for each setting the recipe chose, the value and the rule
that gave it; ``results.json`` keeps it. docs/training.md explains each rule.

The rules, in short:

* **Budget in optimizer steps** (not epochs): every data set gets enough updates,
  however small it is, and the batch grows with the data so a large set is seen
  several times. Plus a **wall-clock limit** (``budget_minutes``), so one command
  has a known cost on any machine; the learning-rate schedule ends at whichever
  budget binds.
* **Model selection** on a validation split (stratified, every class present)
  with **patience**: a small set that overfits keeps its best weights; a large set
  that still improves uses its whole budget.
* **Regularisation that holds across families**: weight decay on matrices only,
  S4-style parameter groups (the SSM's A and step with a small learning rate and
  no decay, set by the layers), dropout that shrinks as the data grow.
* **Non-causal reading** (bidirectional backbone) wherever the task sees the whole
  sequence before answering: sequence classification.
* **Images** (a task whose ``info`` gives ``image_shape``) are read by a patch scan
  (:mod:`rnnx.models.vision`): patches of the smallest size that gives at most 64 of
  them, in the default scan orders (rows and columns, both directions).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

from rnnx.models.video import DEFAULT_PATCH_SIZE
from rnnx.train.config import RunConfig, TrainConfig

#: Default wall-clock limit of a run, in minutes (a run stops cleanly when it is spent).
DEFAULT_MINUTES = 30.0

#: Validations per run the recipe aims at (``val_every``): enough to find the best
#: checkpoint and to stop early, few enough to cost a small part of the run
#: (:func:`val_interval`).
VALIDATIONS_PER_RUN = 40


@dataclass(frozen=True)
class DataStats:
    """What the recipe looks at: statistics of a task's training split."""

    kind: str
    n_train: int
    """Training sequences (windows, for language modelling and forecasting)."""
    length: int
    """Steps per sequence (the padded length); pixels per image for image tasks."""
    n_classes: int
    """Classes (classification, tagging), vocabulary (lm), else 0."""
    d_output: int
    """Outputs per sequence (regression)."""
    tokens: int
    """Training steps in all: ``n_train * length``."""
    target_channel: int | list[int] | None = None
    """Forecasting: the input channel the targets continue, or one per target
    (``info["target_channel"]``)."""
    image_shape: tuple[int, int, int] | None = None
    """Image tasks: ``(channels, height, width)`` of the inputs (``info["image_shape"]``)."""

    @classmethod
    def of(cls, task) -> DataStats:
        n, length = len(task.train), int(task.train.x.shape[1])
        image = image_shape(task.info.get("image_shape"))
        if image is not None:
            length = image[1] * image[2]
        return cls(
            kind=task.kind,
            n_train=n,
            length=length,
            n_classes=int(task.n_classes or 0),
            d_output=int(task.d_output or 0),
            tokens=n * length,
            target_channel=task.info.get("target_channel"),
            image_shape=image,
        )


def image_shape(value) -> tuple[int, int, int] | None:
    """``info["image_shape"]`` as ``(channels, height, width)``, None when absent."""
    if value is None:
        return None
    c, h, w = (int(v) for v in value)
    return c, h, w


#: A patch scan aims at a grid of at most this many patches (the recipe's patch size).
MAX_PATCHES = 64


def patch_size_for(height: int, width: int, max_patches: int = MAX_PATCHES) -> int:
    """The smallest patch side dividing ``height`` and ``width`` that gives at most
    ``max_patches`` patches (the largest common divisor if none does)."""
    common = [p for p in range(1, min(height, width) + 1) if height % p == 0 and width % p == 0]
    for p in common:
        if (height // p) * (width // p) <= max_patches:
            return p
    return common[-1]


def _pow2(x: float) -> int:
    return 2 ** round(math.log2(max(x, 1.0)))


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def recommend(stats: DataStats) -> dict[str, dict[str, tuple[Any, str]]]:
    """The recipe's settings for data with these statistics, each with its reason:
    ``{"model": {key: (value, why)}, "train": {...}}`` (docs/training.md)."""
    n = stats.n_train
    model: dict[str, tuple[Any, str]] = {}
    train: dict[str, tuple[Any, str]] = {}
    sequence_level = stats.kind in ("classification", "regression")

    if stats.kind == "classification":
        model["bidirectional"] = (True, "sequence classification reads the whole sequence")
        model["pooling"] = ("mean", "mean over valid steps: every step votes")
    elif stats.kind == "video_classification":
        model["bidirectional"] = (False, "LRCN: a causal layer over the frames")
        model["pooling"] = ("mean", "LRCN averages its per-frame predictions")
    elif stats.kind == "regression":
        model["bidirectional"] = (False, "regression: causal unless asked")
        model["pooling"] = ("last", "the state after the whole window predicts what follows")
    else:
        model["bidirectional"] = (False, "per-step targets: a causal backbone")
        model["pooling"] = ("mean", "unused by per-step heads")
    if stats.image_shape is not None:
        _, height, width = stats.image_shape
        p = patch_size_for(height, width)
        model["patch_scan"] = (True, "the task gives images: patches read in several scan orders")
        model["patch_size"] = (
            p,
            f"the smallest divisor of {height}x{width} giving at most {MAX_PATCHES} patches "
            f"({(height // p) * (width // p)})",
        )
        model["bidirectional"] = (False, "a patch scan reads reversed orders instead")
    else:
        model["patch_scan"] = (False, "the task gives sequences")
    if stats.kind == "regression" and stats.target_channel is not None:
        model["instance_norm"] = (True, "forecasting: each window normalised by its own level")
        model["linear_skip"] = (True, "forecasting: a linear map of the window, DLinear's")
    else:
        model["instance_norm"] = (False, "not a forecast of an input channel")
        model["linear_skip"] = (False, "not a forecast of an input channel")

    if stats.kind == "lm":
        return _language_model(stats, model, train)
    if stats.kind in ("video_prediction", "video_classification"):
        return _video(stats, model, train)

    # Batch: about a tenth of the training set, a power of two in [8, 64]: a small set
    # still gets several different batches per epoch (the gradient noise regularises),
    # a large one is not read a few items at a time.
    batch = int(_clamp(_pow2(n / 10), 8, 64))
    train["batch_size"] = (batch, f"about n_train/10 = {n / 10:.0f}, a power of 2 in [8, 64]")
    model["d_model"] = (64, "width 64: the budget goes to steps, not width (docs/training.md)")
    model["n_layers"] = (2, "two blocks")
    model["mlp_ratio"] = (0.0, "no per-block MLP (the mixers have their own projections)")
    model["dropout"] = (0.1, "dropout 0.1 on every residual branch")
    train["weight_decay"] = (0.05, "AdamW decay on matrices only (S4's setting)")
    train["lr"] = (1e-2, "AdamW peak rate 0.01 (S4's); an SSM's A and step keep their own")
    # Steps: at least 2000 updates and at least 20 passes over the training set, at
    # most 10000; the wall clock may cut them (budget_minutes).
    epoch_steps = max(1, n // batch)
    steps = int(_clamp(max(2000, 20 * epoch_steps), 2000, 10000))
    train["max_steps"] = (
        steps,
        f"max(2000, 20 epochs of {epoch_steps} steps), at most 10000; the clock may cut it",
    )
    train["budget_minutes"] = (DEFAULT_MINUTES, "a known cost per command on any machine")
    # Patience: half of the run's validations. Small validation splits are noisy, so
    # only a long stall stops a run; a large set that overfits stops early.
    train["patience"] = (
        VALIDATIONS_PER_RUN // 2 if sequence_level else 0,
        "half of the run's validations" if sequence_level else "off",
    )
    return {"model": model, "train": train}


def _language_model(stats: DataStats, model: dict, train: dict) -> dict:
    """Language modelling: the clock decides the steps; the model is about the
    compute-optimal size for what a 30-minute CPU budget reads.

    About 20 tokens per parameter is compute-optimal (Hoffmann et al. 2022, arXiv
    2203.15556); a CPU core reads on the order of 10 M characters in 30 minutes of
    training, so about half a million parameters: width 128, 4 blocks with a per-token
    MLP. A corpus under a million characters gets width 64.
    """
    d_model = 128 if stats.tokens >= 1_000_000 else 64
    model["d_model"] = (d_model, f"{stats.tokens:,} training tokens; ~20 tokens per parameter")
    model["n_layers"] = (4, "four blocks")
    model["mlp_ratio"] = (2.0, "a per-token MLP: most of a character model's capacity")
    model["dropout"] = (0.0, "no dropout: a CPU budget reads the corpus about twice at most")
    train["batch_size"] = (32, "32 windows per step")
    train["weight_decay"] = (0.05, "AdamW decay on matrices only")
    train["lr"] = (3e-3, "AdamW peak rate 0.003")
    train["max_steps"] = (20000, "the clock decides (budget_minutes)")
    train["budget_minutes"] = (DEFAULT_MINUTES, "a known cost per command on any machine")
    train["patience"] = (0, "off: a language model's validation loss keeps falling")
    return {"model": model, "train": train}


def _video(stats: DataStats, model: dict, train: dict) -> dict:
    """Video tasks: a CPU-sized model whose cost is dominated by convolutions over every
    frame, so the clock decides the steps.

    Prediction: the frames go through space-to-depth with patch 4 (64x64x1 -> 16x16x16,
    no information lost) and two spatial blocks of 32 channels; at one CPU thread a
    step of 16 clips of 20 frames takes about 1-2 s (ConvS5 to ConvLSTM), so a few
    hundred steps fit the default budget. Classification: LRCN's small CNN per frame
    and two blocks of width 64 over time.
    """
    if stats.kind == "video_prediction":
        p = DEFAULT_PATCH_SIZE
        model["patch_size"] = (
            p,
            f"space-to-depth {p}x{p}: the layers run on a {p * p}x smaller grid",
        )
        model["d_model"] = (
            32,
            "32 channels per pixel of the patch grid: convolutions over "
            "every frame dominate the cost",
        )
        train["batch_size"] = (16, "16 clips per step")
        train["lr"] = (3e-3, "AdamW peak rate 0.003 (a few hundred steps on a CPU budget)")
        train["weight_decay"] = (0.01, "light AdamW decay on matrices and kernels")
        train["patience"] = (0, "off: the rollout error keeps falling within a CPU budget")
        train["teacher_forcing"] = (
            True,
            "the true frames, the whole clip in parallel (each layer's training mode)",
        )
    else:
        model["d_model"] = (64, "a 64-d frame feature from the CNN, and width 64 over time")
        train["batch_size"] = (
            int(_clamp(_pow2(stats.n_train / 10), 8, 32)),
            f"about n_train/10 = {stats.n_train / 10:.0f}, a power of 2 in [8, 32]",
        )
        train["lr"] = (3e-3, "AdamW peak rate 0.003")
        train["weight_decay"] = (0.05, "AdamW decay on matrices only")
        train["patience"] = (VALIDATIONS_PER_RUN // 2, "half of the run's validations")
    model["n_layers"] = (2, "two blocks")
    model["mlp_ratio"] = (0.0, "no per-block MLP")
    model["dropout"] = (0.0, "no dropout: a CPU budget sees the clips a few times at most")
    epoch_steps = max(1, stats.n_train // train["batch_size"][0])
    train["max_steps"] = (
        int(_clamp(max(2000, 20 * epoch_steps), 2000, 10000)),
        f"max(2000, 20 epochs of {epoch_steps} steps), at most 10000; the clock may cut it",
    )
    train["budget_minutes"] = (DEFAULT_MINUTES, "a known cost per command on any machine")
    return {"model": model, "train": train}


def apply(cfg: RunConfig, task) -> tuple[RunConfig, dict[str, dict[str, Any]]]:
    """``(complete config, derived)``: ``cfg`` with every ``None`` setting filled by
    :func:`recommend` for ``task``'s data; ``derived[section][key] = {"value", "why"}``
    for the settings the recipe chose (the others were set by the user or the task)."""
    out = copy.deepcopy(cfg)
    stats = DataStats.of(task)
    rec = recommend(stats)
    derived: dict[str, dict[str, Any]] = {"data": asdict(stats)}
    for section in ("model", "train"):
        target = getattr(out, section)
        for key, (value, why) in rec[section].items():
            if key == "max_steps":
                if target.max_steps > 0 or target.epochs is not None:
                    continue
            elif getattr(target, key) is not None:
                continue
            setattr(target, key, value)
            derived.setdefault(section, {})[key] = {"value": value, "why": why}
    if out.train.select == "last" and "patience" in derived.get("train", {}):
        out.train.patience = 0  # stopping early without selecting would keep a worse model
        derived["train"]["patience"] = {"value": 0, "why": "--select last: no early stopping"}
    return out, derived


def total_steps(t: TrainConfig, per_epoch: int) -> int:
    """The run's step budget: ``max_steps``, or ``epochs`` passes of ``per_epoch``
    batches, the smaller if both are set."""
    options = []
    if t.max_steps > 0:
        options.append(t.max_steps)
    if t.epochs is not None:
        if t.epochs < 1:
            raise ValueError(f"epochs: expected >= 1, got {t.epochs}")
        options.append(t.epochs * per_epoch)
    if not options:
        raise ValueError("max_steps: no step budget (set max_steps or epochs)")
    return min(options)


def val_interval(steps: int, batch_size: int = 1, n_val: int = 0) -> int:
    """Validate every this many steps: :data:`VALIDATIONS_PER_RUN` per run, fewer (down
    to 10) where the validation split is large, so that validating costs at most about
    a tenth of training (a validation item costs about a third of a training item:
    forward only)."""
    validations = VALIDATIONS_PER_RUN
    if n_val > 0:
        affordable = int(0.3 * steps * batch_size / n_val)
        validations = max(10, min(validations, affordable))
    return max(1, round(steps / validations))
