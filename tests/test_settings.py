"""Configuration and nights at the edge: every ALERTDIST_* variable validated and named when bad, a night parsed
strictly once (CLI argument or flow parameter), one rule for "tonight", flows named from their parameters."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from alertdist.nights.dates import SITES, night_of_jd, parse_night, tonight
from alertdist.settings import Settings, SettingsError

ALERTDIST = [sys.executable, "-m", "alertdist.cli.main"]


@pytest.mark.parametrize("text", ["20231012", "2023-10-12", " 20231012 ", dt.date(2023, 10, 12)])
def test_a_night_is_yyyymmdd_or_iso(text):
    assert parse_night(text) == dt.date(2023, 10, 12)


@pytest.mark.parametrize("text", ["2023101", "202310123", "2023-1012", "2023/10/12", "12-10-2023", "20231332", ""])
def test_anything_else_is_refused_with_the_form_expected(text):
    with pytest.raises(ValueError, match="YYYYMMDD"):
        parse_night(text)


def test_a_dropped_digit_on_the_command_line_is_refused_before_anything_runs(tmp_path):
    done = subprocess.run(
        [*ALERTDIST, "simulate", "1", "--to", str(tmp_path / "x"), "--night", "2023101"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "2023101" in done.stderr and "YYYYMMDD" in done.stderr
    assert not (tmp_path / "x").exists()


def test_a_bad_variable_is_named_but_its_value_never_shown(monkeypatch):
    """The value may be a password (a mistyped login variable): the error names the variable and what it needs."""
    monkeypatch.setenv("ALERTDIST_KAFKA_PORT", "x")
    with pytest.raises(SettingsError, match=r"ALERTDIST_KAFKA_PORT: Input should be a valid integer") as raised:
        Settings.load()
    assert "'x'" not in str(raised.value)
    monkeypatch.setenv("ALERTDIST_KAFKA_PORT", "9100")
    monkeypatch.setenv("ALERTDIST_SITE_TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError, match=r"ALERTDIST_SITE_TIMEZONE: .*not an IANA time zone") as raised:
        Settings.load()
    assert "Mars/Olympus" not in str(raised.value)


SECRET = "hunter2 my very own secret"


@pytest.mark.parametrize(
    "variable",
    [
        "ALERTDIST_KAFKA_LOGINS__PUBLISHER__PASWORD",  # mistyped: the login has no password
        "ALERTDIST_KAFKA_LOGINS__PUBLISHER",  # not a {user, password} map
        "ALERTDIST_KAFKA_LOGINS",  # not JSON
        "ALERTDIST_PUBLIC_KAFKA_LOGINS__MIRROR__PASSWORD__X",
    ],
)
def test_a_mistyped_login_variable_never_shows_the_password(monkeypatch, variable):
    monkeypatch.setenv(variable, SECRET)
    with pytest.raises(SettingsError) as raised:
        Settings.load()
    assert "ALERTDIST_" in str(raised.value) and SECRET not in str(raised.value)
    with pytest.raises(Exception) as direct:  # built directly (a flow parameter's validation), not through load
        Settings()
    assert SECRET not in str(direct.value) and SECRET not in repr(direct.value)


def test_the_command_line_names_the_bad_variable_but_never_its_value():
    env = {"ALERTDIST_KAFKA_PORT": "x", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*ALERTDIST, "topics", "create"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "ALERTDIST_KAFKA_PORT: Input should be a valid integer" in done.stderr
    env = {"ALERTDIST_KAFKA_LOGINS__PUBLISHER__PASWORD": SECRET, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*ALERTDIST, "topics", "create"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1 and "ALERTDIST_KAFKA_LOGINS__PUBLISHER__PASSWORD: Field required" in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_settings_derive_the_local_brokers_the_naming_and_the_site(monkeypatch):
    monkeypatch.setenv("ALERTDIST_KAFKA_PORT", "9100")
    monkeypatch.setenv("ALERTDIST_KAFKA_BROKERS", "3")
    monkeypatch.setenv("ALERTDIST_SURVEY", "lsst")
    settings = Settings.load()
    assert settings.bootstrap_servers == "127.0.0.1:9100,127.0.0.1:9101,127.0.0.1:9102"
    assert settings.naming.programme_topic(dt.date(2023, 10, 12), 1) == "lsst_20231012_programid1"
    assert settings.site == SITES["palomar"] and settings.storage_options == {}
    assert Settings.load(bootstrap_servers="kafka:9092").bootstrap_servers == "kafka:9092"  # an argument wins
    monkeypatch.setenv("ALERTDIST_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert Settings.load().storage_options == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ((2024, 7, 1, 16, 30), (2024, 7, 2)),  # dusk: still 1 July in UTC
        ((2024, 7, 2, 5, 0), (2024, 7, 2)),  # before dawn
        ((2024, 12, 1, 12, 30), (2024, 12, 2)),
    ],
)  # after noon: tonight's
def test_tonight_is_one_rule_the_sites(local, expected):
    from zoneinfo import ZoneInfo

    now = dt.datetime(*local, tzinfo=ZoneInfo("America/Los_Angeles"))
    settings = Settings.load(site_timezone="America/Los_Angeles")
    assert settings.tonight(now) == tonight(SITES["palomar"], now) == dt.date(*expected)
    assert night_of_jd(2460230.8, settings.site) == dt.date(2023, 10, 13)  # 07:12 UTC


def test_a_flow_refuses_a_mistyped_night_naming_the_form(prefect_server, kafka_bootstrap, unique):
    from alertdist.flows.topics import create_night_topics

    state = create_night_topics(
        night="2023101", bootstrap_servers=kafka_bootstrap, survey=f"s{unique}", return_state=True
    )
    assert state.is_failed() and "YYYYMMDD" in state.message


def test_flow_runs_are_named_from_their_parameters(prefect_server, kafka_bootstrap, unique):
    from prefect.client.orchestration import get_client

    from alertdist.flows.topics import create_night_topics

    state = create_night_topics(
        night="2023-10-12", partitions=1, bootstrap_servers=kafka_bootstrap, survey=f"s{unique}", return_state=True
    )
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(state.state_details.flow_run_id).name == "topics-20231012"


def test_service_logins_come_from_the_environment_and_never_print(monkeypatch):
    monkeypatch.setenv("ALERTDIST_KAFKA_LOGINS__PUBLISHER__PASSWORD", "publisher secret 123")
    monkeypatch.setenv("ALERTDIST_KAFKA_LOGINS__FILTER_BRIGHT__USER", "bright-bot")
    monkeypatch.setenv("ALERTDIST_KAFKA_LOGINS__FILTER_BRIGHT__PASSWORD", "bright secret 456")
    monkeypatch.setenv("ALERTDIST_KAFKA_CA", "/etc/kafka/ca.pem")
    settings = Settings.load()
    publisher, bright = settings.kafka("publisher"), settings.kafka("filter_bright")
    assert publisher.login["sasl.username"] == "publisher" and bright.login["sasl.username"] == "bright-bot"
    assert (
        publisher.login["security.protocol"] == "SASL_SSL" and publisher.login["ssl.ca.location"] == "/etc/kafka/ca.pem"
    )
    assert publisher.login["sasl.password"].get_secret_value() == "publisher secret 123"
    for shown in (repr(settings), str(settings), repr(publisher), str(publisher), repr(bright.login)):
        assert "secret" not in shown
    with pytest.raises(SettingsError, match="ALERTDIST_KAFKA_LOGINS__ARCHIVER__PASSWORD"):
        settings.kafka("archiver")


def test_an_open_cluster_needs_no_login():
    settings = Settings.load(bootstrap_servers="127.0.0.1:1")
    assert not settings.secured and settings.kafka("archiver").login == {} and settings.kafka("admin") == "127.0.0.1:1"


def test_the_public_cluster_has_its_own_logins_and_ca(monkeypatch):
    """Two-tier: each cluster its own users; the readers' stages see the public cluster as theirs (`downstream`)."""
    monkeypatch.setenv("ALERTDIST_PUBLIC_BOOTSTRAP_SERVERS", "127.0.0.1:2")
    monkeypatch.setenv("ALERTDIST_KAFKA_LOGINS__MIRROR__PASSWORD", "mirror upstream 123")
    monkeypatch.setenv("ALERTDIST_PUBLIC_KAFKA_LOGINS__MIRROR__PASSWORD", "mirror downstream 456")
    monkeypatch.setenv("ALERTDIST_PUBLIC_KAFKA_LOGINS__ARCHIVER__PASSWORD", "archiver downstream 789")
    monkeypatch.setenv("ALERTDIST_PUBLIC_KAFKA_CA", "/etc/kafka/public-ca.pem")
    settings = Settings.load(bootstrap_servers="127.0.0.1:1")
    down = settings.public_kafka("mirror")
    assert down == "127.0.0.1:2" and down.login["sasl.password"].get_secret_value() == "mirror downstream 456"
    assert down.login["ssl.ca.location"] == "/etc/kafka/public-ca.pem"
    assert settings.kafka("mirror").login["sasl.password"].get_secret_value() == "mirror upstream 123"
    with pytest.raises(SettingsError, match="ALERTDIST_KAFKA_LOGINS__ARCHIVER__PASSWORD"):
        settings.kafka("archiver")  # the archiver has no login upstream
    readers = settings.downstream()
    assert readers.kafka("archiver") == "127.0.0.1:2"
    assert readers.kafka("archiver").login["sasl.password"].get_secret_value() == "archiver downstream 789"
    with pytest.raises(SettingsError, match="ALERTDIST_PUBLIC_KAFKA_LOGINS__PUBLISHER__PASSWORD"):
        settings.public_kafka("publisher")
