"""Data rights enforced by Kafka itself: SCRAM users, their roles' ACLs, per night, on a secured cluster.

The module's cluster is started here with security on (the session broker is the simple, open one): a
SCRAM-SHA-512 listener over TLS with certificates from infra/make_certs.sh, the standard authorizer, and the
loopback PLAINTEXT listener whose User:ANONYMOUS super user sets everything up, as the system's services do.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition

from alertdist.infra import kafka_local
from alertdist.kafka.clients import Brokers, admin_client, consumer, producer
from alertdist.nights.topics import TopicNaming, TopicSettings, create_topics, ensure_night_topics
from alertdist.security import User, read_users, scram_client_config, secure_night
from alertdist.settings import Settings
from alertdist.users import add_user, remove_user
from tests.kafka_support import read_as

REPO = Path(__file__).resolve().parents[1]
NIGHT = dt.date(2023, 10, 12)
PASSWORD = "correct horse battery staple"


def start_secure_test_cluster(folder: Path, security: str = "sasl_ssl") -> kafka_local.KafkaCluster:
    """One secured node on free ports in ``folder``, using the project's installed jars."""
    libs = Settings.load().kafka_home / "libs"
    kafka_local.install(libs, log=lambda *_: None)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "libs").symlink_to(libs, target_is_directory=True)
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(kafka_local.free_port())
    client, controller, secure = sorted(ports)
    cluster = kafka_local.KafkaCluster(
        home=folder,
        brokers=1,
        port=client,
        controller_port=controller,
        secure_port=secure,
        heap="384m",
        security=security,
    )
    kafka_local.start(cluster, log=lambda *_: None)
    return cluster


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory):
    cluster = start_secure_test_cluster(tmp_path_factory.mktemp("secure-kafka"))
    try:
        yield cluster
    finally:
        kafka_local.stop(cluster, log=lambda *_: None)


@pytest.fixture
def night_topics(secure_cluster, unique):
    """A fresh survey with tonight's topics, one message per programme topic and per filter output."""
    naming = TopicNaming(survey=f"s{unique}")
    admin = admin_client(secure_cluster.bootstrap_servers)
    ensure_night_topics(admin, naming, NIGHT, TopicSettings(partitions=2))
    outputs = {p: naming.filter_output_topic(t, "bright") for p, t in naming.programme_topics(NIGHT).items()}
    create_topics(admin, {t: (1, 1, {}) for t in outputs.values()})
    _produce(secure_cluster.bootstrap_servers, [*naming.programme_topics(NIGHT).values(), *outputs.values()])
    return naming, outputs


def _produce(bootstrap: str, topics: list[str]) -> None:
    """As the PLAINTEXT super user (the publisher's own path): one message per topic, named after it."""
    p = producer(bootstrap)
    for topic in topics:
        p.produce(topic, key=b"ZTF23aaaaaaa", value=topic.encode())
    assert p.flush(30) == 0


def _user(cluster, naming, name: str, role: str) -> str:
    add_user(cluster.bootstrap_servers, naming, User(name, role), PASSWORD)
    return name


def _read(cluster, username: str, topic: str, *, group: str | None = None, password: str = PASSWORD):
    """Subscribe as a SCRAM user; return (values received, error names) once the topic is read or refused."""
    login = scram_client_config(username, password, ca_location=cluster.ca_location)
    return read_as(Brokers(cluster.secure_bootstrap_servers, login), topic, group or f"{username}.reader")


def test_public_reads_programme_1_but_is_refused_programme_2_and_receives_nothing(secure_cluster, night_topics):
    naming, _ = night_topics
    alice = _user(secure_cluster, naming, "alice", "public")
    topic1, topic2 = naming.programme_topic(NIGHT, 1), naming.programme_topic(NIGHT, 2)

    assert _read(secure_cluster, alice, topic1) == ([topic1.encode()], set())
    values, errors = _read(secure_cluster, alice, topic2)
    assert values == []
    assert errors == {"TOPIC_AUTHORIZATION_FAILED"}


def test_partnership_reads_programmes_1_and_2_but_not_3(secure_cluster, night_topics):
    naming, _ = night_topics
    bob = _user(secure_cluster, naming, "bob", "partnership")
    for programid in (1, 2):
        topic = naming.programme_topic(NIGHT, programid)
        assert _read(secure_cluster, bob, topic) == ([topic.encode()], set())
    assert _read(secure_cluster, bob, naming.programme_topic(NIGHT, 3)) == ([], {"TOPIC_AUTHORIZATION_FAILED"})


def test_caltech_reads_all_three_programmes(secure_cluster, night_topics):
    naming, _ = night_topics
    carol = _user(secure_cluster, naming, "carol", "caltech")
    for topic in naming.programme_topics(NIGHT).values():
        assert _read(secure_cluster, carol, topic) == ([topic.encode()], set())


