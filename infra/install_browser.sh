#!/usr/bin/env bash
# Installs Debian's chromium for the Prefect UI test (Playwright drives it; it never downloads a browser).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "The UI test needs Chromium: install your distribution's 'chromium' package (Debian: apt-get install chromium)." >&2
  exit 1
fi
echo "Installing Debian's chromium for the UI test (first time only)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium >/dev/null
