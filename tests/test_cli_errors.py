"""Every wrong input to the command line: one line on stderr, a non-zero exit code, no
traceback (``--debug`` shows it), and nothing started."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rnnx.cli import main

pytest.importorskip("lightning")

TINY = ["--model", "lstm", "--task", "adding", "--task-arg", "seq_len=4", "--task-arg",
        "n_train=16", "--task-arg", "n_val=4", "--task-arg", "n_test=4", "--d-model", "4",
        "--n-layers", "1", "--max-steps", "1", "--batch-size", "8", "--precision", "32",
        "--no-progress"]  # fmt: skip


def one_error(capsys, argv, code=2) -> str:
    """Run ``rnnx argv``; check the exit code and that stderr is one line, no traceback."""
    got = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--model", "LSTM"], "--model): no layer named 'LSTM'; did you mean 'lstm'"),
        (["train", "--task", "Digits"], "(--task): no task named 'Digits'; did you mean 'digits'"),
        (["train", "--task", "text"], "'text' needs a data set name or path"),
        (["train", "--epochs", "0"], "[train] epochs (--epochs): expected an integer >= 1, got 0"),
        (["train", "--epochs", "-1"], "expected an integer >= 1, got -1"),
        (["train", "--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
        (["train", "--max-steps", "0"], "(--max-steps): expected an integer >= 1 (or -1), got 0"),
        (["train", "--lr", "-1"], "[train] lr (--lr): expected a number > 0, got -1.0"),
        (["train", "--lr", "nan"], "(--lr): expected a number > 0, got nan"),
        (["train", "--batch-size", "0"], "(--batch-size): expected an integer >= 1, got 0"),
        (["train", "--dropout", "1.5"], "(--dropout): expected a number >= 0 and < 1, got 1.5"),
        (["train", "--precision", "16"], "(--precision): expected one of 'auto', '32'"),
        (["train", "--epoch", "3"], "unrecognized argument(s): --epoch 3; did you mean '--epochs'"),
        (["train", "--layer-arg", "hiden=3"], "takes no argument 'hiden'"),
        (["train", "--task", "shakespeare", "--task-arg", "path=x"], "takes no argument 'path'"),
        (["train", "--task-arg", "horizon"], "--task-arg: expected KEY=VALUE, got 'horizon'"),
        (["trian"], "no choice 'trian'; did you mean 'train'"),
        (["bench", "scna"], "no choice 'scna'; did you mean 'scan'"),
        (["generate", "x", "--prompt", "a", "--temperature", "-1"], "expected a number >= 0"),
        (["generate", "x", "--prompt", "a", "--top-k", "0"], "expected an integer >= 1, got '0'"),
        (["generate", "x"], "the following arguments are required: --prompt"),
        (["eval", "nowhere"], "checkpoint: nowhere does not exist"),
        (["eval", "x", "--batch-size", "0"], "--batch-size: expected an integer >= 1"),
        (["list", "--import", "no_such_plugin_mod"], "no module named 'no_such_plugin_mod'"),
        (["train", "--resume", "nowhere"], "--resume nowhere: no such run directory"),
    ],
)
def test_wrong_input_is_one_line(capsys, argv, expected):
    assert expected in one_error(capsys, argv)


def test_bad_toml_values(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nepochs = "two"\n')
    line = one_error(capsys, ["train", "--config", str(toml)])
    assert "[train] epochs (--epochs): expected an integer, got 'two' (str)" in line
    toml.write_text("[train]\nepcohs = 3\n")
    assert "did you mean 'epochs'" in one_error(capsys, ["train", "--config", str(toml)])
    toml.write_text("[train\n")
    assert "not valid TOML" in one_error(capsys, ["train", "--config", str(toml)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli-errors") / "run"
    assert main(["train", *TINY, "--out-dir", str(run)]) == 0
    return run


def _copy(trained, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return run


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("empty", "model.safetensors is empty (0 bytes)"),
        ("truncated", "model.safetensors is truncated"),
        ("corrupt", "model.safetensors is not a safetensors file"),
        ("missing", "holds no weights (neither model.safetensors nor"),
        ("config", "config.json is not valid JSON"),
        ("no-config", "is not an rnnx run directory (no config.json)"),
    ],
)
def test_broken_checkpoints_name_the_file(trained, tmp_path, capsys, damage, expected):
    run = _copy(trained, tmp_path)
    weights = run / "model.safetensors"
    data = weights.read_bytes()
    if damage == "empty":
        weights.write_bytes(b"")
    elif damage == "truncated":
        weights.write_bytes(data[: len(data) - 40])
    elif damage == "corrupt":
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + data[24:])
    elif damage == "missing":
        weights.unlink()
        shutil.rmtree(run / "checkpoints")
    elif damage == "config":
        (run / "config.json").write_text('{"run": ')
    else:
        (run / "config.json").unlink()
    for argv in (["eval", str(run)], ["generate", str(run), "--prompt", "a"]):
        assert expected in one_error(capsys, argv)
    if damage in ("empty", "truncated", "corrupt"):
        # the file itself, and a weights file that does not fit its config
        assert expected in one_error(capsys, ["eval", str(weights)])


def test_weights_that_do_not_fit_the_config(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    spec = json.loads((run / "config.json").read_text())
    spec["backbone"]["d_model"] = 6
    (run / "config.json").write_text(json.dumps(spec))
    line = one_error(capsys, ["eval", str(run)])
    assert "model.safetensors does not fit the model of" in line and "shape" in line


def test_resume_with_a_damaged_checkpoint(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    (run / "status.json").unlink()
    (run / "results.json").unlink()
    ckpt = run / "checkpoints" / "last.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    assert "last.safetensors is truncated" in one_error(capsys, ["train", "--resume", str(run)])


def test_eval_of_another_kind_of_task(trained, capsys):
    line = one_error(capsys, ["eval", str(trained), "--task", "parity"])
    assert "--task parity: does not fit the model trained on adding" in line
    assert "it is a tagging task, the model does regression" in line


def test_debug_shows_the_traceback(capsys):
    assert main(["--debug", "train", "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "expected an integer >= 1, got 0" in err.splitlines()[-1]
    assert main(["train", "--epochs", "0", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_failed_run_is_one_line_with_a_hint(monkeypatch, tmp_path, capsys):
    from rnnx.train import callbacks

    def boom(self, trainer, *a):
        raise RuntimeError("simulated failure\ninside the step")

    monkeypatch.setattr(callbacks.RunState, "on_train_batch_end", boom)
    line = one_error(capsys, ["train", *TINY, "--out-dir", str(tmp_path / "r")], code=1)
    assert line.endswith(
        "RuntimeError: simulated failure inside the step (run with --debug for the traceback)"
    )
    assert not (tmp_path / "r").exists()  # failed before its first checkpoint: removed


def test_no_traceback_from_a_real_process(tmp_path):
    """The console entry point itself, in a fresh process: exit code and stderr."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    for argv, expected in ((["train", "--epochs", "0"], "expected an integer >= 1, got 0"),):
        out = subprocess.run(
            [sys.executable, "-m", "rnnx.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and expected in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_unknown_set_name_suggests_ignoring_case(capsys):
    from rnnx.data import _sources

    if not _sources.available("aeon"):
        pytest.skip("aeon wheel not fetched: rnnx data fetch aeon")
    line = one_error(capsys, ["train", "--task", "aeon:japanesevowels", "--max-steps", "1"])
    assert "no classification set 'japanesevowels'; did you mean 'JapaneseVowels'" in line
