#!/usr/bin/env bash
# Set up SelectLens in ./.venv on a fresh machine. Idempotent.
#   bash scripts/setup.sh           # the package
#   bash scripts/setup.sh --test    # the package and its test dependencies
# On a machine without an NVIDIA GPU, torch's CPU build is installed first
# (override with SELECTLENS_TORCH="torch==X.Y.Z" or any pip requirement), so
# the package's torch range does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[[ "${1:-}" == "--test" ]] && extras="[test]"
PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        "${pip[@]}" install "${SELECTLENS_TORCH:-torch>=2.2,<3}"
    else
        "${pip[@]}" install "${SELECTLENS_TORCH:-torch==2.13.0}"
    fi
fi
"${pip[@]}" install -e ".${extras}"
echo "selectlens installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
