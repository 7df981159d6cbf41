#!/usr/bin/env bash
# Installs the test tools if needed, then runs the whole test suite (browser tests included).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m soak` for the opt-in soak test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
exec "${PYTHON:-python3}" -m pytest "$@"
