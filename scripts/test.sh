#!/usr/bin/env bash
# Installs the test tools if needed, lints (ruff, settings in pyproject.toml), then runs the whole
# test suite (browser tests included). Extra arguments go to pytest, e.g. `scripts/test.sh -m soak`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
echo "==> ruff"
"${PYTHON:-python3}" -m ruff check .
# Three test processes (PYTEST_WORKERS), one module each at a time: most tests wait on processes they started,
# so more modules beside them cut the suite's time on 2 cores (about 520 s with three, 590 s with two). They
# take the modules longest first (tests/module_seconds.json), not by their count of tests. PYTEST_WORKERS=0 runs
# it in one process.
exec "${PYTHON:-python3}" -m pytest -n "${PYTEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder "$@"
