#!/usr/bin/env bash
# The GPU checks, as one short script for a lent GPU machine (a bare one: it installs what
# it needs). Writes its figures to $OUT (or ./gpu-out). Never needed by CI.
#
#   bash benchmarks/gpu_check.sh
#
# 1. the CUDA tests (tests/unit/test_cuda.py) and the batching / prefix tests on the GPU;
# 2. compress_batch requests/s at batch 1/4/8/16, 2k and 8k tokens, draft in bf16 with sdpa;
# 3. follow-up cost with prefix reuse; peak GPU memory of each.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
python3 -m venv .venv-gpu
.venv-gpu/bin/pip install --quiet torch==2.13.0   # the CUDA build from PyPI
.venv-gpu/bin/pip install --quiet -e ".[test]"
export SPECRAG_HOME="${SPECRAG_HOME:-$PWD/.specrag-home}"
.venv-gpu/bin/python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
.venv-gpu/bin/python -m pytest -q tests/unit/test_cuda.py tests/unit/test_batching.py tests/unit/test_prefix_cache.py \
  2>&1 | tail -5 | tee "$OUT/tests.txt"
for length in 2048 8192; do
  .venv-gpu/bin/python benchmarks/specpc_batch.py --device cuda --task niah_single --requests 32 --length "$length" \
    --sizes 1,4,8,16 --repeats 3 | tee "$OUT/batch-$length.md"
done
.venv-gpu/bin/python benchmarks/specpc_prefix.py --lengths 2048,8192,16384 --items 3 --turns 0 \
  | tee "$OUT/prefix.md"
