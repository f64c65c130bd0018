"""Video tasks from the command line: every spatial layer trains on a tiny moving-digits
task and writes OpenSTL's metrics beside copy-last-frame's; LRCN classifies; a layer of
the wrong kind is refused in one line naming --model; eval reproduces the test metrics."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("lightning")
pytest.importorskip("sklearn")

import rnnx.layers as layers
from rnnx.cli import main

pytestmark = [
    pytest.mark.filterwarnings("ignore:You defined a `validation_step`"),
    pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated"),
]

TINY = [
    *("--task-arg", "n_train=16", "--task-arg", "n_val=4", "--task-arg", "n_test=4"),
    *("--task-arg", "canvas=16", "--task-arg", "digit_size=8", "--task-arg", "speed=1.5"),
    *("--d-model", "8", "--n-layers", "1", "--max-steps", "2", "--batch-size", "8"),
    *("--no-progress", "--threads", "1", "--precision", "32"),
]
FRAMES = ["--task-arg", "frames_in=3", "--task-arg", "frames_out=2"]
METRICS = ("mse", "mae", "ssim", "psnr")


@pytest.mark.parametrize("name", layers.names("spatial"))
def test_every_spatial_layer_trains_on_moving_digits(tmp_path, name):
    run = tmp_path / "run"
    args = ["train", "--task", "moving_digits", "--model", name, *TINY, *FRAMES]
    extra = ["--layer-arg", "d_state=4"] if name == "conv_s5" else []
    assert main([*args, *extra, "--out-dir", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["kind"] == "video_prediction" and res["metric"] == "mse" and res["steps"] == 2
    for k in METRICS:
        assert k in res["test"] and f"copy_last_{k}" in res["test"]
    assert res["test"]["mse"] > 0 and -1 <= res["test"]["ssim"] <= 1
    # the recipe's, and recorded: every setting left to it has a value
    assert res["config"]["model"]["patch_size"] == 4
    assert res["config"]["train"]["teacher_forcing"] is True


def test_the_default_layer_of_moving_digits_and_eval_and_own_predictions(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--task", "moving_digits", *TINY, *FRAMES, "--patch-size", "2"]
    assert main([*args, "--no-teacher-forcing", "--out-dir", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["model"] == "conv_lstm" and res["config"]["train"]["teacher_forcing"] is False
    assert "copy_last_mse" in capsys.readouterr().out
    out = tmp_path / "eval.json"
    assert main(["eval", str(run), "--json", str(out)]) == 0
    evaluated = json.loads(out.read_text())["metrics"]
    for k in METRICS:
        assert evaluated[k] == pytest.approx(res["test"][k], rel=1e-6)


def test_lrcn_on_moving_digits_cls(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--task", "moving_digits_cls", "--task-arg", "frames=3", *TINY]
    assert main([*args, "--out-dir", str(run)]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["model"] == "lstm" and res["kind"] == "video_classification"
    assert 0.0 <= res["test_acc"] <= 1.0


@pytest.mark.parametrize(
    ("task", "model", "message"),
    [
        ("moving_digits", "lstm", "--model lstm: is a layer over sequences .* conv_lstm"),
        ("moving_digits_cls", "conv_gru", "--model conv_gru: is a layer over frames .* lstm"),
        ("digits", "conv_s5", "--model conv_s5: is a layer over frames"),
    ],
)
def test_a_layer_of_the_wrong_kind_is_one_line_naming_model(tmp_path, capsys, task, model, message):
    small = TINY if task.startswith("moving") else TINY[12:]  # digits takes no --task-arg
    code = main(["train", "--task", task, "--model", model, *small, "--out-dir", str(tmp_path)])
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
