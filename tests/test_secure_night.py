"""A whole night on the secure deployment, as `make night-secure` runs it: `alertdist night --secure`.

A 3-node cluster with no PLAINTEXT listener at all (clients and brokers on SCRAM-SHA-512 over TLS, controllers
on SASL/PLAIN over TLS), every service logged in as its own user, and a Prefect server behind basic auth, all in a
scratch ALERTDIST_HOME on free ports. The night must balance, and no password may be found in what it leaves
behind: the Prefect database, the logs, the artifacts, the command's output, the archive.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from alertdist.cli.commands.kafka import SECURE_PORT_OFFSET
from alertdist.infra import kafka_local, prefect_local
from alertdist.mirror import process
from alertdist.settings import Settings

REPO = Path(__file__).resolve().parents[1]
ALERTS = 300


@contextlib.contextmanager
def secure_night_run(home: Path, *options: str, used_env: dict | None = None, **env_extra: str):
    """`alertdist night --secure *options` in a subprocess with ALERTDIST_HOME ``home`` (the jars linked), on free
    ports; yields (the Prefect server, the finished command). Stops the server, the secured clusters and any
    MirrorMaker 2 it started. ``used_env``: filled with the command's environment."""
    (home / "kafka").mkdir()
    (home / "kafka" / "libs").symlink_to(Settings.load().kafka_home / "libs", target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALERTDIST_", "PREFECT_"))}
    # the secure cluster listens on ALERTDIST_KAFKA_PORT + SECURE_PORT_OFFSET.. (controllers + 10000), its Prefect
    # server on ALERTDIST_PREFECT_PORT + 1: both beside the open ones, which this test never starts
    secure_port, prefect_port = kafka_local.free_ports(3), kafka_local.free_port()
    env.update(
        ALERTDIST_HOME=str(home),
        ALERTDIST_KAFKA_PORT=str(secure_port - SECURE_PORT_OFFSET),
        ALERTDIST_PREFECT_PORT=str(prefect_port - 1),
        **env_extra,
    )
    if used_env is not None:
        used_env.update(env)
    server = prefect_local.PrefectServer(home / "prefect" / "secure", prefect_port, auth=True)
    try:
        yield (
            server,
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "alertdist.cli.main",
                    "night",
                    "--secure",
                    "--alerts",
                    str(ALERTS),
                    *options,
                    "--partitions",
                    "2",
                    "--night",
                    "20231012",
                ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=1500,
            ),
        )
    finally:
        process.stop(process.MirrorHome(home / "mirror", home / "kafka" / "libs"))
        prefect_local.stop(server, log=lambda *_: None)
        for secure in (home / "kafka" / "secure", home / "kafka-public" / "secure"):
            kafka_local.stop_under(secure, log=lambda *_: None)


@pytest.fixture(scope="module")
def secure_night(tmp_path_factory):
    home = tmp_path_factory.mktemp("secure-home")
    with secure_night_run(home) as (server, done):
        yield home, server, done


def _api(server: prefect_local.PrefectServer, path: str, body: dict | None = None, *, auth: bool = True):
    request = urllib.request.Request(
        f"{server.api_url}{path}",
        data=json.dumps(body or {}).encode(),
        headers={"Content-Type": "application/json", **(server.authorization() if auth else {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_secured_night_runs_end_to_end_and_balances(secure_night):
    home, server, done = secure_night
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert f"{ALERTS} alerts published, {ALERTS} archived (0 duplicates dropped)" in done.stdout
    [published] = _api(server, "/artifacts/filter", {"artifacts": {"key": {"any_": ["publish-summary-ztf-20231012"]}}})
    rows = {row["outcome"]: row["packets"] for row in json.loads(published["data"])}
    outcomes = sum(n for outcome, n in rows.items() if outcome.startswith(("delivered", "rejected")))
    assert rows["read"] == outcomes == ALERTS and rows["failed"] == 0  # delivered + rejected = read
    manifest = json.loads((home / "archive" / "manifests" / "ztf_20231012.json").read_text())
    counts = [programme["counts"] for programme in manifest["programmes"].values()]
    assert sum(c["read"] for c in counts) == ALERTS
    assert all(c["read"] == c["written"] + c["duplicates"] + c["rejected"] for c in counts)
    assert sum(c["written"] for c in counts) == ALERTS


def test_the_secure_cluster_has_no_plaintext_listener(secure_night):
    home, _, _done = secure_night
    for node in (1, 2, 3):
        config = (home / "kafka" / "secure" / "nodes" / f"node-{node}" / "server.properties").read_text()
        protocols = next(line for line in config.splitlines() if line.startswith("listener.security.protocol.map="))
        assert protocols == "listener.security.protocol.map=SASL:SASL_SSL,CONTROLLER:SASL_SSL"
        assert "PLAINTEXT" not in config.replace("SASL_SSL", "")


def test_no_password_is_left_in_the_database_logs_artifacts_or_archive(secure_night):
    home, server, done = secure_night
    passwords = [p.read_text().strip() for p in (home / "kafka" / "secure" / "secrets").glob("*.password")]
    assert len(passwords) == 9  # admin, broker, controller, publisher, archiver, replay, three filters
    passwords.append(server.auth_string().split(":", 1)[1])
    artifacts = _api(server, "/artifacts/filter", {"limit": 200})
    runs = _api(server, "/flow_runs/filter", {"limit": 200})
    assert len(artifacts) >= 5 and len(runs) >= 6  # the night, topics, publish, 3 filters, archive
    places = {
        "the command's output": done.stdout + done.stderr,
        "the artifacts": json.dumps(artifacts),
        "the flow runs and their parameters": json.dumps(runs),
    }
    searched = [
        *server.home.glob("prefect.db*"),
        server.log_file,
        *(home / "kafka" / "secure" / "nodes").glob("node-*/server.log"),
        *(home / "archive" / "manifests").glob("*.json"),
        home / "archive" / "MD5SUMS",
    ]
    assert any(p.name == "prefect.db" for p in searched)
    for path in searched:
        places[str(path)] = path.read_bytes().decode("latin-1")
    leaks = [(where, i) for where, text in places.items() for i, p in enumerate(passwords) if p in text]
    assert leaks == []


def test_the_prefect_api_refuses_requests_without_its_credentials(secure_night):
    _, server, _ = secure_night
    with pytest.raises(urllib.error.HTTPError) as refused:
        _api(server, "/flow_runs/count", auth=False)
    assert refused.value.code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:not-the-password").decode()}
    request = urllib.request.Request(f"{server.api_url}/flow_runs/count", data=b"{}", headers=wrong, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401
    assert _api(server, "/flow_runs/count") >= 6
