"""rnnx bench conv_s5: the benchmark's plumbing on tiny shapes (times are not checked)."""

from __future__ import annotations

import json

from rnnx.bench.conv_s5 import crossover
from rnnx.cli import main


def test_quick_run_with_a_baseline_writes_json(tmp_path, capsys):
    """Against a registered spatial layer (ConvS5 itself, present on every branch)."""
    out = tmp_path / "conv_s5.json"
    argv = ["bench", "conv_s5", "--quick", "--repeat", "1", "--baseline", "conv_s5",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert payload["baseline"] == "conv_s5" and payload["baseline_skipped"] is None
    for table, unit in (("train", "ms"), ("sample", "ms/frame")):
        rows = payload[table]["rows"]
        assert [r["T"] for r in rows] == [2, 4]
        for r in rows:
            assert r[f"conv_s5 {unit}"] > 0 and r[f"baseline {unit}"] > 0
            assert r["baseline / conv_s5"] > 0
        assert payload[table]["crossover"] != "no baseline measured"
    assert payload["machine"]["cpu"]
    assert "crossover (train)" in capsys.readouterr().out


def test_missing_baseline_is_skipped_with_a_message(tmp_path, capsys):
    out = tmp_path / "conv_s5.json"
    argv = ["bench", "conv_s5", "--quick", "--repeat", "1", "--tables", "sample",
            "--baseline", "no_such_layer", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert payload["baseline"] is None and "no_such_layer" in payload["baseline_skipped"]
    assert all("baseline / conv_s5" not in r for r in payload["sample"]["rows"])
    assert payload["sample"]["crossover"] == "no baseline measured"
    assert "baseline skipped: 'no_such_layer' is not a registered layer" in capsys.readouterr().out


def test_crossover_in_words():
    def rows(*ratios):
        return [{"T": 16 * 2**i, "baseline / conv_s5": r} for i, r in enumerate(ratios)]

    assert crossover(rows(0.5, 0.9, 1.2, 1.5)) == "ConvS5 is faster from T = 64 on"
    assert crossover(rows(0.5, 1.2, 0.9, 1.5)) == "ConvS5 is faster from T = 128 on"
    assert crossover(rows(1.1, 1.2)) == "ConvS5 is faster at every T measured (from T = 16)"
    assert crossover(rows(0.5, 0.9)) == "ConvS5 is slower at every T measured"
    assert crossover([{"T": 16}]) == "no baseline measured"
