from __future__ import annotations

import pytest
import torch

from rnnx.data import MissingDependencyError, get_task, task_names
from rnnx.data import base as data_base


def test_digits_splits_are_fixed_and_disjoint():
    pytest.importorskip("sklearn")
    a, b = get_task("digits"), get_task("digits")
    assert (len(a.train), len(a.val), len(a.test)) == (1211, 136, 450)
    assert a.train.x.shape[1:] == (64, 1) and a.d_input == 1 and a.n_classes == 10
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert float(a.train.x.min()) >= 0.0 and float(a.train.x.max()) <= 1.0
    # every class in every split (stratified)
    for split in (a.train, a.val, a.test):
        assert set(split.y.tolist()) == set(range(10))
    rows = get_task("digits", rows=True)
    assert rows.train.x.shape[1:] == (8, 8)
    # a different seed draws a different validation split, never a different test split
    c = get_task("digits", seed=1)
    assert torch.equal(c.test.x, a.test.x) and not torch.equal(c.val.x, a.val.x)


def test_unknown_task():
    assert "digits" in task_names()
    with pytest.raises(ValueError, match="no task named 'digit'; did you mean 'digits'"):
        get_task("digit")


def test_missing_package_names_the_install(monkeypatch):
    def fail(name):
        raise ImportError(name)

    monkeypatch.setattr(data_base.importlib, "import_module", fail)
    with pytest.raises(MissingDependencyError, match=r"pip install 'rnnx\[data\]'"):
        get_task("digits")


def test_stratified_split_holds_out_every_class_the_data_allow():
    # Class sizes 1, 2, 3 and 40: a 10% split would round the small ones to nothing.
    y = torch.tensor([0] + [1] * 2 + [2] * 3 + [3] * 40)
    rest, held = data_base.stratified_split(y, 0.1, seed=0)
    assert sorted(set(y[held].tolist())) == [1, 2, 3]  # class 0 has a single item
    assert sorted(set(y[rest].tolist())) == [0, 1, 2, 3]  # no class leaves training
    assert torch.bincount(y[held]).tolist() == [0, 1, 1, 4]
    assert sorted(torch.cat([rest, held]).tolist()) == list(range(len(y)))
    again, _ = data_base.stratified_split(y, 0.1, seed=0)
    assert torch.equal(again, rest)
    assert data_base.stratified_split(y, 0.0, seed=0)[1].numel() == 0
    with pytest.raises(ValueError, match=r"fraction: expected a value in \[0, 1\)"):
        data_base.stratified_split(y, 1.0, seed=0)
