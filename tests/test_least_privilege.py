"""Least privilege at the edges, and secrets that never show (issue 23, items 4 and 5).

Each test is one finding: a user's rights reaching another's consumer groups, a name matched in part, a filter
reading every programme, a refusal read as "no users", a session outliving its password, a password on a command
line, state readable by every local user, an open Prefect API, an open Dask scheduler. The cluster here has no
PLAINTEXT listener (``secure_only``), like production, and re-authenticates sessions every few seconds so a
test can watch a changed password cut one off.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition

from alertdist.infra import kafka_local, prefect_local
from alertdist.kafka.clients import Brokers, admin_client, consumer, producer
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.security import (
    SecurityError,
    User,
    filter_service,
    read_users,
    scram_client_config,
)
from alertdist.settings import Settings
from alertdist.users import add_user, remove_user, set_password
from tests.kafka_support import read_as

REPO = Path(__file__).resolve().parents[1]
NIGHT = dt.date(2023, 10, 12)
PASSWORD = "correct horse battery staple"
REAUTH_MS = 3000  # this cluster's; the default is kafka_local.REAUTH_MS


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """A secure-only node, and every command line `kafka_local.start` ran to format and start it."""
    libs = Settings.load().kafka_home / "libs"
    kafka_local.install(libs, log=lambda *_: None)
    home = tmp_path_factory.mktemp("least-privilege")
    (home / "libs").symlink_to(libs, target_is_directory=True)
    port = kafka_local.free_ports(1)
    cluster = kafka_local.KafkaCluster(
        home=home,
        port=port,
        controller_port=port + 10000,
        heap="384m",
        security="secure_only",
        extra_properties={"connections.max.reauth.ms": str(REAUTH_MS)},
    )
    commands: list[list[str]] = []
    real = subprocess.Popen

    def recording(args, *rest, **options):
        commands.append([str(a) for a in args])
        return real(args, *rest, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", recording)
        kafka_local.start(cluster, log=lambda *_: None)
    try:
        yield cluster, commands
    finally:
        kafka_local.stop(cluster, log=lambda *_: None)


@pytest.fixture(scope="module")
def cluster(started):
    return started[0]


@pytest.fixture
def naming(cluster, unique):
    """A fresh survey with tonight's topics and one message in each programme topic."""
    naming = TopicNaming(survey=f"s{unique}")
    ensure_night_topics(admin_client(_admin(cluster)), naming, NIGHT, TopicSettings(partitions=1))
    p = producer(_admin(cluster))
    for topic in naming.programme_topics(NIGHT).values():
        p.produce(topic, key=b"ZTF23aaaaaaa", value=topic.encode())
    assert p.flush(30) == 0
    return naming


def _admin(cluster) -> Brokers:
    return Brokers(cluster.bootstrap_servers, cluster.admin_config)


def _as(cluster, name: str, password: str = PASSWORD) -> Brokers:
    return Brokers(cluster.bootstrap_servers, scram_client_config(name, password, ca_location=cluster.ca_location))


def _add(cluster, naming, user: User) -> str:
    add_user(_admin(cluster), naming, user, PASSWORD)
    return user.name


# ------------------------------------------------------------------------------------- names and namespaces


@pytest.mark.parametrize("name", ["alice\n", "alice\r\n", " alice", "al.ice", "alice.", "a" * 65, "", "élise"])
def test_a_user_name_is_matched_whole_and_has_no_separator(name):
    with pytest.raises(SecurityError, match="not allowed"):
        User(name, "public")


@pytest.mark.parametrize(
    "name", ["alertdist", "alert", "a", "alertdist-archive-x", "producing", "producing-mm2-x", "mm2", "connect"]
)
def test_names_that_the_system_uses_for_its_own_groups_and_ids_are_refused(name):
    with pytest.raises(SecurityError, match="not allowed"):
        User(name, "public")


@pytest.mark.parametrize("name", ["z", "zt", "ztf"])
def test_a_reader_named_like_a_prefix_of_the_survey_is_refused(name):
    """Checked before anything is asked of the cluster (none listens on port 1)."""
    with pytest.raises(SecurityError, match="not allowed"):
        add_user("127.0.0.1:1", TopicNaming(survey="ztf"), User(name, "public"), PASSWORD)


