"""The rnnx command line: list, bench, train (smoke-sized)."""

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


def test_bench_scan_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "scan.json"
    assert main(["bench", "scan", "--quick", "--repeat", "1", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert {r["case"] for r in payload["rows"]} == {"real", "complex", "block2"}
    for row in payload["rows"]:
        assert row["scan/pass"] > 0 and row["loop/scan fwd"] > 0
    assert "scan/pass" in capsys.readouterr().out


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
    assert 0.0 <= result["test_acc"] <= 1.0
    assert "test accuracy:" in capsys.readouterr().out


def test_unknown_layer_is_a_clear_error():
    with pytest.raises(ValueError, match="no layer named 'lsmt'; did you mean 'lstm'"):
        main(["train", "--model", "lsmt", "--epochs", "1"])


def test_cli_enables_huge_pages_before_torch():
    code = "import os, rnnx.cli; print(os.environ['THP_MEM_ALLOC_ENABLE'])"
    env = {k: v for k, v in __import__("os").environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "1", out.stderr
