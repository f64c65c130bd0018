"""DDP: two processes (torchrun, gloo on CPU) train to the same parameters as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("lightning")
pytest.importorskip("sklearn")

from rnnx.train.checkpoint import load_weights
from tests.conftest import assert_close

ARGS = [
    "train",
    "--model",
    "lstm",
    "--task",
    "digits",
    "--d-model",
    "8",
    "--n-layers",
    "1",
    "--max-steps",
    "6",
    "--batch-size",
    "16",
    "--threads",
    "1",
    "--precision",
    "32",
    "--dropout",
    "0",  # each process draws its own dropout masks
    "--no-progress",
]


def _run(cmd, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_two_processes_equal_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, "-m", "rnnx.cli", *ARGS, "--out-dir", str(one)], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    _run([*torchrun, "-m", "rnnx.cli", *ARGS, "--out-dir", str(two)], tmp_path)
    r1 = json.loads((one / "results.json").read_text())
    r2 = json.loads((two / "results.json").read_text())
    assert (r1["processes"], r2["processes"]) == (1, 2)
    assert r1["steps"] == r2["steps"] == 6
    a, b = load_weights(one / "model.safetensors"), load_weights(two / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert_close(b[k], a[k], rtol=1e-5, what=k)
    # Test metrics are exact sums over both processes' shards: the same numbers.
    assert r2["test"]["acc"] == pytest.approx(r1["test"]["acc"], abs=1e-6)
    assert r2["test"]["loss"] == pytest.approx(r1["test"]["loss"], rel=1e-5)
