#!/usr/bin/env bash
# Install CargoScan with its test dependencies, make sure PostgreSQL and Redis are up on
# 127.0.0.1, and run the test suite. Extra arguments go to pytest.
# Usage: bash deploy/test.sh [pytest arguments]
set -euo pipefail

cd "$(dirname "$0")/.."
source deploy/venv.sh
ensure_venv "[test]"
bash deploy/services.sh

.venv/bin/python -m pytest "$@"
