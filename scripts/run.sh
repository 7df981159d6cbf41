#!/usr/bin/env bash
# Starts the whole portrait-ha cluster (HAProxy + sidecar + nodes) on the offline demo model.
# Extra arguments go to launch.py (see `python3 launch.py --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec "${PYTHON:-python3}" launch.py "$@"