def test_filter_logins_are_only_for_their_filter():
    assert User(filter_service("bright"), "filter", filter="bright").name == "filter_bright"
    with pytest.raises(SecurityError, match="not allowed"):
        User("filter_bright", "public")
    with pytest.raises(SecurityError, match="not allowed"):
        User("filter_bright", "filter", filter="faint")


def test_a_filters_group_and_transactional_ids_lie_in_its_logins_namespace():
    from alertdist.filters.live import transactional_id_for

    group = TopicNaming(survey="ztf").filter_group(NIGHT, "bright")
    assert group.startswith("filter_bright.")
    assert transactional_id_for(group, 0).startswith("filter_bright.")


def test_ann_cannot_join_or_commit_annas_consumer_groups(cluster, naming):
    ann = _add(cluster, naming, User("ann", "caltech"))
    _add(cluster, naming, User("anna", "caltech"))
    topic = naming.programme_topic(NIGHT, 1)
    assert read_as(_as(cluster, ann), topic, "ann.alerts") == ([topic.encode()], set())
    assert read_as(_as(cluster, "anna"), topic, "anna.alerts") == ([topic.encode()], set())
    assert read_as(_as(cluster, ann), topic, "anna.alerts") == ([], {"GROUP_AUTHORIZATION_FAILED"})
    assert read_as(_as(cluster, ann), topic, "anna-alerts") == ([], {"GROUP_AUTHORIZATION_FAILED"})


def test_a_reader_cannot_join_a_filters_group(cluster, naming):
    _add(cluster, naming, User(filter_service("bright"), "filter", filter="bright"))
    reader = _add(cluster, naming, User("filter", "caltech"))  # as close to the filter's login as a name may be
    topic, group = naming.programme_topic(NIGHT, 1), naming.filter_group(NIGHT, "bright")
    assert read_as(_as(cluster, "filter_bright"), topic, group) == ([topic.encode()], set())
    assert read_as(_as(cluster, reader), topic, group) == ([], {"GROUP_AUTHORIZATION_FAILED"})


# -------------------------------------------------------------------------------------------- filters


def test_a_filter_login_reads_only_its_deployments_programmes(cluster, naming):
    name = _add(cluster, naming, User(filter_service("pub"), "filter", filter="pub", programmes=(1,)))
    group = naming.filter_group(NIGHT, "pub")
    one, two = naming.programme_topic(NIGHT, 1), naming.programme_topic(NIGHT, 2)
    assert read_as(_as(cluster, name), one, group) == ([one.encode()], set())
    assert read_as(_as(cluster, name), two, group) == ([], {"TOPIC_AUTHORIZATION_FAILED"})


def test_a_changed_filter_assignment_drops_the_old_filters_rights(cluster, naming):
    bob = _add(cluster, naming, User("bob", "filter", filter="bright"))
    topic = naming.programme_topic(NIGHT, 1)
    bright, faint = naming.filter_group(NIGHT, "bright"), naming.filter_group(NIGHT, "faint")
    assert read_as(_as(cluster, bob), topic, bright) == ([topic.encode()], set())
    _add(cluster, naming, User("bob", "filter", filter="faint"))
    assert read_as(_as(cluster, bob), topic, faint) == ([topic.encode()], set())
    assert read_as(_as(cluster, bob), topic, bright) == ([], {"GROUP_AUTHORIZATION_FAILED"})
    _add(cluster, naming, User("bob", "filter", filter="faint", programmes=(2,)))  # fewer programmes: fewer rights
    assert read_as(_as(cluster, bob), topic, faint) == ([], {"TOPIC_AUTHORIZATION_FAILED"})


# ---------------------------------------------------------------------------------------- the users topic


def test_a_refusal_on_the_users_topic_is_an_error_not_an_empty_list(cluster, naming):
    reader = _add(cluster, naming, User("carol", "public"))
    assert [u.name for u in read_users(_admin(cluster), naming)] == [reader]
    with pytest.raises(SecurityError, match=r"[Aa]uthorization failed"):
        read_users(_as(cluster, reader), naming)
    assert read_users(_admin(cluster), TopicNaming(survey=f"{naming.survey}x")) == []  # never written: none


# -------------------------------------------------------------------------------------------- sessions


def test_secured_brokers_reauthenticate_sessions_every_minute(tmp_path):
    props = kafka_local._server_properties(kafka_local.KafkaCluster(home=tmp_path, security="sasl"), 1)
    assert props["connections.max.reauth.ms"] == str(kafka_local.REAUTH_MS) == "60000"


