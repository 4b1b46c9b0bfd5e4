#!/usr/bin/env bash
# Create .venv and install specrag with everything the tests and examples need.
# torch is installed first and pinned, so pip does not pull a multi-GB CUDA build on
# CPU-only machines; set TORCH_SPEC to choose another build (e.g. TORCH_SPEC=torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[all,test]"
