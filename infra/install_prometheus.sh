#!/usr/bin/env bash
# Installs Debian's prometheus package (the server and promtool) for `alertdist prometheus start` and the rule
# tests. It installs a systemd unit we never use (the project starts its own server, data under .alertdist/).
APT_OPTIONS=--no-install-recommends exec bash "$(dirname "$0")/install_debian.sh" prometheus "Monitoring" prometheus promtool
