"""Native CPU kernels, compiled on first use and cached; bound as PyTorch operators.

The kernels are plain C++ (no torch headers) compiled with the system C++ compiler into
shared libraries and called through :mod:`ctypes` with tensor data pointers. Compared with
``torch.utils.cpp_extension`` this builds in about a second instead of a minute and does
not depend on torch's C++ ABI, so a torch upgrade never breaks the cache. Nothing is
compiled at import or install time.

Every kernel is exposed to PyTorch as an operator ``torch.ops.rnnx.<name>`` (a
``torch.library`` definition with a CPU implementation, a fake implementation for
tracing and, for the differentiable ones, an autograd formula): the one table of them
is :mod:`rnnx._native.ops`. So ``torch.compile`` and ``torch.export`` see the kernels,
the profiler names them, and a wrong argument list raises a clear error in Python
before any pointer reaches C.

This module is the loader. If the compiler is missing or a build fails, :func:`load`
returns ``None`` and the callers run their PyTorch paths; one :class:`rnnx.RnnxWarning`
per distinct reason says why (no compiler: one warning for all the kernels).
``RNNX_NATIVE=0`` disables native kernels without a warning. ``RNNX_CACHE_DIR`` moves
the cache (default ``~/.cache/rnnx``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from rnnx._checks import RnnxWarning

_SRC_DIR = Path(__file__).resolve().parent
_FLAGS = [
    "-O3",
    "-std=c++17",
    "-shared",
    "-fPIC",
    "-fopenmp",
    "-march=native",
    "-ffp-contract=fast",
    "-fno-math-errno",
    "-Wall",
]
#: The shared libraries, one per source file ``<name>.cpp``.
LIBRARIES: tuple[str, ...] = ("chunk", "pararnn", "rnn", "scan", "selective_scan")

_lock = threading.RLock()
_cache: dict[str, ctypes.CDLL | None] = {}
_errors: dict[str, str] = {}
_warned: set[str] = set()  # reasons already reported (one warning per distinct reason)


class NoCompilerError(RuntimeError):
    """No C++ compiler was found: no native kernel can be built here."""


def enabled() -> bool:
    """False when ``RNNX_NATIVE=0`` asks for the PyTorch paths only."""
    return os.environ.get("RNNX_NATIVE", "1") not in ("0", "false", "False", "")


def cache_dir() -> Path:
    root = os.environ.get("RNNX_CACHE_DIR")
    if root:
        return Path(root) / "native"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "rnnx" / "native"


def _compiler() -> str | None:
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand):
            return cand
    return None


def _cpu_signature() -> str:
    """The CPU's feature flags: the cache key must change with -march=native's target."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    import platform

    return platform.processor() + platform.machine()


def _headers() -> str:
    """The text of the shared headers (``_native/*.h``): a change in one rebuilds all."""
    return "\0".join(p.name + "\0" + p.read_text() for p in sorted(_SRC_DIR.glob("*.h")))


def _build(name: str) -> Path:
    src = _SRC_DIR / f"{name}.cpp"
    if not src.exists():
        raise FileNotFoundError(f"no native source {src}")
    cxx = _compiler()
    if cxx is None:
        raise NoCompilerError("no C++ compiler found (looked for $CXX, c++, g++, clang++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        "\0".join(
            [src.read_text(), _headers(), " ".join(_FLAGS), version, _cpu_signature()]
        ).encode()
    ).hexdigest()[:16]
    out_dir = cache_dir()
    target = out_dir / f"lib{name}-{key}.so"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    # Build into a private temporary file, then rename: concurrent processes (DDP,
    # pytest-xdist) never see a half-written library.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        proc = subprocess.run(
            [cxx, *_FLAGS, f"-I{_SRC_DIR}", str(src), "-o", tmp],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"{cxx} failed with exit code {proc.returncode}:\n{tail}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _configure(name: str, lib: ctypes.CDLL) -> None:
    """Set the argument and result types of every function of ``lib`` from the table.

    Untyped, ctypes would pass 64-bit pointers and sizes as C ints and a kernel would
    crash; the types live on the library object, so a reload is configured again.
    """
    from rnnx._native.ops import SIGNATURES

    for symbol, (argtypes, restype) in SIGNATURES[name].items():
        fn = getattr(lib, symbol)
        fn.argtypes = argtypes
        fn.restype = restype


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library ``lib<name>`` (built on first call, configured), or None.

    On failure one warning names the reason (a reason shared by several libraries, such
    as a missing compiler, is reported once); later calls return None quietly.
    """
    if not enabled():
        return None
    if name in _cache:
        return _cache[name]
    with _lock:
        if name in _cache:
            return _cache[name]
        lib: ctypes.CDLL | None
        try:
            lib = ctypes.CDLL(str(_build(name)))
            _configure(name, lib)
        except Exception as exc:  # any failure means: use the PyTorch path
            lib = None
            _errors[name] = str(exc)
            if isinstance(exc, NoCompilerError):
                what, key = "the native CPU kernels", str(exc)
            else:
                what, key = f"the native CPU kernel '{name}'", f"{name}: {exc}"
            if key not in _warned:
                _warned.add(key)
                warnings.warn(
                    f"rnnx: {what} could not be built or loaded, so the PyTorch path runs "
                    f"instead (slower, same results). Reason: {exc}",
                    RnnxWarning,
                    stacklevel=3,
                )
        _cache[name] = lib
        return lib


def available(name: str) -> bool:
    """Whether the native library ``name`` is enabled, built and loadable (builds it).

    Under ``torch.compile`` this is evaluated once while tracing and folded into the
    graph as a constant (:func:`torch.compiler.assume_constant_result`), so dispatching
    on it never breaks the graph. Depends on nothing but the environment and the
    compiler, never on tensors.
    """
    return load(name) is not None


def error(name: str) -> str | None:
    """Why ``load(name)`` returned None, if it failed."""
    return _errors.get(name)


def unavailable_reason(name: str) -> str:
    """A short reason for an error message: the build error or ``RNNX_NATIVE=0``."""
    if not enabled():
        return "disabled by RNNX_NATIVE=0"
    return error(name) or "not built"


def reset() -> None:
    """Forget loaded libraries, errors and reported warnings (tests use this to exercise
    the fallback; :func:`preserved` restores the previous state afterwards)."""
    with _lock:
        _cache.clear()
        _errors.clear()
        _warned.clear()


@contextlib.contextmanager
def preserved() -> Iterator[None]:
    """Restore the loader's state (libraries, errors, reported warnings) on exit.

    For tests that :func:`reset` the loader to provoke a failure: afterwards the process
    is as before, so a warning already reported is not reported again in a later test.
    """
    with _lock:
        saved = (dict(_cache), dict(_errors), set(_warned))
    try:
        yield
    finally:
        with _lock:
            _cache.clear()
            _cache.update(saved[0])
            _errors.clear()
            _errors.update(saved[1])
            _warned.clear()
            _warned.update(saved[2])


def preload() -> dict[str, str]:
    """Build and load every library now (about a second each the first time); return
    ``{name: reason}`` for those that are unavailable. Warnings are issued as by
    :func:`load`. For programs that want the one-time build up front, e.g. a test
    session or a server before its first request."""
    for name in LIBRARIES:
        load(name)
    return {name: unavailable_reason(name) for name in LIBRARIES if _cache.get(name) is None}


# Folded by Dynamo (see available()): the marker torch.compiler.assume_constant_result
# sets. Set directly, because that function imports torch._dynamo (two seconds at
# `import rnnx.layers`); tests/test_native.py checks that the marker is still the one.
available._dynamo_marked_constant = True  # type: ignore[attr-defined]
