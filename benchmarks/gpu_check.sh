#!/usr/bin/env bash
# GPU check of the site trainer (single-device plan and 1-GPU DDP, bf16): see
# benchmarks/gpu_check.py. Needs a CUDA machine; not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$PY" benchmarks/gpu_check.py "$@"