def test_wrong_password_and_unknown_user_are_refused(secure_cluster, night_topics):
    naming, _ = night_topics
    dave = _user(secure_cluster, naming, "dave", "caltech")
    topic1 = naming.programme_topic(NIGHT, 1)
    values, errors = _read(secure_cluster, dave, topic1, password="not the password at all")
    assert values == [] and "_AUTHENTICATION" in errors
    values, errors = _read(secure_cluster, "mallory", topic1, group="mallory-g")
    assert values == [] and "_AUTHENTICATION" in errors


def test_consumer_group_outside_the_users_prefix_is_refused(secure_cluster, night_topics):
    naming, _ = night_topics
    erin = _user(secure_cluster, naming, "erin", "caltech")
    topic1 = naming.programme_topic(NIGHT, 1)
    assert _read(secure_cluster, erin, topic1, group="erin.alerts") == ([topic1.encode()], set())
    assert _read(secure_cluster, erin, topic1, group="alertdist-archiver") == ([], {"GROUP_AUTHORIZATION_FAILED"})


def test_filter_outputs_are_readable_by_whoever_can_read_their_source(secure_cluster, night_topics):
    naming, outputs = night_topics
    frank = _user(secure_cluster, naming, "frank", "public")
    grace = _user(secure_cluster, naming, "grace", "partnership")
    assert _read(secure_cluster, frank, outputs[1]) == ([outputs[1].encode()], set())
    assert _read(secure_cluster, frank, outputs[2]) == ([], {"TOPIC_AUTHORIZATION_FAILED"})
    assert _read(secure_cluster, grace, outputs[2]) == ([outputs[2].encode()], set())
    assert _read(secure_cluster, grace, outputs[3]) == ([], {"TOPIC_AUTHORIZATION_FAILED"})


def test_a_programme_id_with_a_longer_number_is_not_covered_by_the_shorter_ones_rights(secure_cluster, night_topics):
    """programid1's rights must not leak to a programid10 topic that merely starts with the same characters."""
    naming, _ = night_topics
    lookalike = naming.programme_topic(NIGHT, 1) + "0"
    create_topics(admin_client(secure_cluster.bootstrap_servers), {lookalike: (1, 1, {})})
    _produce(secure_cluster.bootstrap_servers, [lookalike])
    heidi = _user(secure_cluster, naming, "heidi", "public")
    assert _read(secure_cluster, heidi, lookalike) == ([], {"TOPIC_AUTHORIZATION_FAILED"})


def test_a_new_night_is_readable_only_once_its_acls_are_applied(secure_cluster, unique):
    naming = TopicNaming(survey=f"n{unique}")
    ivan = _user(secure_cluster, naming, "ivan", "public")
    later = NIGHT + dt.timedelta(days=1)
    ensure_night_topics(admin_client(secure_cluster.bootstrap_servers), naming, later, TopicSettings(partitions=1))
    topic = naming.programme_topic(later, 1)
    _produce(secure_cluster.bootstrap_servers, [topic])
    assert _read(secure_cluster, ivan, topic) == ([], {"TOPIC_AUTHORIZATION_FAILED"})
    assert secure_night(secure_cluster.bootstrap_servers, naming, later) == 2  # the topic and its outputs' prefix
    assert _read(secure_cluster, ivan, topic) == ([topic.encode()], set())


def test_publisher_writes_the_rejected_topic_and_archiver_reads_only_in_its_own_groups(secure_cluster, night_topics):
    naming, _ = night_topics
    archiver = _user(secure_cluster, naming, "archiver", "archiver")
    rejected = naming.rejected_topic(NIGHT)
    publisher_config = scram_client_config("publisher", PASSWORD, ca_location=secure_cluster.ca_location)
    _user(secure_cluster, naming, "publisher", "publisher")
    p = producer(secure_cluster.secure_bootstrap_servers, **publisher_config)  # idempotent, as the publisher's
    p.produce(rejected, value=b"bad packet", headers={"alertdist.reason": b"not Avro"})
    assert p.flush(30) == 0
    assert _message_count(secure_cluster, rejected) == 1
    topic3 = naming.programme_topic(NIGHT, 3)
    assert _read(secure_cluster, archiver, topic3, group=f"alertdist-archive-{topic3}") == ([topic3.encode()], set())
    assert _read(secure_cluster, archiver, topic3, group="any-group") == ([], {"GROUP_AUTHORIZATION_FAILED"})


