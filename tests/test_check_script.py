"""scripts/check.sh, the checks CI runs: every step runs, each failure is named, and the
exit status is the first failed step's. The tools are replaced by a stand-in ``python``
(``PYTHON=...``) that exits with the status asked of each tool, so this runs in no time."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check.sh"

# `$PY -m TOOL ARGS...`: records the call, exits with $RC_<TOOL> (default 0)
STAND_IN = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
var="RC_${2^^}"
exit "${!var:-0}"
"""


def _run(tmp_path: Path, *args: str, **rcs: int) -> tuple[subprocess.CompletedProcess, list[str]]:
    py = tmp_path / "python"
    py.write_text(STAND_IN)
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "PYTHON": str(py), "CALLS": str(calls)}
    env.update({f"RC_{tool.upper()}": str(rc) for tool, rc in rcs.items()})
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )
    return proc, calls.read_text().splitlines()


pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="a bash script")


def test_all_steps_pass_and_pytest_gets_the_arguments(tmp_path):
    proc, calls = _run(tmp_path, "-x", "-q", "tests/layers")
    assert proc.returncode == 0, proc.stderr
    assert calls == [
        "-m ruff check src tests",
        "-m ruff format --check src tests",
        "-m mypy",
        "-m pytest -x -q tests/layers",
    ]
    for step in ("lint", "format", "types", "tests"):
        assert f"[check] {step}: passed" in proc.stdout
    assert "all passed" in proc.stdout


def test_every_step_runs_and_the_failures_are_named(tmp_path):
    proc, calls = _run(tmp_path, mypy=1, pytest=5)
    assert proc.returncode == 1  # the first failed step's status
    assert len(calls) == 4  # the tests ran after the type check failed
    assert "[check] types: FAILED with exit status 1" in proc.stderr
    assert "[check] tests: FAILED with exit status 5" in proc.stderr
    assert "[check] failed: types tests" in proc.stderr
    assert "[check] lint: passed" in proc.stdout
    assert "all passed" not in proc.stdout


def test_a_lint_failure_alone(tmp_path):
    proc, _ = _run(tmp_path, ruff=2)
    # ruff runs twice (lint and format): both fail with the stand-in
    assert proc.returncode == 2
    assert "[check] failed: lint format" in proc.stderr
