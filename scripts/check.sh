#!/usr/bin/env bash
# Every check CI runs (.ci/run, through the README's test command), in this order:
#
#   lint    ruff check src tests
#   format  ruff format --check src tests
#   types   mypy (configured in pyproject.toml: src/rnnx, cache in .mypy_cache)
#   tests   python -m pytest [ARGS]
#
#   bash scripts/setup.sh --dev -- bash scripts/check.sh      # set up, then check all
#   bash scripts/check.sh -x -q tests/layers                  # in an environment with [dev]
#
# Every step runs even when an earlier one failed, so one run shows every problem; each
# says whether it passed and how long it took, the summary names the steps that failed,
# and the exit status is that of the first failed step (0 when all pass).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

py="${PYTHON:-python}"
failed=()
status=0

step() {
  local name="$1"
  shift
  echo "[check] $name: $*"
  local t0=$SECONDS rc=0
  "$@" || rc=$?
  if [[ $rc -eq 0 ]]; then
    echo "[check] $name: passed ($((SECONDS - t0)) s)"
  else
    echo "[check] $name: FAILED with exit status $rc ($((SECONDS - t0)) s): $*" >&2
    failed+=("$name")
    [[ $status -eq 0 ]] && status=$rc
  fi
}

step lint "$py" -m ruff check src tests
step format "$py" -m ruff format --check src tests
step types "$py" -m mypy
step tests "$py" -m pytest "$@"

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "[check] failed: ${failed[*]}" >&2
  exit "$status"
fi
echo "[check] all passed: lint, format, types, tests"
