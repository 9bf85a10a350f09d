"""A whole night across a secured two-tier pair: `alertdist night --two-tier --secure`.

Two 3-node clusters with no PLAINTEXT listener, each knowing only its own users (upstream the publisher and the
mirror, downstream the mirror, the filters and the archiver), MirrorMaker 2 logged in to each as the mirror, and
the Prefect server behind basic auth; all in a scratch ALERTDIST_HOME on free ports. The night must balance
downstream, and no password may be found in what it leaves behind.
"""

from __future__ import annotations

import json

import pytest

from alertdist.cli.commands.kafka import SECURE_PORT_OFFSET
from alertdist.infra import kafka_local
from tests.test_secure_night import ALERTS, secure_night_run


@pytest.fixture(scope="module")
def two_tier_night(tmp_path_factory):
    home = tmp_path_factory.mktemp("secure-two-tier-night")
    public = kafka_local.free_ports(3)  # the public cluster: ALERTDIST_PUBLIC_KAFKA_PORT + SECURE_PORT_OFFSET..
    with secure_night_run(
        home,
        "--two-tier",
        ALERTDIST_PUBLIC_KAFKA_PORT=str(public - SECURE_PORT_OFFSET),
        ALERTDIST_MIRROR_REST_PORT=str(kafka_local.free_port()),
    ) as (_, done):
        yield home, done


def test_the_secured_two_tier_night_runs_end_to_end_and_balances(two_tier_night):
    home, done = two_tier_night
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert f"{ALERTS} alerts published, {ALERTS} archived (0 duplicates dropped)" in done.stdout
    assert "Two-tier: published to" in done.stdout and f"{ALERTS} alerts mirrored to" in done.stdout
    manifest = json.loads((home / "archive" / "manifests" / "ztf_20231012.json").read_text())
    assert sum(programme["counts"]["written"] for programme in manifest["programmes"].values()) == ALERTS


def test_no_password_is_left_in_the_output_the_mirror_files_or_the_logs(two_tier_night):
    home, done = two_tier_night
    upstream, downstream = home / "kafka" / "secure", home / "kafka-public" / "secure"
    passwords = [p.read_text().strip() for folder in (upstream, downstream) for p in (folder / "secrets").glob("*")]
    # each cluster's admin, broker and controller; the publisher, the mirror, the archiver and three filters
    assert len(passwords) == 3 + 3 + 6
    mirror = home / "mirror"
    places = {"the command's output": done.stdout + done.stderr}
    searched = [
        mirror / "mm2.properties",
        mirror / "mm2.log",
        *upstream.glob("nodes/node-*/server.log"),
        *downstream.glob("nodes/node-*/server.log"),
    ]
    for path in searched:
        places[str(path)] = path.read_bytes().decode("latin-1")
    assert [(where, i) for where, text in places.items() for i, p in enumerate(passwords) if p in text] == []
