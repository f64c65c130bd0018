"""rnnx.ops._pack: the one dtype rule and the packed <-> padded round trip."""

from __future__ import annotations

import pytest
import torch

from rnnx.ops._pack import compute_dtype, packed_to_padded, padded_to_packed


@pytest.mark.parametrize(
    ("dtypes", "want"),
    [
        ((torch.float16, torch.bfloat16), torch.float32),
        ((torch.float32, None), torch.float32),
        ((torch.bfloat16, torch.float64), torch.float64),
        ((torch.int64, torch.float32), torch.float32),
    ],
)
def test_compute_dtype(dtypes, want):
    tensors = [None if d is None else torch.zeros(1, dtype=d) for d in dtypes]
    assert compute_dtype(*tensors) == want


@pytest.mark.parametrize("cu", [[0, 3, 3, 7], torch.tensor([0, 3, 3, 7])])
def test_round_trip_and_fill(cu):
    x = torch.arange(7.0).view(1, 7, 1).expand(1, 7, 2).requires_grad_()
    padded, mask = packed_to_padded(x, cu, fill=-torch.inf)
    assert padded.shape == (3, 4, 2)
    assert mask.tolist() == [[True] * 3 + [False], [False] * 4, [True] * 4]
    assert torch.equal(padded[0, :3, 0], torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(padded[2, :, 1], torch.tensor([3.0, 4.0, 5.0, 6.0]))
    assert bool((padded[~mask] == -torch.inf).all())
    back = padded_to_packed(padded, mask)
    assert torch.equal(back, x)
    (back * torch.arange(14.0).view(1, 7, 2)).sum().backward()
    assert torch.equal(x.grad, torch.arange(14.0).view(1, 7, 2))
