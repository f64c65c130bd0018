"""Nothing is lost: run directories are never overwritten, failed runs are removed or
marked, Ctrl-C saves a checkpoint and says how to resume, and totals add up on resume."""

from __future__ import annotations

import json
import signal

import lightning as L
import pytest
import torch

from rnnx.cli import main
from rnnx.train.callbacks import RunState
from rnnx.train.checkpoint import load_checkpoint, load_weights
from rnnx.train.config import ModelConfig, RunConfig, TaskConfig, TrainConfig
from rnnx.train.errors import RunInterrupted
from rnnx.train.run import default_run_dir, train

ARGS = ["--model", "lstm", "--task", "adding", "--task-arg", "seq_len=4", "--task-arg",
        "n_train=64", "--task-arg", "n_val=8", "--task-arg", "n_test=8", "--d-model", "4",
        "--n-layers", "1", "--epochs", "1", "--batch-size", "8", "--precision", "32",
        "--checkpoint-every", "100", "--no-progress"]  # fmt: skip


def _cfg(**train) -> RunConfig:
    return RunConfig(
        model=ModelConfig(layer="lstm", d_model=4, n_layers=1),
        task=TaskConfig("adding", {"seq_len": 4, "n_train": 64, "n_val": 8, "n_test": 8}),
        train=TrainConfig(**{"epochs": 1, "batch_size": 8, "precision": "32", **train}),
    )


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *ARGS, "--max-steps", "1", "--out-dir", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", *ARGS, "--max-steps", "2", "--out-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run (status finished" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # --overwrite replaces it
    assert main(["train", *ARGS, "--max-steps", "2", "--out-dir", str(run), "--overwrite"]) == 0
    assert json.loads((run / "results.json").read_text())["steps"] == 2
    assert len(list((run / "logs").glob("version_*"))) == 1  # nothing of the old run left
    # a folder that is not a run is never deleted, not even with --overwrite
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):
        assert main(["train", *ARGS, "--out-dir", str(other), *extra]) == 2
        assert "is not an rnnx run directory" in capsys.readouterr().err
    assert (other / "thesis.tex").read_text() == "precious"
    # compare refuses an existing comparison the same way
    cmp_args = ["compare", "--models", "lstm", *ARGS[2:], "--max-steps", "1"]
    assert main([*cmp_args, "--out-dir", str(tmp_path / "cmp")]) == 0
    assert main([*cmp_args, "--out-dir", str(tmp_path / "cmp")]) == 2
    assert "already holds a comparison" in capsys.readouterr().err


def test_default_run_directories_get_a_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = default_run_dir("text:/data/my notes.txt", _cfg())
    assert first.parent.name == "runs" and first.name.startswith("text-my-notes-lstm-")
    first.mkdir(parents=True)
    second = default_run_dir("text:/data/my notes.txt", _cfg())
    assert second != first and second.name == first.name + "-2"


class _Fail(L.Callback):
    def __init__(self, at: int, exc: BaseException) -> None:
        self.at, self.exc = at, exc

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise self.exc


def test_a_failed_run_is_removed_or_marked(tmp_path):
    early = tmp_path / "early"
    with pytest.raises(RuntimeError, match="boom"):
        train(_cfg(), out_dir=early, callbacks=[_Fail(2, RuntimeError("boom"))], verbose=False)
    assert not early.exists()  # no checkpoint yet: nothing worth keeping
    late = tmp_path / "late"
    with pytest.raises(RuntimeError, match="boom"):
        train(
            _cfg(checkpoint_every=2),
            out_dir=late,
            callbacks=[_Fail(5, RuntimeError("boom"))],
            progress=False,
            verbose=False,
        )
    status = json.loads((late / "status.json").read_text())
    assert status["status"] == "failed" and "RuntimeError: boom" in status["error"]
    assert status["resume"] == f"rnnx train --resume {late}"
    # the resumed run adds its time to the recorded one
    saved = load_checkpoint(late / "checkpoints" / "last.safetensors")
    before = saved["callbacks"]["RunState"]["train_seconds"]
    assert before > 0
    result = train(_cfg(checkpoint_every=2), out_dir=late, resume=True, verbose=False)
    assert result["steps"] == 8 and result["attempts"] == 2
    assert result["train_seconds"] >= round(before, 1)
    assert json.loads((late / "status.json").read_text())["status"] == "finished"
    with pytest.raises(ValueError, match="this run finished"):
        train(_cfg(checkpoint_every=2), out_dir=late, resume=True, verbose=False)


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    full = tmp_path / "full"
    assert main(["train", *ARGS, "--out-dir", str(full)]) == 0
    original = RunState.on_train_batch_end

    def press_ctrl_c_at_step_3(self, trainer, *args):
        original(self, trainer, *args)
        if trainer.global_step == 3:
            signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C once

    monkeypatch.setattr(RunState, "on_train_batch_end", press_ctrl_c_at_step_3)
    run = tmp_path / "run"
    capsys.readouterr()
    handler = signal.getsignal(signal.SIGINT)
    assert main(["train", *ARGS, "--out-dir", str(run)]) == 130
    assert signal.getsignal(signal.SIGINT) is handler  # put back
    err = capsys.readouterr().err
    assert "saved at step 3" in err and f"continue with: rnnx train --resume {run}" in err
    assert "Traceback" not in err
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    saved = load_checkpoint(run / "checkpoints" / "last.safetensors")
    assert saved["global_step"] == 3
    monkeypatch.setattr(RunState, "on_train_batch_end", original)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    result = json.loads((run / "results.json").read_text())
    assert result["steps"] == 8 and result["resumed"] and result["attempts"] == 2
    a, b = load_weights(full / "model.safetensors"), load_weights(run / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k  # as if never interrupted


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    run = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(RunInterrupted, match=r"stopped at once; the checkpoint .*\(step 4\)"):
        train(
            _cfg(checkpoint_every=4),
            out_dir=run,
            callbacks=[_Fail(6, KeyboardInterrupt())],
            progress=False,
            verbose=False,
        )
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning had left it ignored
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"


def test_a_failed_run_with_a_checkpoint_says_how_to_resume(tmp_path, monkeypatch, capsys):
    original = RunState.on_train_batch_end

    def fail_at_step_5(self, trainer, *args):
        original(self, trainer, *args)
        if trainer.global_step == 5:
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(RunState, "on_train_batch_end", fail_at_step_5)
    run = tmp_path / "run"
    argv = ["train", *ARGS, "--checkpoint-every", "2", "--out-dir", str(run)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "RuntimeError: disk on fire; " in err
    assert f"keeps its last checkpoint; to continue: rnnx train --resume {run}" in err
