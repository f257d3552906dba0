#!/usr/bin/env bash
# Create the virtual environment, install CargoScan and run the demo on synthetic scans.
# Usage: bash deploy/quickstart.sh [demo output folder]
set -euo pipefail

cd "$(dirname "$0")/.."
source deploy/venv.sh
ensure_venv ""

out="${1:-demo-output}"
echo "running: cargoscan demo --out $out"
.venv/bin/cargoscan demo --out "$out"
