#!/usr/bin/env bash
# Installs Debian's prometheus package (the server and promtool) for `alertdist prometheus start` and the rule
# tests. Why Debian's: signed by the distribution's archive and updated with it, no download script or checksum
# to keep; it installs a systemd unit we never use (the project starts its own server, data under .alertdist/).
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Monitoring needs Prometheus: install your distribution's 'prometheus' package (Debian: apt-get install prometheus)." >&2
  exit 1
fi
echo "Installing Debian's prometheus (server and promtool; first time only)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
