#!/usr/bin/env bash
# Runs a command (the test suite) with the services the tests need, and stops them afterwards:
# a real Kafka broker on free loopback ports in a scratch folder, announced as ALERTDIST_TEST_BOOTSTRAP.
# The ports are picked as tests/ and bench/ pick theirs (kafka_local.start_on_free_ports: below the kernel's
# ephemeral range, retried on new ports if another process takes one first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

scratch=$(mktemp -d "${TMPDIR:-/tmp}/alertdist-test-XXXXXX")
stop_services() {
  $BIN/python -m alertdist.infra.kafka_local stop-under "$scratch" >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap stop_services EXIT

libs=$($BIN/python -c 'from alertdist.settings import Settings; print(Settings.load().kafka_home / "libs")')
echo "Starting a test Kafka broker on free ports ..."
bootstrap=$($BIN/python -m alertdist.infra.kafka_local start-on-free-ports "$scratch/kafka" --libs "$libs" 2>"$scratch/start.log") || {
  cat "$scratch/start.log" >&2
  exit 1
}
echo "Test Kafka broker at $bootstrap"
export ALERTDIST_TEST_BOOTSTRAP="$bootstrap"

set +e
"$@"
status=$?
set -e
exit $status
