"""Who may do what in the two-tier mode, on two secured clusters (``secure_only``: SCRAM-SHA-512 over TLS, no
PLAINTEXT listener) and a real MirrorMaker 2 logged in to each as the mirror.

The producing cluster knows only the publisher and the mirror (besides its admin); the readers, the archiver and
the filters exist on the public cluster alone. The mirror reads what it mirrors upstream and nothing else, and
its password is in neither its properties file nor the Connect configuration it stores on the public cluster.
"""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AclBindingFilter, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from alertdist.infra import kafka_local
from alertdist.jobs import mirror
from alertdist.jobs.nights import open_night
from alertdist.jobs.publish import publish_night
from alertdist.jobs.secure import register_two_tier_services, two_tier_users
from alertdist.kafka.clients import Brokers, admin_client, consumer, scram_client_config
from alertdist.nights.topics import MirrorNames, TopicSettings
from alertdist.publish.sources import SourceSpec
from alertdist.security import ADMIN, ARCHIVER, MIRROR, PUBLISHER, User, filter_service
from alertdist.settings import KafkaLogin, Settings
from alertdist.users import add_user
from tests.conftest import TwoTier
from tests.kafka_support import read_as, read_to_end
from tests.mirror_support import running_mirror, two_tier_settings
from tests.test_service_identities import _write

NIGHT = dt.date(2023, 10, 12)
READER, READER_PASSWORD = "alice", "alice-reads-programme-one"


@pytest.fixture(scope="module")
def secure_clusters(tmp_path_factory):
    """Two fresh secure_only clusters (each its own CA and admin) on free ports."""
    folder = tmp_path_factory.mktemp("secure-two-tier")
    libs = Settings.load().kafka_home / "libs"
    try:
        yield TwoTier(
            *(
                kafka_local.start_on_free_ports(
                    folder / name, libs=libs, heap="384m", security="secure_only", log=lambda *_: None
                )
                for name in ("producing", "public")
            ),
            folder,
        )
    finally:
        kafka_local.stop_under(folder, log=lambda *_: None)


@pytest.fixture(scope="module")
def settings(secure_clusters, tmp_path_factory) -> Settings:
    """Every service registered on its own cluster (`register_two_tier_services`), a reader on the public one,
    and settings that give each service its login on each cluster."""
    home = tmp_path_factory.mktemp("secure-two-tier-home")
    up, down = secure_clusters.producing, secure_clusters.public
    admins = two_tier_settings(
        secure_clusters,
        home,
        kafka_ca=up.ca_location,
        public_kafka_ca=down.ca_location,
        kafka_logins={ADMIN: {"password": up.password(ADMIN)}},
        public_kafka_logins={ADMIN: {"password": down.password(ADMIN)}},
    )
    register_two_tier_services(admins, home / "secrets")
    add_user(admins.public_kafka(ADMIN), admins.naming, User(READER, "public"), READER_PASSWORD)
    logins = {
        public: {
            **getattr(admins, "public_kafka_logins" if public else "kafka_logins"),
            **{
                u.name: KafkaLogin(password=(home / "secrets" / f"{u.name}.password").read_text().strip())
                for u in users
            },
        }
        for public, users in two_tier_users().items()
    }
    logins[True][READER] = KafkaLogin(password=READER_PASSWORD)
    return admins.model_copy(update={"kafka_logins": logins[False], "public_kafka_logins": logins[True]})


@pytest.fixture(scope="module")
def mirrored(settings):
    """The night opened on both clusters by their admins (downstream first: the mirror's rights there must exist
    before the topics appear upstream), published by the publisher, mirrored, and closed downstream."""
    mirror.secure_night_downstream(settings, NIGHT)
    open_night(settings, NIGHT, TopicSettings(partitions=2))
    with running_mirror(settings) as home:
        published = publish_night(settings, NIGHT, SourceSpec.parse("simulate:200:4"), topics=None)
        mirror.wait_for_mirrored_topics(settings, NIGHT)
        state = mirror.close_night_downstream(settings, NIGHT, timeout=120)
        yield published, state, home


def test_each_cluster_knows_only_its_own_users(settings):
    def users(servers) -> set[str]:
        admin = admin_client(servers)  # kept alive until the answer is in
        return set(admin.describe_user_scram_credentials(request_timeout=30).result())

    assert users(settings.kafka(ADMIN)) == {"admin", "broker", PUBLISHER, MIRROR}
    assert users(settings.public_kafka(ADMIN)) == {
        "admin",
        "broker",
        MIRROR,
        ARCHIVER,
        READER,
        *(u.name for u in two_tier_users()[True] if u.role == "filter"),
    }


def test_readers_archiver_and_filters_cannot_log_in_upstream(settings, mirrored):
    """Their users do not exist on the producing cluster: refused at authentication (their public passwords,
    the producing cluster's CA trusted), whatever they ask for."""
    topic = settings.naming.programme_topic(NIGHT, 1)
    for user in (READER, ARCHIVER, filter_service("bright_transients")):
        password = settings.public_kafka_logins[user].password
        login = scram_client_config(user, password, ca_location=settings.kafka_ca)
        values, errors = read_as(Brokers(settings.bootstrap_servers, login), topic, f"{user}-g")
        assert values == [] and "_AUTHENTICATION" in errors, (user, errors)


