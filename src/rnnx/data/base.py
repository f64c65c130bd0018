"""The task registry and the common form of a task's data."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

from rnnx._names import did_you_mean


class MissingDependencyError(ImportError):
    """An optional package a task needs is not installed; the message says what to install."""


def require_package(module: str, *, task: str, install: str) -> Any:
    """Import ``module`` or raise one clear error naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"task {task!r} needs the package {module!r}, which is not installed. "
            f"Install it with: {install}"
        ) from exc


class SequenceDataset(Dataset):
    """Sequences ``x`` (N, L, D) (padded), targets ``y`` and optional ``lengths`` (N,)."""

    def __init__(self, x: Tensor, y: Tensor, lengths: Tensor | None = None) -> None:
        if len(x) != len(y):
            raise ValueError(f"x, y: expected the same number of items, got {len(x)} and {len(y)}")
        if lengths is not None and len(lengths) != len(x):
            raise ValueError(f"lengths: expected {len(x)} entries, got {len(lengths)}")
        self.x, self.y, self.lengths = x, y, lengths

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.lengths is None:
            return self.x[i], self.y[i]
        return self.x[i], self.y[i], self.lengths[i]


class Split(Protocol):
    """What a split of :class:`TaskData` offers: a :class:`SequenceDataset`, or a
    dataset with the same attributes (the forecasting windows of
    :class:`rnnx.data.vic_elec.WindowDataset`)."""

    @property
    def x(self) -> Tensor: ...
    @property
    def y(self) -> Tensor: ...
    @property
    def lengths(self) -> Tensor | None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Any: ...


#: What a task asks of a model, and which head and loss serve it.
KINDS = {
    "classification": "one label per sequence (cross-entropy; accuracy)",
    "tagging": "one label per step, -100 where unsupervised (cross-entropy; accuracy)",
    "lm": "next-token prediction over a vocabulary (cross-entropy; bits per token)",
    "regression": "real-valued targets per sequence (MSE; MAE)",
    "video_prediction": "the next frames of a video (MSE; MAE, SSIM, PSNR, copy-last-frame)",
    "video_classification": "one label per video (cross-entropy; accuracy)",
}


@dataclass
class TaskData:
    """The splits of a task and what a model needs to know about it.

    Inputs ``x`` are float ``(N, L, d_input)`` or, for token tasks
    (``vocab_size`` set), int64 ``(N, L)``; video tasks have frames ``(N, T, d_input,
    H, W)`` (``d_input`` channels). Targets ``y``: ``(N,)`` class ids (classification,
    video_classification), ``(N, L)`` class ids with -100 at unsupervised steps
    (tagging, lm), float ``(N, d_output)`` (regression), or the next frames ``(N, T',
    d_input, H, W)`` (video_prediction).
    """

    name: str
    kind: str
    train: Split
    val: Split
    test: Split
    d_input: int = 1
    n_classes: int = 0
    """Classes per sequence (classification) or per step (tagging, lm)."""
    vocab_size: int | None = None
    """Input tokens are ids in [0, vocab_size) (token tasks); None for real inputs."""
    d_output: int = 0
    """Targets per sequence (regression)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Provenance: source package and version, split policy, normalisation, references."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {sorted(KINDS)}, got {self.kind!r}")

    def summary(self) -> str:
        shape = tuple(self.train.x.shape[1:])
        return (
            f"{self.name} ({self.kind}; {len(self.train)} train / {len(self.val)} val / "
            f"{len(self.test)} test; x {shape})"
        )


@dataclass(frozen=True)
class TaskEntry:
    """A registered task builder and what ``rnnx list tasks`` shows about it."""

    name: str
    fn: Callable[..., TaskData]
    description: str
    sources: tuple[str, ...] = ()
    """Keys of :data:`rnnx.data._sources.SOURCES` it needs (empty: always available)."""
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Recommended ``{"model": {...}, "train": {...}}`` settings for ``rnnx train``."""
    parametric: bool = False
    """Takes a data set name after a colon: ``ucr:FordA``."""
    takes_path: bool = False
    """The part after the colon is a file or folder (``text:notes.txt``); a run's config
    records it as an absolute path, so ``rnnx eval`` finds it from any directory."""


