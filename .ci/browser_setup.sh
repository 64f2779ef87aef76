#!/usr/bin/env bash
# Installs what tests/app/test_browser.py needs: Debian's headless Chromium and the Playwright
# Python package (its own browser download is skipped; the test uses /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export DEBIAN_FRONTEND=noninteractive
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core
fi
"$VENV/bin/python" -m pip install -q "playwright>=1.40"
chromium --version
"$VENV/bin/python" -c "from importlib.metadata import version; print('playwright', version('playwright'))"
