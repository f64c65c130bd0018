"""Shared test helpers: deterministic seeds and comparisons that report where they fail."""

from __future__ import annotations

import os

import pytest
import torch

# One torch/OpenMP thread by default: the suite runs thousands of tiny ops, where a second
# thread only adds synchronisation (measured: a 14x slower contract-matrix slice with 2
# threads on a loaded 2-core machine). Multi-threaded kernels are tested explicitly
# (tests/layers/test_threads.py, tests/ops/test_scan.py), which set their thread count.
# RNNX_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("RNNX_TEST_THREADS", "1")))


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
