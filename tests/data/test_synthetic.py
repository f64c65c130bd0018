"""Synthetic tasks: shapes, split sizes, determinism, and that the targets are right."""

from __future__ import annotations

import pytest
import torch

from rnnx.data import get_task

SMALL = {"n_train": 64, "n_val": 8, "n_test": 16}


@pytest.mark.parametrize(
    "name", ["mqar", "selective_copying", "parity", "modular_counting", "adding"]
)
def test_sizes_and_determinism(name):
    a, b, c = get_task(name, **SMALL), get_task(name, **SMALL), get_task(name, seed=1, **SMALL)
    assert (len(a.train), len(a.val), len(a.test)) == (64, 8, 16)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    # The test split does not depend on the training-set size.
    bigger = get_task(name, **{**SMALL, "n_train": 80})
    assert torch.equal(bigger.test.x, a.test.x)


def test_mqar_targets_are_the_bound_values():
    t = get_task("mqar", vocab_size=32, seq_len=40, num_kv_pairs=4, **SMALL)
    x, y = t.train.x, t.train.y
    assert x.shape == y.shape == (64, 40) and t.vocab_size == 32 and t.kind == "tagging"
    for i in range(len(x)):
        pairs = dict(zip(x[i, 0:8:2].tolist(), x[i, 1:8:2].tolist()))
        assert len(pairs) == 4 and all(1 <= k < 16 for k in pairs)  # distinct keys, lower half
        assert all(16 <= v < 32 for v in pairs.values())
        q = torch.nonzero(y[i] != -100).flatten()
        assert len(q) == 4 and bool((q >= 8).all())  # every key queried once, after the pairs
        for pos in q.tolist():
            assert y[i, pos] == pairs[int(x[i, pos])]  # query key -> its value


def test_mqar_rejects_impossible_sizes():
    with pytest.raises(ValueError, match="seq_len"):
        get_task("mqar", seq_len=16, num_kv_pairs=8, **SMALL)


def test_selective_copying_targets():
    t = get_task("selective_copying", seq_len=20, n_tokens=4, n_symbols=5, **SMALL)
    x, y = t.train.x, t.train.y
    assert x.shape == (64, 24) and t.vocab_size == 7
    for i in range(len(x)):
        data = x[i, :20][x[i, :20] >= 2]
        assert len(data) == 4 and bool((x[i, 20:] == 1).all())
        assert torch.equal(y[i, 20:], data) and bool((y[i, :20] == -100).all())


@pytest.mark.parametrize("modulus", [2, 5])
def test_counting_targets_and_length_split(modulus):
    name = "parity" if modulus == 2 else "modular_counting"
    kw = {"modulus": modulus} if modulus != 2 else {}
    t = get_task(name, train_len=10, min_len=3, test_len=30, **kw, **SMALL)
    x, y, lengths = t.train.x, t.train.y, t.train.lengths
    assert x.shape == (64, 10) and t.n_classes == modulus and t.vocab_size == 2
    assert int(lengths.min()) >= 3 and int(lengths.max()) <= 10
    for i in range(len(x)):
        n = int(lengths[i])
        assert torch.equal(y[i, :n], torch.cumsum(x[i, :n], 0) % modulus)
        assert bool((y[i, n:] == -100).all()) and bool((x[i, n:] == 0).all())
    # Test: length 30, scored only beyond the trained length.
    xt, yt = t.test.x, t.test.y
    assert xt.shape == (16, 30) and bool((yt[:, :10] == -100).all())
    assert torch.equal(yt[:, 10:], (torch.cumsum(xt, 1) % modulus)[:, 10:])


def test_adding_problem():
    t = get_task("adding", seq_len=12, **SMALL)
    x, y = t.train.x, t.train.y
    assert x.shape == (64, 12, 2) and y.shape == (64, 1) and t.kind == "regression"
    marks = x[..., 1]
    assert bool((marks.sum(1) == 2).all())
    assert bool((marks[:, :6].sum(1) == 1).all())  # one mark in each half
    assert_sum = (x[..., 0] * marks).sum(1, keepdim=True)
    torch.testing.assert_close(assert_sum, y)
