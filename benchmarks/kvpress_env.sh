#!/usr/bin/env bash
# Build kvpress's own environment (.venv-kvpress) beside specrag's, for the side-by-side KV
# rows (docs/kvpress.md). kvpress 0.5.5 needs transformers<5.3, so it cannot share .venv.
#
#   bash benchmarks/kvpress_env.sh            # CPU torch, as on the shared machines
#
# Pins are the versions the committed kvpress rows ran with; the worker it runs,
# src/specrag/bench/kvpress_worker.py, imports only torch, transformers and kvpress.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${KVPRESS_VENV:-.venv-kvpress}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet torch==2.13.0 transformers==5.2.0 kvpress==0.5.5
"$VENV/bin/python" -c "import kvpress, transformers, torch; print('kvpress ready:', transformers.__version__, torch.__version__)"