def _session_after(cluster, naming, name: str, change) -> tuple[list[bytes], set[str]]:
    """Open a session as ``name`` and read the topic's first message; then ``change`` the user, produce another
    message as the admin, and poll for a few re-authentication periods: (values read after, error names)."""
    topic = naming.programme_topic(NIGHT, 1)
    errors: list[KafkaError] = []
    c = consumer(_as(cluster, name), None, error_cb=errors.append)
    after: list[bytes] = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        first = None
        deadline = time.monotonic() + 20
        while first is None and time.monotonic() < deadline:
            msg = c.poll(0.2)
            first = msg if msg is not None and msg.error() is None else None
        assert first is not None and first.value() == topic.encode() and not errors
        change()
        deadline = time.monotonic() + 6 * REAUTH_MS / 1000
        while not errors and time.monotonic() < deadline:
            c.poll(0.2)
        p = producer(_admin(cluster))
        p.produce(topic, value=b"after the change")
        assert p.flush(30) == 0
        deadline = time.monotonic() + 2 * REAUTH_MS / 1000
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and msg.error() is None:
                after.append(msg.value())
            elif msg is not None:
                errors.append(msg.error())
    finally:
        c.close()
    return after, {e.name() for e in errors}


def test_a_changed_password_cuts_off_a_session_already_open(cluster, naming):
    """Without re-authentication a consumer that logged in before the change reads on for as long as it stays up."""
    name = _add(cluster, naming, User("dave", "public"))
    after, errors = _session_after(
        cluster, naming, name, lambda: set_password(_admin(cluster), name, "a new password!")
    )
    assert after == [] and "_AUTHENTICATION" in errors


def test_a_removed_users_open_session_reads_nothing_more(cluster, naming):
    name = _add(cluster, naming, User("frank", "public"))
    after, errors = _session_after(cluster, naming, name, lambda: remove_user(_admin(cluster), naming, name))
    assert after == [] and errors & {"_AUTHENTICATION", "TOPIC_AUTHORIZATION_FAILED"}


def test_a_removed_user_is_locked_out(cluster, naming):
    name = _add(cluster, naming, User("erin", "public"))
    topic = naming.programme_topic(NIGHT, 1)
    assert read_as(_as(cluster, name), topic, "erin.g") == ([topic.encode()], set())
    remove_user(_admin(cluster), naming, name)
    values, errors = read_as(_as(cluster, name), topic, "erin.g")
    assert values == [] and "_AUTHENTICATION" in errors


# ----------------------------------------------------------------------------------------------- modes


def test_secured_data_never_restarts_in_a_weaker_mode(cluster):
    for weaker in ("sasl_ssl", "sasl", "none"):
        with pytest.raises(kafka_local.KafkaInfraError, match="was started with security 'secure_only'"):
            kafka_local.start(replace(cluster, security=weaker), log=lambda *_: None)
    assert kafka_local.recorded_security(cluster) == "secure_only"


def test_formatted_data_without_its_record_does_not_start_open(tmp_path):
    cluster = kafka_local.KafkaCluster(home=tmp_path, security="none")
    (cluster.node_dir(1) / "data").mkdir(parents=True)
    (cluster.node_dir(1) / "data" / "meta.properties").write_text("node.id=1\n")
    with pytest.raises(kafka_local.KafkaInfraError, match="would let anyone read every programme"):
        kafka_local.start(cluster, log=lambda *_: None)


# --------------------------------------------------------------------------------------------- secrets


def _secrets(cluster) -> list[str]:
    found = [cluster.password(u) for u in kafka_local.SUPER_USERS]
    return [*found, (cluster.certs_dir / "keystore.password").read_text().strip()]


def test_no_password_on_the_command_line_of_the_storage_tool_or_the_broker(started):
    cluster, commands = started
    formats = [c for c in commands if any(a.startswith("@") for a in c)]
    assert formats, f"the storage tool was not started with an argument file: {commands}"
    pid = kafka_local.status(cluster)[0].pid
    running = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    for line in [*commands, running]:
        shown = " ".join(line)
        for secret in _secrets(cluster):
            assert secret not in shown
    assert not list(cluster.home.glob("nodes/*/format.args"))  # read by the tool, then gone


