#!/usr/bin/env bash
# Runs a command (the test suite) with the services the tests need, and stops them afterwards:
# a real Kafka broker on free loopback ports in a scratch folder, announced as ALERTDIST_TEST_BOOTSTRAP.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

scratch=$(mktemp -d "${TMPDIR:-/tmp}/alertdist-test-XXXXXX")
port=$($BIN/python - <<'PY'
import socket
for _ in range(200):
    with socket.socket() as a:
        a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    if p + 10000 >= 65535:
        continue
    try:
        with socket.socket() as b:
            b.bind(("127.0.0.1", p + 10000))
        print(p); break
    except OSError:
        pass
PY
)

stop_services() {
  $BIN/alertdist kafka stop --port "$port" --data-dir "$scratch/kafka" >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap stop_services EXIT

echo "Starting a test Kafka broker on 127.0.0.1:$port ..."
$BIN/alertdist kafka start --port "$port" --data-dir "$scratch/kafka" >/dev/null
export ALERTDIST_TEST_BOOTSTRAP="127.0.0.1:$port"

set +e
"$@"
status=$?
set -e
exit $status
