"""Exits that tell the truth (issue 13): a run where nothing succeeded fails with the hint that fixes it, inputs
are checked before anything is created, a broker that is down is named with what to do, several nights in one
source must be named, and latency is reported only where the production time is known.

One archive root with two simulated nights (published, closed and archived under a survey of its own) serves
the tests; each runs the `alertdist` command as a user would.
"""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from alertdist.archive import archive_night
from alertdist.cli.main import main as cli
from alertdist.kafka.clients import admin_client
from alertdist.kafka.reachable import any_broker_listening
from alertdist.nights.state import read_night_state
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import publish
from alertdist.publish.sources import SourcePacket, simulated_alerts, tarball_packets

NIGHTS = (dt.date(2023, 10, 12), dt.date(2023, 10, 13))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_nights(kafka_bootstrap, tmp_path_factory):
    """An archive root holding two archived nights of 60 simulated alerts each, and their survey's naming."""
    naming = TopicNaming(survey=f"h{uuid.uuid4().hex[:6]}")
    root = tmp_path_factory.mktemp("two-nights")
    for night in NIGHTS:
        ensure_night_topics(admin_client(kafka_bootstrap), naming, night, TopicSettings(partitions=2))
        alerts = simulated_alerts(60, night=night, seed=night.day)
        packets = (SourcePacket(f"{a.candid}.avro", a.packet, None) for a in alerts)
        assert publish(packets, bootstrap_servers=kafka_bootstrap, naming=naming, night=night).closed
        archive_night(kafka_bootstrap, naming, night, str(root))
    return naming, root


@pytest.fixture
def as_survey(two_nights, kafka_bootstrap, monkeypatch):
    """The CLI, run against the test broker with the archive's survey."""
    naming, _ = two_nights
    monkeypatch.setenv("ALERTDIST_SURVEY", naming.survey)
    return lambda *args: cli(["--bootstrap-servers", kafka_bootstrap, *args])


def _topics(bootstrap: str) -> set[str]:
    return set(admin_client(bootstrap).list_topics(timeout=30).topics)


def test_a_replay_whose_every_packet_is_rejected_fails_with_the_hint_and_leaves_the_night_open(
    two_nights, as_survey, kafka_bootstrap, capsys
):
    naming, root = two_nights
    other = dt.date(2023, 10, 20)
    code = as_survey("replay", str(root), "--archived-night", "20231012", "--night", f"{other:%Y%m%d}", "--quiet")
    err = capsys.readouterr().err
    assert code == 1
    assert "every one of the 60 packet(s) read was rejected (60 wrong-night)" in err
    assert "use --night 20231012" in err and "--any-night" in err
    state = read_night_state(kafka_bootstrap, naming, other)
    assert state is None or not state.closed  # never closed empty


def test_a_missing_source_fails_before_any_topic_is_created(as_survey, kafka_bootstrap, tmp_path, unique, capsys):
    topic = f"never_{unique}"
    assert as_survey("replay", str(tmp_path / "missing.tar.gz"), "--topic", topic, "--quiet") == 1
    assert "missing.tar.gz: no such file or folder" in capsys.readouterr().err
    assert as_survey("publish", "--night", "20231025", "--drop-folder", str(tmp_path / "nowhere")) == 1
    assert "nowhere: no such folder; check the path (nothing was created)" in capsys.readouterr().err
    created = {t for t in _topics(kafka_bootstrap) if t == topic or "_20231025_" in t}
    assert created == set()


def test_an_archive_root_with_two_nights_needs_the_night_named(two_nights, as_survey, unique, capsys):
    _, root = two_nights
    assert as_survey("replay", str(root), "--topic", f"two_{unique}", "--quiet") == 1
    assert "holds 2 nights (20231012, 20231013): name one with --archived-night" in capsys.readouterr().err
    assert as_survey("filter", "batch", "bright_transients", str(root)) == 1
    assert "holds 2 nights" in capsys.readouterr().err
    assert as_survey("filter", "batch", "bright_transients", str(root), "--archived-night", "20231013") == 0
    assert "filter bright_transients: read 60," in capsys.readouterr().out


