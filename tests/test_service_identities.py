"""The system's own services on a cluster with no PLAINTEXT listener: each logs in as itself and may do only its part.

One secure-only node (SCRAM-SHA-512 over TLS for clients and brokers, no PLAINTEXT anywhere) is started for the
module; the admin (a super user) registers the services and opens a night, as `topics-at-dusk` does. Every
client below is built the services' way, from `Settings.kafka(service)`.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from alertdist.infra import kafka_local
from alertdist.kafka.clients import Brokers, admin_client, producer
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.security import SecurityError, User, filter_service, secure_night, service_user
from alertdist.settings import Settings, login_variable
from alertdist.users import add_user, set_password
from tests.kafka_support import read_as

NIGHT = dt.date(2023, 10, 12)
PASSWORD = "service password 0123"
SERVICES = ["publisher", "archiver", "replay", filter_service("bright"), filter_service("faint")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    libs = Settings.load().kafka_home / "libs"
    folder = tmp_path_factory.mktemp("secure-only")
    cluster = kafka_local.start_on_free_ports(folder, libs=libs, security="secure_only", log=lambda *_: None)
    try:
        yield cluster
    finally:
        kafka_local.stop_under(folder, log=lambda *_: None)


@pytest.fixture(scope="module")
def night(cluster):
    """A survey whose services are registered and whose night is open (topics + ACLs), one alert per programme."""
    naming = TopicNaming(survey="sec")
    admin = Brokers(cluster.bootstrap_servers, cluster.admin_config)
    for service in SERVICES:
        add_user(admin, naming, service_user(service), PASSWORD)
    ensure_night_topics(admin_client(admin), naming, NIGHT, TopicSettings(partitions=1))
    secure_night(admin, naming, NIGHT)
    settings = Settings.load(
        bootstrap_servers=cluster.bootstrap_servers,
        survey=naming.survey,
        kafka_ca=cluster.ca_location,
        kafka_logins={s: {"password": PASSWORD} for s in SERVICES},
    )
    _write(settings.kafka("publisher"), list(naming.programme_topics(NIGHT).values()))
    return settings


def _write(kafka: str, topics: list[str], *, idempotent: bool = True) -> list[str]:
    """Produce one message per topic; return the names of the errors of the refused ones."""
    refusals = []
    p = producer(kafka, **{"enable.idempotence": idempotent, "message.timeout.ms": 10000})
    for topic in topics:
        p.produce(topic, value=topic.encode(), on_delivery=lambda err, _: err and refusals.append(err.name()))
    assert p.flush(20) == 0
    return refusals


def _refusal(call) -> str:
    with pytest.raises(KafkaException) as refused:
        call().result()
    return refused.value.args[0].name()


def test_there_is_no_plaintext_listener(cluster):
    """Each client port speaks TLS only: a PLAINTEXT client gets no metadata at all."""
    plain = admin_client(cluster.bootstrap_servers, **{"socket.timeout.ms": 3000})
    with pytest.raises(KafkaException):
        plain.list_topics(timeout=5)
    assert "PLAINTEXT://" not in (cluster.node_dir(1) / "server.properties").read_text()


def test_publisher_writes_its_topics_but_cannot_create_delete_or_read(night):
    kafka, naming = night.kafka("publisher"), night.naming
    assert _write(kafka, [naming.rejected_topic(NIGHT), naming.programme_topic(NIGHT, 2)]) == []
    admin = admin_client(kafka)
    new = NewTopic(f"{naming.survey}_{NIGHT:%Y%m%d}_programid4", num_partitions=1, replication_factor=1)
    assert _refusal(lambda: admin.create_topics([new])[new.topic]) == "TOPIC_AUTHORIZATION_FAILED"
    doomed = naming.programme_topic(NIGHT, 1)
    assert _refusal(lambda: admin.delete_topics([doomed])[doomed]) == "TOPIC_AUTHORIZATION_FAILED"
    partnership = naming.programme_topic(NIGHT, 2)
    values, errors = read_as(kafka, partnership, None)
    assert values == [] and "TOPIC_AUTHORIZATION_FAILED" in errors
    assert read_as(kafka, partnership, "publisher-reader") == ([], {"GROUP_AUTHORIZATION_FAILED"})


def test_a_filter_writes_its_own_outputs_but_not_another_filters(night):
    naming = night.naming
    source = naming.programme_topic(NIGHT, 1)
    bright, faint = night.kafka(filter_service("bright")), night.kafka(filter_service("faint"))
    mine, theirs = naming.filter_output_topic(source, "bright"), naming.filter_output_topic(source, "faint")
    # a filter creates its own outputs when the night starts (filters.live)
    for kafka, topic in [(bright, mine), (bright, naming.filter_errors_topic(NIGHT, "bright")), (faint, theirs)]:
        admin = admin_client(kafka)
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result()
    admin = admin_client(bright)
    new = NewTopic(naming.filter_output_topic(source, "faint2"), num_partitions=1, replication_factor=1)
    assert _refusal(lambda: admin.create_topics([new])[new.topic]) == "TOPIC_AUTHORIZATION_FAILED"
    group = naming.filter_group(NIGHT, "bright")
    assert read_as(bright, source, group) == ([source.encode()], set())
    assert _write(bright, [mine, naming.filter_errors_topic(NIGHT, "bright")], idempotent=False) == []
    assert _write(bright, [theirs, source], idempotent=False) == ["TOPIC_AUTHORIZATION_FAILED"] * 2
    assert read_as(bright, source, naming.filter_group(NIGHT, "faint")) == ([], {"GROUP_AUTHORIZATION_FAILED"})


def test_the_archiver_reads_but_cannot_write_anything(night):
    kafka, naming = night.kafka("archiver"), night.naming
    topic = naming.programme_topic(NIGHT, 3)
    assert read_as(kafka, topic, f"alertdist-archive-{topic}") == ([topic.encode()], set())
    everything = [*naming.programme_topics(NIGHT).values(), naming.rejected_topic(NIGHT), naming.nights_topic]
    assert _write(kafka, everything, idempotent=False) == ["TOPIC_AUTHORIZATION_FAILED"] * len(everything)
    with pytest.raises(KafkaException, match=r"CLUSTER_AUTHORIZATION_FAILED|Cluster authorization"):
        _write(kafka, [topic])  # not even a producer id: it has no IDEMPOTENT_WRITE


def test_users_passwd_changes_a_password_without_a_restart(night, cluster):
    topic = night.naming.programme_topic(NIGHT, 1)
    group = f"alertdist-archive-{topic}"
    pid = kafka_local.status(cluster)[0].pid
    env = {
        **os.environ,
        "ALERTDIST_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
        "ALERTDIST_KAFKA_CA": str(cluster.ca_location),
        login_variable("admin"): cluster.password("admin"),
    }
    changed = subprocess.run(
        [sys.executable, "-m", "alertdist.cli.main", "users", "passwd", "archiver", "--password-stdin"],
        input="a brand new password\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert changed.returncode == 0, changed.stderr
    assert "a brand new password" not in changed.stdout + changed.stderr
    renewed = Settings.load(
        bootstrap_servers=night.bootstrap_servers,
        survey=night.survey,
        kafka_ca=night.kafka_ca,
        kafka_logins={"archiver": {"password": "a brand new password"}},
    )
    assert read_as(renewed.kafka("archiver"), topic, group) == ([topic.encode()], set())
    old_values, old_errors = read_as(night.kafka("archiver"), topic, group)
    assert old_values == [] and "_AUTHENTICATION" in old_errors
    assert kafka_local.status(cluster)[0].pid == pid  # the same broker process throughout


def test_passwd_refuses_an_unknown_user(cluster):
    admin = Brokers(cluster.bootstrap_servers, cluster.admin_config)
    with pytest.raises(SecurityError, match="no credential to change"):
        set_password(admin, "nobody-here", "long enough password")


def test_the_readmes_consumer_configuration_reads_as_a_public_user(night, cluster):
    """The README's confluent-kafka example, run as written but for the address, CA and password."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("A public user's consumer", 1)[1].split("\n\n", 1)[1].split("\n\nand the same with kcat")[0]
    example = textwrap.dedent(block)
    admin = Brokers(cluster.bootstrap_servers, cluster.admin_config)
    add_user(admin, night.naming, User("alice", "public"), PASSWORD)
    topic = night.naming.programme_topic(NIGHT, 1)
    code = (
        example.replace("kafka.example.org:9093", cluster.bootstrap_servers.split(",")[0])
        .replace('"ca.pem"', repr(str(cluster.ca_location)))
        .replace('"..."', repr(PASSWORD))
        .replace("ztf_20231012_programid1", topic)
    )
    scope: dict = {}
    exec(code, scope)
    consumer = scope["consumer"]
    try:
        deadline = time.monotonic() + 30
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
        assert msg is not None and msg.error() is None and msg.value() == topic.encode()
    finally:
        consumer.close()


@pytest.mark.parametrize("name", ["admin", "broker", "controller", "ANONYMOUS"])
def test_no_user_may_take_a_super_users_name(name):
    """A SCRAM user named like a super user would be one: `users add` refuses the names before anything runs."""
    with pytest.raises(SecurityError, match="not allowed"):
        User(name, "public")


def test_a_filters_user_names_its_filter_and_only_a_filters_does():
    assert service_user(filter_service("bright")) == User("filter_bright", "filter", filter="bright")
    with pytest.raises(SecurityError, match="names its filter"):
        User("f", "filter")
    with pytest.raises(SecurityError, match="names its filter"):
        User("p", "publisher", filter="bright")
