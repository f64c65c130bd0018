"""A user's own data through the command line alone: train 2 steps, eval, generate (text),
for text:, csv:, npz: and ts: files the tests write; what was inferred is reported."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnx.cli import main

pytest.importorskip("lightning")

TINY = ["--model", "lstm", "--d-model", "8", "--n-layers", "1", "--max-steps", "2",
        "--batch-size", "4", "--precision", "32", "--no-progress"]  # fmt: skip


def _train_eval(tmp_path, capsys, task: str, *extra: str) -> dict:
    run = tmp_path / "run"
    assert main(["train", "--task", task, *TINY, *extra, "--out-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "inferred from the data: kind" in out
    result = json.loads((run / "results.json").read_text())
    assert result["steps"] == 2 and result["inferred"]
    assert main(["eval", str(run), "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    metric = result["metric"]
    assert evaluated[metric] == pytest.approx(result["test"][metric], rel=1e-4)
    capsys.readouterr()
    return result


def test_text_file_train_eval_generate(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("the cat sat on the mat; " * 60)
    result = _train_eval(tmp_path, capsys, f"text:{notes}", "--task-arg", "seq_len=16")
    assert result["inferred"]["tokens"] == "characters" and result["kind"] == "lm"
    run = tmp_path / "run"
    assert main(["generate", str(run), "--prompt", "the ", "--max-new-tokens", "12"]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("the ") and len(text) == 4 + 12
    assert set(text) <= set("the cat sat on the mat; ")
    # another file is encoded with the model's saved vocabulary
    other = tmp_path / "other.txt"
    other.write_text("a cat on a mat; " * 40)
    assert main(["eval", str(run), "--task", f"text:{other}", "--task-arg", "seq_len=16"]) == 0
    assert "bpc" in capsys.readouterr().out
    other.write_text("QQQ " * 100)
    assert main(["eval", str(run), "--task", f"text:{other}", "--task-arg", "seq_len=16"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err


def test_text_folder_as_bytes(tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(f"document {i}: héllo wörld. " * 30)
    result = _train_eval(
        tmp_path, capsys, f"text:{folder}", "--task-arg", "vocab=bytes", "--task-arg", "seq_len=16"
    )
    assert result["inferred"]["tokens"] == "bytes" and result["inferred"]["split"] == "by file"
    assert main(["generate", str(tmp_path / "run"), "--prompt", "hé", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("hé")


def test_csv_forecasting(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    f = tmp_path / "load.csv"
    t = pd.date_range("2024-01-01", periods=240, freq="h")
    pd.DataFrame({"time": t, "load": np.sin(np.arange(240) / 3.8)}).to_csv(f, index=False)
    result = _train_eval(tmp_path, capsys, f"csv:{f}", "--task-arg", "horizon=6")
    assert result["inferred"]["targets"] == ["load"] and result["kind"] == "regression"
    assert "seasonal naive lag 24" in result["task_info"]["reference"]


def test_npz_classification_and_a_task_that_does_not_fit(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 10, 2)).astype(np.float32)
    np.savez(tmp_path / "two.npz", x=x, y=(x[:, :, 0].mean(1) > 0).astype(np.int64))
    result = _train_eval(tmp_path, capsys, f"npz:{tmp_path / 'two.npz'}")
    assert result["inferred"]["classes"] == 2 and result["inferred"]["channels"] == 2
    np.savez(tmp_path / "three.npz", x=x, y=np.arange(40) % 3)
    code = main(["eval", str(tmp_path / "run"), "--task", f"npz:{tmp_path / 'three.npz'}"])
    err = capsys.readouterr().err
    assert code == 2 and "3 classes, the model 2" in err and "Traceback" not in err
    np.savez(tmp_path / "wide.npz", x=rng.normal(size=(40, 10, 5)), y=np.arange(40) % 2)
    assert main(["eval", str(tmp_path / "run"), "--task", f"npz:{tmp_path / 'wide.npz'}"]) == 2
    assert "5 input channels, the model 2" in capsys.readouterr().err


def test_ts_folder_multivariate_unequal_length(tmp_path, capsys):
    from tests.data.test_own_data import _write_ts

    d = tmp_path / "toy"
    d.mkdir()
    _write_ts(d / "Toy_TRAIN.ts", 24, 0)
    _write_ts(d / "Toy_TEST.ts", 12, 1)
    result = _train_eval(tmp_path, capsys, f"ts:{d}")
    inf = result["inferred"]
    assert inf["channels"] == 2 and inf["classes"] == 2 and inf["equal_length"] is False
