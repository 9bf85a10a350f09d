#!/usr/bin/env bash
# Installs a Debian package when a command it provides is missing: the one way this project installs a system
# tool. Why Debian's: signed by the distribution's archive and updated with it, no download script or checksum to
# keep. Without root or apt-get, it says what to install and fails.
# Usage: install_debian.sh PACKAGE "WHO NEEDS IT" COMMAND... (extra apt-get options in APT_OPTIONS)
set -euo pipefail
package=$1
needed_by=$2
shift 2
missing=0
for command in "$@"; do
  command -v "$command" >/dev/null 2>&1 || missing=1
done
if [ "$missing" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$needed_by needs $package: install your distribution's '$package' package (Debian: apt-get install $package)." >&2
  exit 1
fi
echo "Installing Debian's $package for $needed_by (first time only)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# shellcheck disable=SC2086  # APT_OPTIONS is a list of options
apt-get install -y -qq ${APT_OPTIONS:-} "$package" >/dev/null