def test_a_consumer_role_cannot_write(secure_cluster, night_topics):
    naming, _ = night_topics
    _user(secure_cluster, naming, "judy", "caltech")
    refusals: list[KafkaError] = []

    def on_delivery(err, msg):
        if err is not None:
            refusals.append(err)

    # not idempotent: an idempotent producer is already refused its producer id (CLUSTER_AUTHORIZATION_FAILED, a
    # fatal error); this one gets as far as the produce request, to show the topic itself refuses the write
    p = producer(
        secure_cluster.secure_bootstrap_servers,
        **{"enable.idempotence": False, "message.timeout.ms": 10000},
        **scram_client_config("judy", PASSWORD, ca_location=secure_cluster.ca_location),
    )
    p.produce(naming.programme_topic(NIGHT, 1), value=b"forged alert", on_delivery=on_delivery)
    assert p.flush(20) == 0
    assert [e.name() for e in refusals] == ["TOPIC_AUTHORIZATION_FAILED"]
    assert _message_count(secure_cluster, naming.programme_topic(NIGHT, 1)) == 1  # only the fixture's


def _message_count(cluster, topic: str) -> int:
    c = consumer(cluster.bootstrap_servers)
    try:
        partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        c.close()


def test_role_change_drops_the_old_rights_and_removal_locks_the_user_out(secure_cluster, night_topics):
    naming, _ = night_topics
    kim = _user(secure_cluster, naming, "kim", "caltech")
    topic1, topic3 = naming.programme_topic(NIGHT, 1), naming.programme_topic(NIGHT, 3)
    assert _read(secure_cluster, kim, topic3) == ([topic3.encode()], set())
    _user(secure_cluster, naming, "kim", "public")
    assert [(u.name, u.role) for u in read_users(secure_cluster.bootstrap_servers, naming)] == [("kim", "public")]
    assert _read(secure_cluster, kim, topic3) == ([], {"TOPIC_AUTHORIZATION_FAILED"})
    assert _read(secure_cluster, kim, topic1) == ([topic1.encode()], set())

    assert remove_user(secure_cluster.bootstrap_servers, naming, kim) == 3  # group + topic + outputs' prefix
    assert read_users(secure_cluster.bootstrap_servers, naming) == []
    values, errors = _read(secure_cluster, kim, topic1)
    assert values == [] and "_AUTHENTICATION" in errors


def test_users_cli_adds_and_lists_with_the_password_on_stdin(secure_cluster, night_topics, unique):
    naming, _ = night_topics
    env = {
        **os.environ,
        "ALERTDIST_BOOTSTRAP_SERVERS": secure_cluster.bootstrap_servers,
        "ALERTDIST_SURVEY": naming.survey,
    }
    cli = [sys.executable, "-m", "alertdist.cli.main", "users"]
    run = {"capture_output": True, "text": True, "env": env, "cwd": REPO, "timeout": 120}
    added = subprocess.run(
        [*cli, "add", "leo", "--role", "partnership", "--password-stdin"], input=PASSWORD + "\n", **run
    )
    assert added.returncode == 0, added.stderr
    assert "user leo (partnership) added" in added.stdout and PASSWORD not in added.stdout + added.stderr
    listed = subprocess.run([*cli, "list"], **run)
    assert listed.returncode == 0 and listed.stdout.split()[:2] == ["leo", "partnership"]
    topic2 = naming.programme_topic(NIGHT, 2)
    assert _read(secure_cluster, "leo", topic2) == ([topic2.encode()], set())

    refused = subprocess.run([*cli, "add", "leo", "--role", "admin", "--password-stdin"], input=PASSWORD + "\n", **run)
    assert refused.returncode == 2 and "invalid choice: 'admin'" in refused.stderr


def test_the_secured_cluster_refuses_to_restart_open(secure_cluster):
    from dataclasses import replace

    with pytest.raises(kafka_local.KafkaInfraError, match="would let anyone read every programme"):
        kafka_local.start(replace(secure_cluster, security="none"), log=lambda *_: None)


def test_the_topic_creation_flow_applies_the_new_nights_acls(secure_cluster, unique, prefect_server):
    from alertdist.flows.topics import create_night_topics

    naming = TopicNaming(survey=f"f{unique}")
    nina = _user(secure_cluster, naming, "nina", "partnership")
    later = NIGHT + dt.timedelta(days=2)
    outcome = create_night_topics(
        night=f"{later:%Y%m%d}", partitions=1, bootstrap_servers=secure_cluster.bootstrap_servers, survey=naming.survey
    )
    assert set(outcome.values()) == {"created"}
    topics = naming.programme_topics(later)
    _produce(secure_cluster.bootstrap_servers, list(topics.values()))
    assert _read(secure_cluster, nina, topics[2]) == ([topics[2].encode()], set())
    assert _read(secure_cluster, nina, topics[3]) == ([], {"TOPIC_AUTHORIZATION_FAILED"})
