"""Two-tier distribution: a real MirrorMaker 2 (dedicated mode, exactly-once source support) copies the
producing cluster's night to the public cluster, names and bytes unchanged, and the night closes downstream."""

from __future__ import annotations

import datetime as dt
import json
import re
import time

import pytest

from alertdist.cli.main import main as cli
from alertdist.jobs import mirror
from alertdist.jobs.publish import publish_night
from alertdist.kafka.clients import admin_client, producer
from alertdist.mirror import process
from alertdist.mirror.config import MirrorSpec, mirror_properties, mirrored_topics
from alertdist.nights.dates import format_night
from alertdist.nights.state import CLOSED, MIRRORED, NightState, mark_night, read_night_state
from alertdist.nights.topics import MirrorNames, TopicSettings
from alertdist.publish.sources import SourceSpec
from tests.mirror_support import contents, running_mirror, two_tier_settings

NIGHT = dt.date(2023, 10, 12)
TOPICS = TopicSettings(partitions=3)


@pytest.fixture(scope="module")
def settings(two_clusters, tmp_path_factory):
    return two_tier_settings(two_clusters, tmp_path_factory.mktemp("mirror-home"))


@pytest.fixture(scope="module")
def mirrored_night(settings):
    """A simulated night published upstream (plus one rejected packet), mirrored, and closed downstream."""
    with running_mirror(settings):
        published = publish_night(settings, NIGHT, SourceSpec.parse("simulate:600:3"), topics=TOPICS)
        bad = producer(settings.bootstrap_servers)
        bad.produce(settings.naming.rejected_topic(NIGHT), b"not an alert")
        assert bad.flush(30) == 0
        mirror.wait_for_mirrored_topics(settings, NIGHT)
        state = mirror.close_night_downstream(settings, NIGHT, timeout=120)
        yield published, state


def test_the_properties_mirror_only_programme_topics_and_nights_under_their_own_names(settings):
    pattern = mirrored_topics(settings.naming)
    for topic in [*settings.naming.programme_topics(NIGHT).values(), settings.naming.nights_topic]:
        assert re.fullmatch(pattern, topic)
    assert not re.fullmatch(pattern, settings.naming.rejected_topic(NIGHT))
    assert not re.fullmatch(pattern, settings.naming.filter_output_topic("ztf_20231012_programid1", "bright"))
    props = mirror_properties(MirrorSpec("up:1", "down:2", pattern, 8083))
    assert props["replication.policy.class"].endswith("IdentityReplicationPolicy")
    assert props["public.exactly.once.source.support"] == "enabled"
    assert props["dedicated.mode.enable.internal.rest"] == "true"
    assert props["sync.topic.configs.enabled"] == "true"


def test_alerts_arrive_downstream_byte_identical_exactly_once(settings, mirrored_night):
    published, _ = mirrored_night
    upstream = contents(settings.bootstrap_servers, settings, NIGHT)
    downstream = contents(settings.public_bootstrap_servers, settings, NIGHT)
    assert sum(published.delivered.values()) == 600
    assert sum(sum(c.values()) for c in downstream.values()) == 600
    for topic, messages in upstream.items():
        assert downstream[topic] == messages  # same partition, key, bytes and headers, each exactly once
        assert max(messages.values(), default=1) == 1


def test_topic_names_and_settings_follow_and_rejected_stays_home(settings, mirrored_night):
    down = admin_client(settings.public_bootstrap_servers)
    topics = down.list_topics(timeout=10).topics
    for topic in settings.naming.programme_topics(NIGHT).values():
        assert len(topics[topic].partitions) == TOPICS.partitions
    assert settings.naming.rejected_topic(NIGHT) not in topics
    assert (
        settings.naming.rejected_topic(NIGHT) in admin_client(settings.bootstrap_servers).list_topics(timeout=10).topics
    )
    from confluent_kafka.admin import ConfigResource

    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.naming.programme_topic(NIGHT, 1))
    config = down.describe_configs([resource])[resource].result()
    assert config["compression.type"].value == TOPICS.compression
    assert config["retention.ms"].value == str(TOPICS.retention_ms)


def test_a_setting_changed_upstream_follows_downstream_while_mirroring(settings, mirrored_night):
    """The periodic config sync works. (Kafka 4.1.1's MirrorMaker logs "Could not alter configuration of topic"
    after every sync, successful ones included, with no exception: KAFKA-20017, fixed in Kafka 4.3.0.)"""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    topic = settings.naming.programme_topic(NIGHT, 2)
    wanted = str(7 * 10**11)
    change = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[ConfigEntry("retention.bytes", wanted, incremental_operation=AlterConfigOpType.SET)],
    )
    up = admin_client(settings.bootstrap_servers)
    up.incremental_alter_configs([change])[change].result()
    down, resource = admin_client(settings.public_bootstrap_servers), ConfigResource(ConfigResource.Type.TOPIC, topic)
    deadline, seen = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        seen = down.describe_configs([resource])[resource].result()["retention.bytes"].value
        if seen == wanted:
            break
        time.sleep(1)
    assert seen == wanted


