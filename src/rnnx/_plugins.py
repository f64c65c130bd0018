"""A user's own tasks and layers, without editing rnnx: entry points and ``--import``.

Two ways in:

* **Entry points** of an installed distribution, in the groups ``rnnx.tasks`` and
  ``rnnx.layers`` (``pyproject.toml``)::

      [project.entry-points."rnnx.tasks"]
      sensors = "my_pkg.tasks:sensors"        # a task function (seed=0, **kw) -> TaskData
      [project.entry-points."rnnx.layers"]
      myrnn = "my_pkg.layers:MyRNN"           # a RecurrentLayer subclass

  The entry point's name is the registered name. The object may also be a module whose
  import registers its tasks/layers with ``@register_task``/``@register`` (the name is
  then only a label). Entry points load lazily, the first time a registry is listed or
  a name is not found among the built-in ones, so a broken plugin costs nothing until
  then, and then one warning naming it (its names stay unknown, and the "no such
  name" error says why).
* **``--import MODULE``** on the command line (a module name, importable from the
  current directory, or a path to a ``.py`` file): the module is imported before
  anything else and registers what it defines. A run records the modules it imported
  in its ``config.json``, and ``rnnx eval``/``generate``/``train --resume`` import them
  again.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

#: Registry -> entry-point group.
GROUPS = {"tasks": "rnnx.tasks", "layers": "rnnx.layers"}

_loaded: set[str] = set()
#: ``"group:name"`` -> why that entry point did not load (shown by "no such name" errors).
FAILED: dict[str, str] = {}
#: The ``--import`` modules of this process, as given (file paths made absolute).
IMPORTED: list[str] = []


def load_entry_points(registry: str) -> None:
    """Load the entry points of ``registry`` (``"tasks"`` or ``"layers"``), once."""
    if registry in _loaded:
        return
    _loaded.add(registry)
    group = GROUPS[registry]
    for ep in importlib.metadata.entry_points(group=group):
        try:
            obj = ep.load()
            _register(registry, ep.name, obj)
        except Exception as exc:  # a broken plugin must not break rnnx
            why = f"{type(exc).__name__}: {exc}".splitlines()[0]
            FAILED[f"{group}:{ep.name}"] = why
            from rnnx._checks import RnnxWarning

            warnings.warn(
                f"rnnx plugin {ep.name!r} ({group} = {ep.value}) did not load: {why}",
                RnnxWarning,
                stacklevel=2,
            )


def failures(registry: str) -> str:
    """`` (plugins that did not load: ...)`` for error messages, or ``""``."""
    prefix = GROUPS[registry] + ":"
    bad = [f"{k[len(prefix) :]}: {v}" for k, v in FAILED.items() if k.startswith(prefix)]
    return f" (plugins that did not load: {'; '.join(bad)})" if bad else ""


def _register(registry: str, name: str, obj: Any) -> None:
    if isinstance(obj, ModuleType):
        return  # importing it registered what it defines
    if registry == "layers":
        from rnnx.layers.base import RecurrentLayer, register
        from rnnx.layers.base import registry as layers

        if not (isinstance(obj, type) and issubclass(obj, RecurrentLayer)):
            raise TypeError(f"expected a RecurrentLayer subclass or a module, got {obj!r}")
        if obj not in layers().values():
            register(name)(obj)
        return
    from rnnx.data.base import _TASKS, register_task

    if not callable(obj):
        raise TypeError(f"expected a task function or a module, got {obj!r}")
    if all(e.fn is not obj for e in _TASKS.values()):
        register_task(name)(obj)


def import_module(spec: str) -> ModuleType:
    """Import ``--import`` ``spec``: a module name (the current directory is searched
    first, as ``python -m`` does) or a path to a ``.py`` file."""
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ValueError(f"--import {spec}: no such file")
            path = path.resolve()
            name = path.stem
            if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
                module = sys.modules[name]
            else:
                loader_spec = importlib.util.spec_from_file_location(name, path)
                assert loader_spec is not None and loader_spec.loader is not None
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[name] = module
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
            recorded = str(path)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            try:
                module = importlib.import_module(spec)
            except ModuleNotFoundError as exc:
                if exc.name != spec and not spec.startswith(f"{exc.name}."):
                    raise  # the module exists; something it imports does not
                raise ValueError(
                    f"--import {spec}: no module named {spec!r} (looked in the current "
                    "directory and on sys.path; a file needs its path, e.g. ./my_tasks.py)"
                ) from None
            recorded = spec
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(
            f"--import {spec}: importing it failed: {type(exc).__name__}: {exc}"
        ) from exc
    if recorded not in IMPORTED:
        IMPORTED.append(recorded)
    return module


def accepted_kwargs(fn: Any) -> tuple[list[str], bool]:
    """Keyword parameters of ``fn`` (a function or a class) and whether it takes ``**kw``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return [], True
    names, var = [], False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.append(p.name)
    return names, var
