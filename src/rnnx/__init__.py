"""rnnx: recurrent sequence models on one contract.

Every layer in :mod:`rnnx.layers` runs in parallel for training, step by step for
decoding with constant memory, and as a continuous-time system where the model is
one; the test suite proves that the views agree. See ``docs/`` for the map.

The top-level names load lazily, so that ``import rnnx.cli`` can configure torch's
CPU allocator (see :mod:`rnnx.cli`) before torch itself is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "RnnxWarning": "rnnx._checks",
    "checks": "rnnx._checks",
    "finite_checks_enabled": "rnnx._checks",
    "set_checks": "rnnx._checks",
}

__all__ = ["RnnxWarning", "__version__", "checks", "finite_checks_enabled", "set_checks"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("layers", "ops", "ssm", "models", "data", "train"):
        return importlib.import_module(f"rnnx.{name}")
    raise AttributeError(f"module 'rnnx' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "layers", "ops", "ssm", "models", "data", "train"])
