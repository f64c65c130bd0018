"""Native CPU kernels, compiled on first use and cached.

The kernels are plain C++ (no torch headers) compiled with the system C++
compiler into a shared library and called through :mod:`ctypes` with tensor data
pointers. Compared with ``torch.utils.cpp_extension`` this builds in about a
second instead of a minute and does not depend on torch's C++ ABI, so a torch
upgrade never breaks the cache. Nothing is compiled at import or install time.

If the compiler is missing or the build fails, :func:`load` returns ``None``,
one :class:`rnnx.RnnxWarning` says why, and callers fall back to their PyTorch
reference path. ``RNNX_NATIVE=0`` disables native kernels without a warning.
``RNNX_CACHE_DIR`` moves the cache (default ``~/.cache/rnnx``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
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
_lock = threading.Lock()
_cache: dict[str, ctypes.CDLL | None] = {}
_errors: dict[str, str] = {}


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


def _build(name: str) -> Path:
    src = _SRC_DIR / f"{name}.cpp"
    if not src.exists():
        raise FileNotFoundError(f"no native source {src}")
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (looked for $CXX, c++, g++, clang++)")
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(
        "\0".join([src.read_text(), " ".join(_FLAGS), version, _cpu_signature()]).encode()
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
            [cxx, *_FLAGS, str(src), "-o", tmp], capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"{cxx} failed with exit code {proc.returncode}:\n{tail}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load(name: str) -> ctypes.CDLL | None:
    """The compiled library ``lib<name>`` (built on first call), or None.

    On failure a single warning names the reason; later calls return None quietly.
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
        except Exception as exc:  # any failure means: use the reference path
            lib = None
            _errors[name] = str(exc)
            warnings.warn(
                f"rnnx: the native CPU kernel '{name}' could not be built or loaded, so the "
                f"PyTorch path runs instead (slower, same results). Reason: {exc}",
                RnnxWarning,
                stacklevel=3,
            )
        _cache[name] = lib
        return lib


def error(name: str) -> str | None:
    """Why ``load(name)`` returned None, if it failed."""
    return _errors.get(name)


def reset() -> None:
    """Forget loaded libraries and errors (tests use this to exercise the fallback)."""
    with _lock:
        _cache.clear()
        _errors.clear()
