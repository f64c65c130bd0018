"""rnnx bench compile: the benchmark's plumbing, on the fast aot_eager backend."""

from __future__ import annotations

import json

from rnnx.cli import main


def test_bench_compile_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "compile.json"
    argv = ["bench", "compile", "--quick", "--repeat", "1", "--layers", "lstm,gla",
            "--backend", "aot_eager", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert [r["layer"] for r in payload["rows"]] == ["lstm", "gla"]
    for row in payload["rows"]:
        assert row["eager/compiled"] > 0 and row["compile s"] > 0
        assert float(row["max |Δ grad|"]) < 1e-5
    assert payload["machine"]["cpu"] and payload["backend"] == "aot_eager"
    assert "eager/compiled" in capsys.readouterr().out
