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
