#!/usr/bin/env bash
# The GPU check: on a CUDA machine, the demo in bf16 and fp16, a 2-process NCCL run (with 2 GPUs), the loss at the
# paper's batch on the GPU, and a training-step benchmark at 64 x 16 with bert-base. Without CUDA it prints
# "skipped: no CUDA" and exits 0. Usage: tests/gpu/check.sh [--quick]   (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" tests/gpu/check.py "$@"
