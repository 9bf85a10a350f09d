"""One settings object for the whole system, built once (from the environment or arguments) and passed in.

Nothing below reads the environment on its own: the CLI and the flows build a `Settings` and hand its
values to the functions that need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["PROJECT_ROOT", "Settings", "DEFAULT_PROGRAMMES"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: ZTF's programmes: id -> name used in archive file names.
DEFAULT_PROGRAMMES: dict[int, str] = {1: "public", 2: "partnership", 3: "caltech"}


@dataclass(frozen=True)
class Settings:
    """Where things are and how they are named.

    `bootstrap_servers` defaults to the local broker that `alertdist kafka start` runs (the embedded
    default); point it at a production cluster to run the same flows there.
    """

    home: Path = PROJECT_ROOT / ".alertdist"
    bootstrap_servers: str = "127.0.0.1:9092"
    kafka_brokers: int = 1
    kafka_port: int = 9092
    prefect_port: int = 4200
    survey: str = "ztf"
    programmes: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_PROGRAMMES))
    site_timezone: str = "America/Los_Angeles"
    archive_url: str = ""
    storage_options: dict = field(default_factory=dict)

    @property
    def kafka_home(self) -> Path:
        return self.home / "kafka"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def archive(self) -> str:
        """The archive location: an fsspec URL, or the local folder under `home` by default."""
        return self.archive_url or str(self.home / "archive")

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: os._Environ | dict | None = None) -> "Settings":
        """Settings from ``ALERTDIST_*`` variables, defaults for the rest.

        ALERTDIST_HOME, ALERTDIST_BOOTSTRAP_SERVERS, ALERTDIST_KAFKA_PORT, ALERTDIST_KAFKA_BROKERS, ALERTDIST_PREFECT_PORT,
        ALERTDIST_SURVEY, ALERTDIST_SITE_TIMEZONE, ALERTDIST_ARCHIVE_URL, and for S3 the usual
        AWS_* variables plus ALERTDIST_S3_ENDPOINT_URL.
        """
        env = os.environ if environ is None else environ
        base = cls()
        port = int(env.get("ALERTDIST_KAFKA_PORT", base.kafka_port))
        brokers = int(env.get("ALERTDIST_KAFKA_BROKERS", base.kafka_brokers))
        local = ",".join(f"127.0.0.1:{port + i}" for i in range(brokers))
        storage_options = {}
        if env.get("ALERTDIST_S3_ENDPOINT_URL"):
            storage_options["client_kwargs"] = {"endpoint_url": env["ALERTDIST_S3_ENDPOINT_URL"]}
        return cls(
            home=Path(env.get("ALERTDIST_HOME", base.home)),
            bootstrap_servers=env.get("ALERTDIST_BOOTSTRAP_SERVERS", local),
            kafka_brokers=brokers,
            kafka_port=port,
            prefect_port=int(env.get("ALERTDIST_PREFECT_PORT", base.prefect_port)),
            survey=env.get("ALERTDIST_SURVEY", base.survey),
            site_timezone=env.get("ALERTDIST_SITE_TIMEZONE", base.site_timezone),
            archive_url=env.get("ALERTDIST_ARCHIVE_URL", ""),
            storage_options=storage_options,
        )
