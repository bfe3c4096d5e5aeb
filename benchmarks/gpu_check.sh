#!/usr/bin/env bash
# GPU check of the site trainer (single-device plan and 1-GPU DDP, bf16): see
# benchmarks/gpu_check.py; then the language-model task (LoRA on a bf16 or float32 base,
# full fine-tuning; tokens/s and peak GPU memory): see benchmarks/gpu_llm.py.
# Needs a CUDA machine; not part of CI. Both take --device cpu (a dry run) and --steps N.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" benchmarks/gpu_check.py "$@"
exec "$PY" benchmarks/gpu_llm.py "$@"
