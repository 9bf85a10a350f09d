"""One settings object for the whole system: every ``ALERTDIST_*`` variable, validated once, passed explicitly.

Nothing else reads the environment: the CLI and the flows load a `Settings` (environment and their own
arguments) and hand it, or the values it derives, to what they call. It is also where the rules that depend on
configuration live once: the topic naming, the site, and "tonight".
"""

from __future__ import annotations

import datetime as dt
import os
import re
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic_settings
from pydantic import BaseModel, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from alertdist.kafka.clients import Brokers, scram_client_config
from alertdist.nights.dates import Site, site_for_timezone, tonight
from alertdist.nights.topics import DEFAULT_PROGRAMMES, TopicNaming

__all__ = ["PROJECT_ROOT", "KafkaLogin", "Settings", "SettingsError", "login_variable"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_PREFIX = "ALERTDIST_"


class SettingsError(ValueError):
    """A setting has a value the system cannot use; the message names the variable."""


def login_variable(service: str, part: str = "password", *, public: bool = False) -> str:
    """The environment variable holding a service's Kafka password (or ``user``) on the producing cluster (or, with
    ``public``, on the public cluster of the two-tier mode)."""
    return f"{_PREFIX}{'PUBLIC_' if public else ''}KAFKA_LOGINS__{service.upper()}__{part.upper()}"


class KafkaLogin(BaseModel):
    """One service's SCRAM-SHA-512 login; ``user`` defaults to the service's own name."""

    model_config = {"frozen": True, "hide_input_in_errors": True}

    user: str = ""
    password: SecretStr


class Settings(BaseSettings):
    """Where things are and how they are named.

    ``bootstrap_servers`` defaults to the local brokers that `alertdist kafka start` runs (the embedded default,
    from ``kafka_port`` and ``kafka_brokers``); point it at a production cluster to run the same flows there.
    ``public_bootstrap_servers`` is the public (distribution) cluster of the two-tier mode, which MirrorMaker 2
    fills from the producing one (default: the local one `alertdist kafka start --public` runs on
    ``public_kafka_port``); ``mirror_rest_port`` is MirrorMaker's internal REST listener.
    S3-compatible stores: ``s3_endpoint_url`` plus the usual ``AWS_*`` variables. Reanalyses over many nights run
    on Dask: an existing cluster at ``dask_address`` (``tcp://scheduler:8786``), else a local cluster of
    ``dask_workers`` processes (default: one per core).

    A secured cluster: ``kafka_logins`` holds each service's login (``ALERTDIST_KAFKA_LOGINS__PUBLISHER__PASSWORD``,
    ``..._USER``; or the whole map as JSON in ``ALERTDIST_KAFKA_LOGINS``) and ``kafka_ca`` the CA to trust (TLS).
    Passwords are `SecretStr`: a repr, a log line or a flow parameter shows ``**********``. The public cluster of
    the two-tier mode has its own users: ``public_kafka_logins`` and ``public_kafka_ca`` (`public_kafka`).
    """

    # a validation error never shows what it was given: a mistyped login variable's value is a password
    model_config = SettingsConfigDict(
        env_prefix=_PREFIX, env_nested_delimiter="__", frozen=True, extra="ignore", hide_input_in_errors=True
    )

    home: Path = PROJECT_ROOT / ".alertdist"
    kafka_port: int = 9092
    kafka_brokers: int = 1
    bootstrap_servers: str = ""
    public_kafka_port: int = 9292
    public_bootstrap_servers: str = ""
    mirror_rest_port: int = 8083
    prefect_port: int = 4200
    prometheus_port: int = 9090
    metrics_port: int = 0  # each process's own /metrics: 0 a free port (announced for Prometheus), -1 none
    metrics: bool = True  # always on; ALERTDIST_METRICS=0 (benchmarks only): hooks no-ops, no /metrics server
    kafka_jmx_port: int = 0  # local brokers' JMX exporter, node i on +i-1; 0: the client port + 50; -1: none
    mirror_jmx_port: int = 0  # MirrorMaker 2's JMX exporter, like the brokers': 0: its REST port + 50; -1: none
    survey: str = "ztf"
    programmes: dict[int, str] = dict(DEFAULT_PROGRAMMES)
    site_timezone: str = "America/Los_Angeles"
    archive_url: str = ""
    s3_endpoint_url: str = ""
    dask_address: str = ""
    dask_workers: int | None = None
    kafka_logins: dict[str, KafkaLogin] = {}
    kafka_ca: Path | None = None
    public_kafka_logins: dict[str, KafkaLogin] = {}
    public_kafka_ca: Path | None = None

    @field_validator("site_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone such as America/Los_Angeles") from None
        return value

    @model_validator(mode="after")
    def _local_brokers_by_default(self) -> Settings:
        for name, port in (
            ("bootstrap_servers", self.kafka_port),
            ("public_bootstrap_servers", self.public_kafka_port),
        ):
            if not getattr(self, name):
                object.__setattr__(self, name, ",".join(f"127.0.0.1:{port + i}" for i in range(self.kafka_brokers)))
        return self

    @classmethod
    def load(cls, **overrides) -> Settings:
        """The environment's settings with ``overrides`` (None values ignored); a bad value raises `SettingsError`
        naming its variable, never its value (which may be a password)."""
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as e:
            problems = [
                f"{_PREFIX}{'__'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in e.errors(include_input=False, include_url=False, include_context=False)
            ]
            raise SettingsError("invalid setting: " + "; ".join(problems)) from None
        except pydantic_settings.SettingsError as e:  # a variable that is not the JSON its field needs
            field = re.search(r'field "(\w+)"', str(e))
            variable = f"{_PREFIX}{field.group(1).upper()}" if field else "an ALERTDIST_* variable"
            raise SettingsError(f"invalid setting: {variable} is not valid JSON for its type") from None

    @property
    def secured(self) -> bool:
        """Whether the services log in (SCRAM) rather than use an open listener."""
        return bool(self.kafka_logins)

    def kafka(self, service: str) -> Brokers:
        """The bootstrap servers as ``service`` (admin, publisher, archiver, replay, filter_<name>, mirror) logs in to
        them.

        On an open cluster (no logins configured) every service connects as it is; on a secured one a service
        without a login is an error naming the variable to set, never a silent fallback to another identity."""
        return _login(self.bootstrap_servers, self.kafka_logins, self.kafka_ca, service, public=False)

    def public_kafka(self, service: str) -> Brokers:
        """The public cluster's bootstrap servers as ``service`` logs in to them (its own logins, as `kafka`)."""
        return _login(
            self.public_bootstrap_servers, self.public_kafka_logins, self.public_kafka_ca, service, public=True
        )

    def downstream(self) -> Settings:
        """These settings as the readers of the two-tier mode (filters, archiver) use them: the public cluster as
        their cluster, with its own logins and CA."""
        update = {"bootstrap_servers": self.public_bootstrap_servers, "kafka_logins": self.public_kafka_logins}
        return self.model_copy(update={**update, "kafka_ca": self.public_kafka_ca})

    def without_logins(self) -> Settings:
        """These settings with no Kafka login: what work that never talks to Kafka (a reanalysis's Dask tasks, in
        processes of their own) is given, so no password travels there."""
        return self.model_copy(update={"kafka_logins": {}, "public_kafka_logins": {}})

    def private_home(self) -> Path:
        """`home`, created if missing and made the owner's only (0700): Kafka's data, the archive, Prefect's
        database and the generated passwords live below it."""
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.home.stat().st_uid == os.getuid():  # someone else's folder: theirs to protect
                self.home.chmod(0o700)
        except OSError:
            pass  # a home that cannot be created (a read-only install) holds nothing: what writes there says so
        return self.home

    @property
    def kafka_home(self) -> Path:
        return self.home / "kafka"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def prometheus_home(self) -> Path:
        return self.home / "prometheus"

    @property
    def archive(self) -> str:
        """The archive location: an fsspec URL, or the local folder under `home` by default."""
        return self.archive_url or str(self.home / "archive")

    @property
    def storage_options(self) -> dict:
        """fsspec options for the archive location (an S3-compatible endpoint when one is set)."""
        return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}} if self.s3_endpoint_url else {}

    @cached_property
    def naming(self) -> TopicNaming:
        """The survey's topic names: the one place a `TopicNaming` is built."""
        return TopicNaming(survey=self.survey, programmes=dict(self.programmes))

    @cached_property
    def site(self) -> Site:
        return site_for_timezone(self.site_timezone)

    def tonight(self, now: dt.datetime | None = None) -> dt.date:
        """The night starting this evening, or under way, at the site: the one rule for a default night."""
        return tonight(self.site, now)


def _login(servers: str, logins: dict[str, KafkaLogin], ca: Path | None, service: str, *, public: bool) -> Brokers:
    if not logins:
        return Brokers(servers)
    login = logins.get(service)
    if login is None:
        raise SettingsError(
            f"no Kafka login for the {service} service: set {login_variable(service, public=public)} "
            f"(and {login_variable(service, 'user', public=public)} unless its user is named {service})"
        )
    return Brokers(servers, scram_client_config(login.user or service, login.password, ca_location=ca))
