"""Shared test helpers: deterministic seeds, comparisons that report where they fail, and
the native kernels' availability (tests that need a kernel skip, visibly, without it)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from rnnx import _native
from rnnx._checks import RnnxWarning

# One torch/OpenMP thread by default: the suite runs thousands of tiny ops, where a second
# thread only adds synchronisation (measured: a 14x slower contract-matrix slice with 2
# threads on a loaded 2-core machine). Multi-threaded kernels are tested explicitly
# (tests/layers/test_threads.py, tests/ops/test_scan.py), which set their thread count.
# RNNX_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("RNNX_TEST_THREADS", "1")))

# Build (or load from the cache) every native kernel once, before any test: a kernel that
# cannot be built warns here, once for the session (RnnxWarning is an error inside tests,
# see pyproject.toml), and the summary at the end repeats it. Without a compiler that is
# one warning for all the kernels; with RNNX_NATIVE=0 none.
with warnings.catch_warnings(record=True) as _record:
    warnings.simplefilter("always", RnnxWarning)
    NATIVE_MISSING: dict[str, str] = _native.preload()
NATIVE_WARNINGS = [str(w.message) for w in _record if issubclass(w.category, RnnxWarning)]


def pytest_report_header(config) -> str:
    if not NATIVE_MISSING:
        return f"rnnx native kernels: all built ({', '.join(_native.LIBRARIES)})"
    reasons = sorted(set(NATIVE_MISSING.values()))
    return (
        f"rnnx native kernels: unavailable ({', '.join(sorted(NATIVE_MISSING))}): "
        f"{' / '.join(r.splitlines()[0] for r in reasons)}; tests that need them are skipped"
    )


def pytest_terminal_summary(terminalreporter) -> None:
    for message in NATIVE_WARNINGS:
        terminalreporter.write_sep("=", "rnnx warning at session start")
        terminalreporter.write_line(f"RnnxWarning: {message}")


def native_available(library: str) -> bool:
    """Whether the native library (``_native.LIBRARIES``) built at session start."""
    return library not in NATIVE_MISSING


def needs_native(*libraries: str) -> pytest.MarkDecorator:
    """Skip marker for a test that runs native kernels (every library if none named)."""
    libs = libraries or _native.LIBRARIES
    missing = [lib for lib in libs if not native_available(lib)]
    reason = "; ".join(f"{lib}: {NATIVE_MISSING[lib].splitlines()[0]}" for lib in missing)
    return pytest.mark.skipif(bool(missing), reason=f"native kernel unavailable ({reason})")


def with_native(names: list[str], library: str) -> list:
    """``names`` for ``parametrize``, the ``"native"`` entry skipped where the kernel is
    unavailable (the other backends still run)."""
    return [pytest.param(n, marks=needs_native(library)) if n == "native" else n for n in names]


def with_native_pairs(pairs: list[tuple[str, str]], library: str) -> list:
    """``(name, backend)`` pairs for ``parametrize`` (ids ``name-backend``), the pairs with
    backend ``"native"`` skipped where the kernel is unavailable."""
    return [
        pytest.param(n, b, id=f"{n}-{b}", marks=needs_native(library) if b == "native" else ())
        for n, b in pairs
    ]


def backends_here(names: list[str], library: str) -> list[str]:
    """``names`` without ``"native"`` where the kernel is unavailable (for loops and
    hypothesis strategies, which cannot skip one entry)."""
    return [n for n in names if n != "native" or native_available(library)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def assert_close(actual, expected, *, rtol: float, atol: float | None = None, what: str = ""):
    """torch.testing.assert_close with a scale-aware atol and a label in the message."""
    if actual is None and expected is None:
        return
    assert actual is not None and expected is not None, f"{what}: one side is None"
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    atol = rtol * max(scale, 1.0) if atol is None else atol
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")
