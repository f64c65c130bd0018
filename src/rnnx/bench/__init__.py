"""Benchmarks: speed and memory of rnnx against the baselines a user would otherwise pick.

Each module here that does not start with an underscore is one benchmark, run with
``rnnx bench <name>`` (``rnnx bench all`` runs them all). A benchmark module defines

* ``DESCRIPTION``: one line for ``rnnx bench --help``;
* ``add_arguments(parser)``: its options (every benchmark gets ``--quick``, ``--out``,
  ``--repeat`` and ``--threads`` from the CLI);
* ``run(args) -> dict``: measures, prints a table of times and *ratios against a
  baseline measured in the same run* (these machines are shared and noisy: absolute
  times drift, ratios measured side by side hold), and returns the JSON payload.

The code lives in the package, not in a top-level ``benchmarks/`` folder, so that
``rnnx bench`` works from an installed rnnx; results are written to
``<results dir>/<name>.json``: ``--results-dir DIR``, else ``$RNNX_BENCH_DIR``, else
``~/.cache/rnnx/bench`` (never the source tree; ``--out FILE`` for one benchmark). The
repository's own measurements are in ``benchmarks/results/`` and the headline figures go
to ``docs/benchmarks.md`` with the command that produced them.

Peers (torch.nn, flash-linear-attention, mamba-ssm, ...) are imported with
:func:`rnnx.bench._common.import_peer`; a peer that cannot be imported is skipped and the
output says so.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def names() -> list[str]:
    """The benchmark names (module names of this package)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def load(name: str) -> ModuleType:
    if name not in names():
        raise ValueError(f"benchmark: expected one of {names()}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")