def test_publishing_a_tarball_reports_no_latency(two_nights, kafka_bootstrap):
    """A member's mtime is when the alert was observed, not when it was produced: no latency from it."""
    naming, root = two_nights
    replica = TopicNaming(survey=f"{naming.survey}t")
    night = NIGHTS[0]
    ensure_night_topics(admin_client(kafka_bootstrap), replica, night, TopicSettings(partitions=1))
    packets = tarball_packets(root / f"{naming.survey}_public_{night:%Y%m%d}.tar.gz")
    result = publish(packets, bootstrap_servers=kafka_bootstrap, naming=replica, night=night)
    assert result.delivered_total > 0 and result.latency_ms == {}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free now, nothing listens on it once the socket is closed


@pytest.mark.parametrize(
    "args",
    [
        ["topics", "create", "--night", "20231012"],
        ["publish", "--night", "20231012", "--simulate", "5"],
        ["archive", "--night", "20231012"],
        ["replay", "x.tar.gz", "--topic", "t"],
        ["filter", "run", "bright_transients", "--night", "20231012"],
    ],
)
def test_a_broker_that_is_down_is_named_with_what_to_do(args, capsys):
    address = f"127.0.0.1:{_closed_port()}"
    assert cli(["--bootstrap-servers", address, *args]) == 1
    err = capsys.readouterr().err
    assert f"no Kafka broker answers at {address}" in err
    assert "alertdist kafka start" in err and "ALERTDIST_BOOTSTRAP_SERVERS" in err
    assert "KafkaError{" not in err and "Connection refused" not in err


def test_make_status_fails_when_a_service_is_down(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ALERTDIST_KAFKA_PORT": str(_closed_port()), "HOME": str(tmp_path)}
    env["ALERTDIST_PREFECT_PORT"] = str(_closed_port())
    done = subprocess.run(["make", "-s", "status"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "down" in done.stdout


def test_the_archive_command_shows_duplicates_with_different_bytes(kafka_bootstrap, monkeypatch, tmp_path, capsys):
    from alertdist.avro import codec
    from tests.archive_support import publish_night

    naming = TopicNaming(survey=f"d{uuid.uuid4().hex[:6]}")
    alerts = list(simulated_alerts(20, night=NIGHTS[0], seed=5))
    twin = next(a for a in alerts if a.programid == 1)
    record = codec.decode(twin.packet)
    record["candidate"]["magpsf"] += 0.5  # the same candid, other bytes
    packets = [a.packet for a in alerts if a.programid == 1] + [codec.encode(record)]
    publish_night(kafka_bootstrap, naming, NIGHTS[0], {1: packets}, partitions=1)
    monkeypatch.setenv("ALERTDIST_SURVEY", naming.survey)
    code = cli(
        ["--bootstrap-servers", kafka_bootstrap, "archive", "--night", "20231012", "--dest", str(tmp_path), "--quiet"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"1 duplicate candid(s) with DIFFERENT bytes (first kept, others dropped): {twin.candid}" in captured.err
    assert "duplicates 1" in captured.out


def test_the_night_summary_shows_duplicates_with_different_bytes_readable_sizes_and_short_hashes():
    from alertdist.nights.report import checksums_markdown, file_rows, plot_top, summary_rows

    archived = {1: {"read": 3, "written": 2, "duplicates": 1, "conflicting_duplicates": 1}}
    rows = summary_rows({"delivered": {"1": 3}}, {}, archived, {1: "public"})
    assert rows[0]["duplicates dropped"] == 1 and rows[0]["of which different bytes"] == 1
    files = [{"programme": "public", "file": "a.tar.gz", "bytes": 1_486_080, "sha256": "9" * 64, "md5": "5" * 32}]
    assert file_rows(files) == [
        {"programme": "public", "file": "a.tar.gz", "size": "1.5 MB", "sha256": "9" * 12 + "…", "md5": "5" * 12 + "…"}
    ]
    assert "9" * 64 + "  a.tar.gz" in checksums_markdown(files, "t") and "1,486,080  a.tar.gz" in checksums_markdown(
        files, "t"
    )
    assert plot_top([3, 40, 12]) >= 40 * 1.2  # headroom above the tallest bar


def test_the_broker_check_needs_only_one_listening_address(kafka_bootstrap):
    closed = f"127.0.0.1:{_closed_port()}"
    assert any_broker_listening(f"{closed},{kafka_bootstrap}")
    assert any_broker_listening(f"PLAINTEXT://{kafka_bootstrap}")
    assert not any_broker_listening(closed)
    assert not any_broker_listening("not-an-address")
