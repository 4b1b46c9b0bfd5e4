#!/usr/bin/env bash
# Lint, format and type checks (fast; CI runs them before the tests). Needs scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