def test_make_certs_hands_the_keystore_password_to_no_command_line(tmp_path):
    shims, log = tmp_path / "bin", tmp_path / "argv.log"
    shims.mkdir()
    for tool in ("openssl", "keytool"):
        real = shutil.which(tool)
        (shims / tool).write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> "{log}"\nexec "{real}" "$@"\n')
        (shims / tool).chmod(0o700)
    out = tmp_path / "certs"
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    subprocess.run(["bash", str(REPO / "infra" / "make_certs.sh"), str(out)], env=env, check=True, capture_output=True)
    password = (out / "keystore.password").read_text().strip()
    assert "keytool" in log.read_text() and password not in log.read_text()
    assert _private_modes(out) == []


def _private_modes(root: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Everything under ``root`` that another local user could read, write or enter."""
    exposed = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        for path in [Path(folder), *(Path(folder) / f for f in files if f not in skip)]:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                exposed.append(f"{path} {stat.filemode(mode)}")
    return exposed


def test_the_clusters_data_logs_and_secrets_are_private(cluster):
    """0700 folders, 0600 files: the broker runs with umask 077, and everything written here is written so."""
    assert (cluster.node_dir(1) / "data" / "meta.properties").is_file()
    assert _private_modes(cluster.home, skip=("libs",)) == []


def test_the_command_line_keeps_its_home_private(tmp_path):
    fresh, shared = tmp_path / "fresh", tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    for home in (fresh, shared):
        env = {**os.environ, "ALERTDIST_HOME": str(home), "ALERTDIST_PREFECT_PORT": str(kafka_local.free_port())}
        done = subprocess.run(
            [sys.executable, "-m", "alertdist.cli.main", "prefect", "status"], env=env, capture_output=True, timeout=120
        )
        assert done.returncode == 3, done.stderr  # down: but the home was made private first
        assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_the_local_prefect_server_refuses_unauthenticated_requests_and_keeps_its_state_private(tmp_path):
    server = prefect_local.PrefectServer(tmp_path / "prefect", kafka_local.free_port())
    assert server.auth  # the default
    prefect_local.start(server, log=lambda *_: None)
    try:
        url = f"{server.api_url}/flow_runs/count"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10)
        assert refused.value.code == 401
        allowed = urllib.request.Request(url, method="POST", headers=server.authorization())
        with urllib.request.urlopen(allowed, timeout=10) as answer:
            assert answer.status == 200
        assert server.client_env()["PREFECT_API_AUTH_STRING"] == server.auth_string()
        assert _private_modes(server.home) == []
    finally:
        prefect_local.stop(server, log=lambda *_: None)


def test_a_reanalysis_dask_cluster_speaks_only_tls(monkeypatch):
    from distributed import Client, LocalCluster
    from distributed.security import Security
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from alertdist.tasks.dask import dask_runner

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        runner = dask_runner(Settings.load(dask_address=""), workers=1)
    with LocalCluster(**runner.cluster_kwargs) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        with pytest.raises((OSError, TimeoutError)):  # TLS, but a certificate of another CA: refused
            Client(cluster.scheduler_address, security=Security.temporary(), timeout="5s")
        with pytest.raises((OSError, TimeoutError)):  # no TLS: refused
            Client(cluster.scheduler_address.replace("tls://", "tcp://"), timeout="5s")
        with Client(cluster) as client:  # the runner's own client, with the cluster's security
            assert client.submit(lambda x: x + 1, 1).result(timeout=30) == 2


def test_reanalysis_tasks_get_no_kafka_login():
    settings = Settings.load(
        kafka_logins={"publisher": {"password": "publisher secret 123"}},
        public_kafka_logins={"mirror": {"password": "mirror secret 456"}},
        s3_endpoint_url="http://127.0.0.1:9000",
    )
    shipped = settings.without_logins()
    assert shipped.kafka_logins == {} and shipped.public_kafka_logins == {}
    assert shipped.storage_options == settings.storage_options


def test_production_manifests_have_no_service_super_user_and_no_unauthenticated_listener():
    import yaml

    kafka = next(
        d
        for d in yaml.safe_load_all((REPO / "infra" / "production" / "strimzi-kafka.yaml").read_text())
        if d["kind"] == "Kafka"
    )["spec"]["kafka"]
    assert kafka["authorization"]["superUsers"] == ["admin"]
    assert all(listener.get("authentication") and listener.get("tls") for listener in kafka["listeners"])
    assert kafka["config"]["connections.max.reauth.ms"] == kafka_local.REAUTH_MS
    users = list(yaml.safe_load_all((REPO / "infra" / "production" / "strimzi-users.yaml").read_text()))
    assert [u["metadata"]["name"] for u in users] == ["admin"]
