"""``rnnx train --accelerator / --devices``: the device choice, the Trainer's arguments and
DDP's backend, and the one-line errors, as far as a machine without a GPU can test them."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("lightning")

import lightning

from rnnx import cli
from rnnx.train import run
from rnnx.train.config import RunConfig
from rnnx.train.run import (
    AcceleratorError,
    resolve_accelerator,
    resolve_precision,
    trainer_placement,
)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_auto_is_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_accelerator("auto") == "cpu"
    assert resolve_accelerator("cpu") == "cpu"


def test_auto_is_cuda_with_a_gpu(fake_cuda):
    assert resolve_accelerator("auto") == "cuda"
    assert resolve_accelerator("cuda") == "cuda"
    assert resolve_precision("auto", "cuda") == "bf16-mixed"
    assert resolve_precision("32", "cuda") == "32"


def test_missing_or_unknown_devices_are_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AcceleratorError, match=r"'cuda' was requested but torch .* sees no CUDA"):
        resolve_accelerator("cuda")
    with pytest.raises(AcceleratorError, match=r"expected one of auto, cpu, cuda, mps, got 'tpu'"):
        resolve_accelerator("tpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(AcceleratorError, match=r"'mps' was requested"):
        resolve_accelerator("mps")


def test_one_process():
    assert trainer_placement("cpu", 0, env={}) == {
        "accelerator": "cpu",
        "devices": 1,
        "num_nodes": 1,
        "process_group_backend": None,
    }
    assert trainer_placement("cuda", 1, env={})["devices"] == 1


@pytest.mark.parametrize(("accelerator", "backend"), [("cuda", "nccl"), ("cpu", "gloo")])
def test_under_torchrun_ddp_uses_nccl_on_cuda_and_gloo_on_the_cpu(accelerator, backend):
    env = {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "RANK": "5"}
    placement = trainer_placement(accelerator, 0, env=env)
    assert placement == {
        "accelerator": accelerator,
        "devices": 4,
        "num_nodes": 2,
        "process_group_backend": backend,
    }
    assert trainer_placement(accelerator, 4, env=env) == placement


def test_device_count_errors():
    env = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    with pytest.raises(AcceleratorError, match=r"devices: 3 requested, but torchrun started 2"):
        trainer_placement("cuda", 3, env=env)
    with pytest.raises(AcceleratorError, match=r"devices: 2 needs one process per device"):
        trainer_placement("cuda", 2, env={})
    with pytest.raises(AcceleratorError, match=r"devices: expected an int >= 0, got -1"):
        trainer_placement("cpu", -1, env={})


class _Stop(Exception):
    pass


@pytest.fixture
def captured_trainer(monkeypatch):
    """Replace lightning.Trainer by a recorder that stops train() at its construction."""
    seen: dict = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(lightning, "Trainer", fake)
    return seen


def _small_config(**train) -> RunConfig:
    cfg = RunConfig()
    cfg.model.d_model, cfg.model.n_layers, cfg.model.layer = 8, 1, "paragru"
    cfg.train.max_steps = 1
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_the_trainer_gets_the_gpu(fake_cuda, captured_trainer, tmp_path, capsys):
    with pytest.raises(_Stop):
        run.train(_small_config(), out_dir=tmp_path, progress=False)
    assert captured_trainer["accelerator"] == "cuda"
    assert captured_trainer["devices"] == 1 and captured_trainer["num_nodes"] == 1
    assert captured_trainer["strategy"] == "auto"
    assert captured_trainer["precision"] == "bf16-mixed"
    # the banner names the mode that will run there (ParaGRU: newton on CUDA)
    assert "mode newton, precision bf16-mixed on cuda" in capsys.readouterr().out


def test_the_trainer_under_torchrun_on_gpus(fake_cuda, captured_trainer, tmp_path, monkeypatch):
    for k, v in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    with pytest.raises(_Stop):
        run.train(_small_config(accelerator="cuda"), out_dir=tmp_path, progress=False)
    strategy = captured_trainer["strategy"]
    assert type(strategy).__name__ == "DDPStrategy"
    assert strategy._process_group_backend == "nccl"
    assert captured_trainer["devices"] == 2


def test_the_trainer_on_the_cpu(captured_trainer, tmp_path):
    with pytest.raises(_Stop):
        run.train(_small_config(accelerator="cpu"), out_dir=tmp_path, progress=False)
    assert captured_trainer["accelerator"] == "cpu"


def test_cli_cuda_without_a_gpu_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = cli.main(["train", "--accelerator", "cuda", "--out-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("rnnx train: accelerator: 'cuda' was requested")
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing was started


def test_cli_devices_starts_torchrun(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("subprocess.call", lambda cmd: calls.append(cmd) or 0)
    argv = ["train", "--accelerator", "cpu", "--devices", "2", "--out-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["rnnx", *argv])
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert cli.main(argv) == 0
    (cmd,) = calls
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc-per-node=2"]  # fmt: skip
    assert cmd[5:] == ["-m", "rnnx.cli", *argv]
