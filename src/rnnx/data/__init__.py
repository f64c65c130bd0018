"""Tasks: synthetic generators and real data sets shipped inside packages.

Nothing is downloaded at run time. Find tasks by name: ``rnnx.data.get_task("digits")``,
``rnnx.data.task_names()``. Every module of this package that does not start with an
underscore registers its tasks when imported, so a new task is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil

from rnnx.data.base import (
    MissingDependencyError,
    SequenceDataset,
    TaskData,
    TaskEntry,
    canonical_task_name,
    get_task,
    register_task,
    task_entries,
    task_entry,
    task_names,
)

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_") and _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "MissingDependencyError",
    "SequenceDataset",
    "TaskData",
    "TaskEntry",
    "canonical_task_name",
    "get_task",
    "register_task",
    "task_entries",
    "task_entry",
    "task_names",
]
