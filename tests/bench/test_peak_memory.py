"""peak_memory measures the call in a fresh process, whatever the parent did before."""

from __future__ import annotations

import torch

from rnnx.bench._common import peak_memory


def allocate_mib(mib: int):
    """A ``peak_memory`` target: a callable that touches ``mib`` MiB."""

    def fn():
        torch.ones(mib * 2**18).add_(1)  # float32: 4 bytes per element

    return fn


def test_peak_memory_after_a_large_parent():
    big = torch.ones(100 * 2**18).add_(1)  # the parent's peak: 100+ MiB
    measured = peak_memory("tests.bench.test_peak_memory:allocate_mib", mib=40)
    del big
    assert 35 * 2**20 < measured < 120 * 2**20, measured
