"""The task registry and the common form of a task's data."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset


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


@dataclass
class TaskData:
    """The splits of a task and what a model needs to know about it."""

    name: str
    kind: str  # "classification" (one label per sequence)
    train: SequenceDataset
    val: SequenceDataset
    test: SequenceDataset
    d_input: int
    n_classes: int
    info: dict[str, Any] = field(default_factory=dict)
    """Provenance: source package and version, split policy, normalisation, references."""


_TASKS: dict[str, Callable[..., TaskData]] = {}


def register_task(name: str):
    """Decorator: register a function ``(seed: int = 0, **kw) -> TaskData`` under ``name``."""

    def deco(fn: Callable[..., TaskData]) -> Callable[..., TaskData]:
        if name in _TASKS and _TASKS[name] is not fn:
            raise ValueError(f"register_task: the name {name!r} is taken")
        _TASKS[name] = fn
        return fn

    return deco


def get_task(name: str, **kwargs: Any) -> TaskData:
    """Build the task ``name`` (e.g. ``"digits"``)."""
    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"task: no task named {name!r}{hint} Known tasks: {', '.join(task_names())}"
        )
    return _TASKS[name](**kwargs)


def task_names() -> list[str]:
    return sorted(_TASKS)


def stratified_split(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(rest, held_out)`` with ``fraction`` of every class held out."""
    g = torch.Generator().manual_seed(seed)
    held, rest = [], []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(fraction * len(idx))
        held.append(idx[:k])
        rest.append(idx[k:])
    return torch.cat(rest).sort().values, torch.cat(held).sort().values
