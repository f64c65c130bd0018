"""Checkpoints: the safe format round-trips, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from rnnx.train.checkpoint import load_checkpoint, load_weights, save_checkpoint
from rnnx.train.config import ModelConfig, RunConfig, TaskConfig, TrainConfig
from rnnx.train.run import train


class Crash(L.Callback):
    """Simulates a killed process right after optimizer step ``at``, or as epoch ``at``
    starts (``hook="epoch"``: just after an end-of-epoch checkpoint)."""

    def __init__(self, hook: str, at: int) -> None:
        self.hook, self.at = hook, at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.hook == "step" and trainer.global_step == self.at:
            raise RuntimeError("simulated crash")

    def on_train_epoch_start(self, trainer, pl_module):
        if self.hook == "epoch" and trainer.current_epoch == self.at:
            raise RuntimeError("simulated crash")


def _cfg() -> RunConfig:
    # Parity: variable lengths (the lengths path) and token inputs; dropout: the RNG path.
    return RunConfig(
        model=ModelConfig(layer="lstm", d_model=8, n_layers=1, dropout=0.2, mlp_ratio=1.0),
        task=TaskConfig(
            "parity",
            {"n_train": 96, "n_val": 16, "n_test": 16, "train_len": 8, "test_len": 12},
        ),
        train=TrainConfig(epochs=3, batch_size=16, checkpoint_every=4, lr=1e-2, precision="32"),
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    result = train(_cfg(), out_dir=out, progress=False, verbose=False)
    return out, result


# 96 / 16 = 6 steps per epoch, 18 in all; checkpoints every 4 steps and at epoch ends.
# Crashes: just after a mid-epoch checkpoint (step 8), between checkpoints (step 10:
# steps 9-10 are redone), at the last batch of an epoch before its end-of-epoch
# checkpoint (step 12), and just after an end-of-epoch checkpoint (epoch 2 starts).
@pytest.mark.parametrize(
    "crash",
    [
        pytest.param(("step", 8), marks=pytest.mark.slow),
        ("step", 10),
        pytest.param(("step", 12), marks=pytest.mark.slow),
        ("epoch", 2),
    ],
    ids=str,
)
def test_resume_after_a_crash_gives_identical_parameters(uninterrupted, tmp_path, crash):
    full_dir, full = uninterrupted
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_cfg(), out_dir=tmp_path, callbacks=[Crash(*crash)], progress=False, verbose=False)
    assert not (tmp_path / "model.safetensors").exists()
    resumed = train(_cfg(), out_dir=tmp_path, resume=True, progress=False, verbose=False)
    assert resumed["steps"] == full["steps"] == 18
    a = load_weights(full_dir / "model.safetensors")
    b = load_weights(tmp_path / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["test"] == full["test"]


def test_checkpoint_round_trip_without_pickle(tmp_path):
    ckpt = {
        "state_dict": {"w": torch.randn(3, 2), "c": torch.randn(2, dtype=torch.complex64)},
        "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": []}],
        "loops": {"epoch": 2, "nan": float("inf"), "pair": (1, "a"), "none": None},
    }
    path = tmp_path / "c.safetensors"
    save_checkpoint(ckpt, path)
    back = load_checkpoint(path)
    assert torch.equal(back["state_dict"]["w"], ckpt["state_dict"]["w"])
    assert torch.equal(back["state_dict"]["c"], ckpt["state_dict"]["c"])
    assert list(back["optimizer_states"][0]["state"]) == [0]  # int keys survive
    assert back["loops"] == {"epoch": 2, "nan": float("inf"), "pair": (1, "a"), "none": None}
    # the file is plain safetensors with a JSON header: no pickle anywhere
    assert b"\x80\x04" not in path.read_bytes()[:8]
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    assert header["__metadata__"]["format"] == "rnnx-checkpoint-1"


def test_checkpoint_refuses_objects_it_would_have_to_pickle(tmp_path):
    with pytest.raises(TypeError, match=r"cannot store \.loops\.fn of type function"):
        save_checkpoint({"loops": {"fn": lambda: 0}}, tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())  # nothing half-written