_TASKS: dict[str, TaskEntry] = {}


def register_task(
    name: str,
    *,
    description: str = "",
    sources: tuple[str, ...] = (),
    defaults: dict[str, dict[str, Any]] | None = None,
    parametric: bool = False,
    takes_path: bool = False,
):
    """Decorator: register a function ``(seed: int = 0, **kw) -> TaskData`` under ``name``.

    A ``parametric`` task is called as ``name:<dataset>`` and receives the data set
    name as its first positional argument (``get_task("ucr:FordA")``); with
    ``takes_path`` that argument is a path (the user's own data: ``text:notes.txt``).
    """

    def deco(fn: Callable[..., TaskData]) -> Callable[..., TaskData]:
        if name in _TASKS and _TASKS[name].fn is not fn:
            raise ValueError(f"register_task: the name {name!r} is taken")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        _TASKS[name] = TaskEntry(
            name, fn, doc, tuple(sources), defaults or {}, parametric or takes_path, takes_path
        )
        return fn

    return deco


def task_entry(name: str) -> TaskEntry:
    """The registry entry of ``name`` (``"ucr:FordA"`` finds ``"ucr"``); a name not
    among the built-in tasks is looked up in the ``rnnx.tasks`` entry points."""
    from rnnx import _plugins

    if not isinstance(name, str) or not name:
        raise ValueError(f"task: expected a task name (rnnx list tasks), got {name!r}")
    base = name.split(":", 1)[0]
    if base not in _TASKS:
        _plugins.load_entry_points("tasks")
    entry = _TASKS.get(base)
    if entry is not None and entry.parametric and ":" not in name:
        raise ValueError(f"task: {base!r} needs a data set name or path, e.g. {base}:<Name>")
    if entry is None or (entry.parametric != (":" in name)):
        hint = did_you_mean(base, list(_TASKS))
        raise ValueError(
            f"task: no task named {name!r}{hint} (known tasks: {', '.join(task_names())})"
            + _plugins.failures("tasks")
        )
    return entry


def canonical_task_name(name: str) -> str:
    """``name`` with the path of a path task made absolute (``text:/home/me/notes.txt``)."""
    entry = task_entry(name)
    if not entry.takes_path:
        return name
    from pathlib import Path

    base, rest = name.split(":", 1)
    return f"{base}:{Path(rest).expanduser().absolute()}"


def get_task(name: str, **kwargs: Any) -> TaskData:
    """Build the task ``name`` (e.g. ``"digits"``, ``"mqar"``, ``"ucr:FordA"``)."""
    entry = task_entry(name)
    if entry.parametric:
        return entry.fn(name.split(":", 1)[1], **kwargs)
    return entry.fn(**kwargs)


def task_names() -> list[str]:
    """Registered task names (parametric ones as ``name:<Name>``), plugins included."""
    from rnnx import _plugins

    _plugins.load_entry_points("tasks")
    return sorted(_display_name(e) for e in _TASKS.values())


def _display_name(e: TaskEntry) -> str:
    return e.name + (":PATH" if e.takes_path else ":<Name>" if e.parametric else "")


def task_entries() -> list[TaskEntry]:
    from rnnx import _plugins

    _plugins.load_entry_points("tasks")
    return [_TASKS[n] for n in sorted(_TASKS)]


def stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(rest, held_out)`` with ``fraction`` of every class held out.

    Each class contributes ``round(fraction * n_c)`` items, but at least one whenever
    it has two or more (and ``fraction > 0``), so that the held-out split has every
    class the data allow and no class leaves the rest empty: a validation split
    used for model selection must see every class (a class absent from it is never
    scored). Classes with a single item stay in ``rest``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction: expected a value in [0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    held, rest = [], []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(fraction * len(idx))
        if fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        held.append(idx[:k])
        rest.append(idx[k:])
    return torch.cat(rest).sort().values, torch.cat(held).sort().values
