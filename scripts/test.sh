#!/usr/bin/env bash
# Installs the test tools if needed, lints (ruff, settings in pyproject.toml), then runs the whole
# test suite (browser tests included). Extra arguments go to pytest, e.g. `scripts/test.sh -m soak`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
echo "==> ruff"
"${PYTHON:-python3}" -m ruff check .
# Two test processes (PYTEST_WORKERS), one module each at a time: most tests wait on processes they started,
# so a second module beside them cuts the suite's time on 2 cores. They take the modules longest first
# (tests/module_seconds.json), not by their count of tests. PYTEST_WORKERS=0 runs it in one process. Three
# were faster (514-542 s against 586-604 s) but two of three runs failed a page test under that load.
exec "${PYTHON:-python3}" -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
