#!/usr/bin/env bash
# Installs Debian's chromium for the Prefect UI test (Playwright drives it; it never downloads a browser).
exec bash "$(dirname "$0")/install_debian.sh" chromium "The UI test" chromium
