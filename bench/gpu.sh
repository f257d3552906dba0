#!/usr/bin/env bash
# Measure the embedder on a CUDA GPU: images/s and the share of the compute floor at several
# batch sizes, agreement of each precision and layout option with float32 on the CPU, and
# JPEG decoding on the GPU against the CPU. Then run the tests marked gpu.
# Usage: bash bench/gpu.sh [--quick] [--no-compile] [--peak-tflops N]
# Exits 1 with a message where CUDA is not available, 3 when an option disagrees with float32.
set -euo pipefail

cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
if [ ! -x "$python" ]; then
    echo "bench/gpu.sh: $python not found; create the virtual environment first (bash deploy/quickstart.sh)" >&2
    exit 1
fi

if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu.sh: CUDA is not available (no NVIDIA GPU, or a CPU-only torch build); run it on a machine with a GPU" >&2
    exit 1
fi

"$python" bench/gpu.py "$@"
"$python" -m pytest -m gpu -q tests/models/test_inference.py
