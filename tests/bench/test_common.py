"""rnnx.bench._common: peak memory measured in a fresh process."""

from __future__ import annotations

import sys

import pytest
import torch

from rnnx.bench._common import peak_memory


def allocate(mib: int):
    """A peak-memory target: touches ``mib`` MiB when called."""

    def fn() -> None:
        torch.ones(mib * 2**18, dtype=torch.float32)  # 4 bytes each, every page touched

    return fn


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS semantics of Linux")
def test_peak_memory_ignores_the_parents_larger_peak():
    """The child of fork+exec inherits the parent's ru_maxrss; the measurement must not."""
    big = torch.ones(160 * 2**18)  # raise this process's peak by 160 MiB
    del big
    measured = peak_memory("tests.bench.test_common:allocate", mib=48) / 2**20
    assert 40 <= measured <= 80, f"measured {measured:.1f} MiB for a 48 MiB allocation"