def test_the_night_closes_downstream_with_downstream_offsets(settings, mirrored_night):
    _published, state = mirrored_night
    upstream = read_night_state(settings.bootstrap_servers, settings.naming, NIGHT)
    assert upstream.state == CLOSED and state.state == CLOSED
    assert state.cluster != upstream.cluster
    assert state.total_messages() == upstream.total_messages() == 600
    # transaction markers: the downstream offsets run past the counts, so the upstream ones would be wrong there
    assert sum(sum(p.values()) for p in state.end_offsets.values()) > 600
    assert read_night_state(settings.public_bootstrap_servers, settings.naming, NIGHT) == state


def test_a_closing_record_mirrored_from_upstream_never_reads_as_closed_downstream(settings, mirrored_night):
    other = dt.date(2023, 10, 13)
    mark_night(settings.bootstrap_servers, settings.naming, NightState(format_night(other), CLOSED, {"t": {0: 5}}))
    deadline = time.monotonic() + 60
    while (seen := read_night_state(settings.public_bootstrap_servers, settings.naming, other)) is None:
        assert time.monotonic() < deadline, "the nights topic is not mirrored"
        time.sleep(0.5)
    assert seen.state == MIRRORED and not seen.closed and seen.end_offsets == {"t": {0: 5}}
    assert read_night_state(settings.bootstrap_servers, settings.naming, other).closed


def test_an_aborted_night_stays_aborted_downstream(settings, mirrored_night):
    """Upstream aborted (its publishing failed): mirrored, the record reads as mirrored, and the downstream
    record the mirror's close writes is aborted too, never closed (the archive would take it as whole)."""
    other = dt.date(2023, 10, 14)
    mark_night(settings.bootstrap_servers, settings.naming, NightState(f"{other:%Y%m%d}", "aborted", {}))
    state = mirror.close_night_downstream(settings, other, timeout=120)
    assert state.state == "aborted" and state.ended and not state.closed
    assert read_night_state(settings.public_bootstrap_servers, settings.naming, other) == state


def test_the_cli_starts_reports_and_stops_the_mirror(settings, mirrored_night, monkeypatch, capsys):
    """Last in this module: it stops the module's mirror."""
    for name in ("home", "bootstrap_servers", "public_bootstrap_servers", "mirror_rest_port"):
        monkeypatch.setenv(f"ALERTDIST_{name.upper()}", str(getattr(settings, name)))
    assert cli(["mirror", "start"]) == 0  # already running: reused
    assert cli(["mirror", "status"]) == 0
    out = capsys.readouterr().out
    assert f"up (pid {process.status(mirror.mirror_home(settings)).pid}" in out
    assert "connector MirrorSourceConnector: RUNNING" in out
    assert "task MirrorSourceConnector-0: RUNNING" in out
    # a task failing as Connect reports it (status topic, newest generation); an older generation's is a task
    # since replaced, not shown
    units = mirror.mirror_units_now(settings)
    newest = max(u.generation for u in units if u.kind == "task")
    failure = {
        "state": "FAILED",
        "trace": "org.apache.kafka.common.errors.SaslAuthenticationException: bad login\n\tat x",
    }
    status_topic = MirrorNames().connect_topics[2]
    writer = producer(settings.public_bootstrap_servers, partitioner="murmur2_random")  # as Connect (Java) keys
    for key, generation in (
        (b"status-task-MirrorSourceConnector-1", newest),
        (b"status-task-MirrorSourceConnector-7", newest - 1),
    ):
        writer.produce(status_topic, json.dumps({**failure, "generation": generation}).encode(), key)
    assert writer.flush(30) == 0
    assert cli(["mirror", "status"]) == 3
    out = capsys.readouterr().out
    assert (
        "task MirrorSourceConnector-1: FAILED: org.apache.kafka.common.errors.SaslAuthenticationException: bad login"
        in out
    )
    assert "MirrorSourceConnector-7" not in out and "1 failed" in out
    assert cli(["mirror", "stop"]) == 0
    assert cli(["mirror", "status"]) == 3
    assert "MirrorMaker 2: down" in capsys.readouterr().out