def test_the_publisher_writes_and_the_mirror_carries_the_night_to_the_readers(settings, mirrored):
    published, state, _ = mirrored
    assert sum(published.delivered.values()) + sum(published.rejected.values()) == 200
    assert state.closed and state.total_messages() == sum(published.delivered.values())
    topic = settings.naming.programme_topic(NIGHT, 1)
    values, errors = read_as(settings.public_kafka(READER), topic, f"{READER}.night")
    assert errors == set() and len(values) == published.delivered[1] > 0
    upstream = read_to_end(settings.kafka(ADMIN), [topic], settle=True)
    assert sorted(values) == sorted(m.value() for m in upstream)
    # and the reader still reads only its programme downstream
    refused = read_as(settings.public_kafka(READER), settings.naming.programme_topic(NIGHT, 2), f"{READER}.2")
    assert refused == ([], {"TOPIC_AUTHORIZATION_FAILED"})


def test_the_mirror_cannot_write_upstream_nor_read_the_rejected_topic(settings, mirrored):
    upstream_mirror = settings.kafka(MIRROR)
    programme = list(settings.naming.programme_topics(NIGHT).values())
    assert _write(upstream_mirror, programme) == ["TOPIC_AUTHORIZATION_FAILED"] * len(programme)
    rejected = settings.naming.rejected_topic(NIGHT)
    c = consumer(upstream_mirror)
    try:  # not even its existence: no DESCRIBE, while the mirrored topics are described
        seen = c.list_topics(timeout=30).topics
        metadata = c.list_topics(rejected, timeout=30).topics[rejected]
    finally:
        c.close()
    assert metadata.error is not None and metadata.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert rejected not in seen and set(programme) <= set(seen)
    # nor does the publisher read what it writes
    assert read_as(settings.kafka(PUBLISHER), programme[0], None) == ([], {"TOPIC_AUTHORIZATION_FAILED"})


def test_the_mirror_password_is_kept_out_of_its_properties_and_its_stored_connect_configs(settings, mirrored):
    _, _, home = mirrored
    password = settings.kafka_logins[MIRROR].password.get_secret_value()
    properties = home.path("properties").read_text()
    assert password not in properties and "${file:" in properties
    assert "producing.ssl.truststore.type=PEM" in properties and "public.sasl.mechanism=SCRAM-SHA-512" in properties
    assert stat.S_IMODE(home.path("secrets").stat().st_mode) == 0o600
    stored = read_to_end(settings.public_kafka(ADMIN), [MirrorNames().connect_topics[1]])  # Connect's configs
    configs = b"".join(m.value() or b"" for m in stored)
    assert b"sasl.jaas.config" in configs and b"${file:" in configs
    assert password.encode() not in configs
    assert password not in home.path("log").read_text(errors="replace")


def test_the_mirror_rights_are_its_two_roles_and_nothing_cluster_wide(settings):
    """No ACL of the mirror names the cluster (no IDEMPOTENT_WRITE: WRITE implies it), and upstream it may not
    create or write the topics it mirrors."""
    mine = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{MIRROR}", None, AclOperation.ANY, AclPermissionType.ANY
    )
    acls = {}
    for public, servers in ((False, settings.kafka(ADMIN)), (True, settings.public_kafka(ADMIN))):
        admin = admin_client(servers)
        acls[public] = admin.describe_acls(mine, request_timeout=30).result()
        assert acls[public] and all(a.restype != ResourceType.BROKER for a in acls[public])
    upstream = acls[False]
    programme = set(settings.naming.programme_topics(NIGHT).values())
    assert {a.operation for a in upstream if a.name in programme} == {AclOperation.READ, AclOperation.DESCRIBE_CONFIGS}


def test_the_cli_adds_readers_to_the_public_cluster_only(settings, monkeypatch, capsys):
    import io

    from alertdist.cli.main import main as cli
    from alertdist.settings import login_variable

    env = {
        "ALERTDIST_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "ALERTDIST_PUBLIC_BOOTSTRAP_SERVERS": settings.public_bootstrap_servers,
        "ALERTDIST_PUBLIC_KAFKA_CA": str(settings.public_kafka_ca),
        login_variable(ADMIN, public=True): settings.public_kafka_logins[ADMIN].password.get_secret_value(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("sys.stdin", io.StringIO("bob-reads-partnership-data\n"))
    assert cli(["users", "add", "bob", "--role", "partnership", "--public", "--password-stdin"]) == 0
    assert cli(["users", "list", "--public"]) == 0
    listed = capsys.readouterr().out
    assert "bob" in listed and "partnership" in listed and f"{MIRROR} " in listed
    admin = admin_client(settings.kafka(ADMIN))
    assert "bob" not in admin.describe_user_scram_credentials(request_timeout=30).result()


def test_kafka_two_tier_secure_only_names_a_secured_pair(tmp_path, monkeypatch, capsys):
    """`alertdist kafka start|stop|status --two-tier --secure-only` act on both secured clusters (here: status,
    with neither running)."""
    from alertdist.cli.main import main as cli

    monkeypatch.setenv("ALERTDIST_HOME", str(tmp_path))
    assert cli(["kafka", "status", "--two-tier", "--secure-only"]) == 3
    out = capsys.readouterr().out
    assert f"producing cluster ({tmp_path / 'kafka' / 'secure'}), security secure_only" in out
    assert f"public cluster ({tmp_path / 'kafka-public' / 'secure'}), security secure_only" in out
