#!/usr/bin/env bash
# Installs what portrait-ha needs on a fresh machine; quick and quiet when it is all there.
#   scripts/setup.sh         runtime: Python packages (CPU torch), then the offline demo model
#   scripts/setup.sh --dev   also test tools: pytest, Playwright's Python API, Debian chromium, and (as
#                            root) Debian iptables and keepalived for the host tests, Debian postgresql
#                            (PostgreSQL 15) for the job store's tests, Debian prometheus (promtool) for the alert rules
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
requirements=requirements.txt
[ "${1:-}" = "--dev" ] && requirements=requirements-dev.txt

if ! "$PYTHON" scripts/check_requirements.py "$requirements" 2>/dev/null; then
  echo "==> installing Python packages from $requirements"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check -r "$requirements"
fi

if [ "${1:-}" = "--dev" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing Debian chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

if [ "${1:-}" = "--dev" ] && [ "$(id -u)" = 0 ] && ! { command -v iptables && command -v keepalived; } >/dev/null 2>&1
then
  echo "==> installing Debian iptables and keepalived for the network-namespace host tests (pytest -m hosts)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends iptables keepalived >/dev/null
fi

if [ "${1:-}" = "--dev" ] && [ "$(id -u)" = 0 ] && [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  echo "==> installing Debian postgresql for the job store's tests (a server per test session, never the system's)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

if [ "${1:-}" = "--dev" ] && [ "$(id -u)" = 0 ] && ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing Debian prometheus for the alert rules' tests (promtool, and a server per test)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

echo "==> offline demo model"
"$PYTHON" -m webui.worker.pipelines.demo_build
