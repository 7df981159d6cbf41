#!/usr/bin/env bash
# Installs the test tools if needed, lints (ruff, settings in pyproject.toml), then runs the whole
# test suite (browser tests included). Extra arguments go to pytest, e.g. `scripts/test.sh -m soak`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
echo "==> ruff"
"${PYTHON:-python3}" -m ruff check .
exec "${PYTHON:-python3}" -m pytest "$@"
