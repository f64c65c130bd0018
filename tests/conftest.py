"""Shared test helpers: deterministic seeds and comparisons that report where they fail."""

from __future__ import annotations

import os

import pytest
import torch

# Keep runs reproducible and the 2-core CI machine from oversubscribing.
torch.set_num_threads(min(2, os.cpu_count() or 1))


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
