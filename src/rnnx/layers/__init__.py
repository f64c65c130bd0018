"""Every rnnx layer, on one contract (:class:`~rnnx.layers.base.RecurrentLayer`).

Find layers by name: ``rnnx.layers.get("s4d")``, ``rnnx.layers.names()``; or by
class: ``rnnx.layers.S4D``. Each module of this package that does not start with an
underscore is imported here and registers its layers, so a new layer is one new
file: no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from rnnx.layers.base import RecurrentLayer, create, get, names, register, registry

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_") and _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

globals().update({cls.__name__: cls for cls in registry().values()})

from rnnx.layers._spatial import SpatialLayer  # noqa: E402  (layers over frames)
from rnnx.layers.cell import CellLayer  # noqa: E402  (the user-cell base class)
from rnnx.layers.lssl import Sharing  # noqa: E402

__all__ = [
    "CellLayer",
    "RecurrentLayer",
    "Sharing",
    "SpatialLayer",
    "create",
    "get",
    "names",
    "register",
    "registry",
    *sorted(cls.__name__ for cls in registry().values()),
]
