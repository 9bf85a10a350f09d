"""Shared fixtures: a real Kafka broker for the session, the real ZTF packets, unique names, and two more
clusters (producing and public) for the two-tier tests.

The broker is the one `.ci/run` started (``ALERTDIST_TEST_BOOTSTRAP``) or, when that is unset, one this
session starts itself on free ports in a temporary folder and stops at the end.
"""

from __future__ import annotations

import os
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from alertdist.infra import kafka_local
from alertdist.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ARCHIVE_2018 = SHARED_DATA / "ztf-archive" / "ztf_public_20180819_mod1000.tar.gz"


def start_test_cluster(folder: Path, brokers: int = 1, heap: str = "384m") -> kafka_local.KafkaCluster:
    """A fresh local cluster in ``folder`` on free ports, using the project's installed jars."""
    libs = Settings.from_env().kafka_home / "libs"
    return kafka_local.start_on_free_ports(folder, libs=libs, brokers=brokers, heap=heap, log=lambda *_: None)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    """Bootstrap servers of a real Apache Kafka broker."""
    external = os.environ.get("ALERTDIST_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    cluster = start_test_cluster(tmp_path_factory.mktemp("kafka"))
    try:
        yield cluster.bootstrap_servers
    finally:
        kafka_local.stop(cluster, log=lambda *_: None)


@dataclass(frozen=True)
class TwoTier:
    """The producing cluster (where the publisher writes) and the public one (where MirrorMaker 2 copies it)."""

    producing: kafka_local.KafkaCluster
    public: kafka_local.KafkaCluster
    folder: Path


@pytest.fixture(scope="module")
def two_clusters(tmp_path_factory) -> TwoTier:
    """Two fresh real clusters on free ports (own ports, data folders and cluster ids), for one test module."""
    folder = tmp_path_factory.mktemp("two-tier")
    try:
        yield TwoTier(start_test_cluster(folder / "producing"), start_test_cluster(folder / "public"), folder)
    finally:
        kafka_local.stop_under(folder, log=lambda *_: None)


@pytest.fixture
def unique() -> str:
    """A short unique suffix, so tests sharing one broker never share a topic or group."""
    return uuid.uuid4().hex[:10]


def _require_shared_data() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real ZTF data not found at {SHARED_DATA} (CI places ../shared beside the clone)")


@pytest.fixture(scope="session")
def real_packet_files() -> list[Path]:
    """The 29 real single-alert packet files (4.01 and 3.3)."""
    _require_shared_data()
    return sorted((SHARED_DATA / "ztf-alerts").glob("*/*.avro"))


@pytest.fixture(scope="session")
def archive_2018_members() -> list[tuple[str, bytes]]:
    """(name, bytes) of each member of the real 2018 UW archive tarball (schema 3.0)."""
    _require_shared_data()
    with tarfile.open(ARCHIVE_2018) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


@pytest.fixture(scope="session")
def real_packets(real_packet_files, archive_2018_members) -> list[bytes]:
    """All 59 real packets: 29 files and 30 tarball members."""
    return [p.read_bytes() for p in real_packet_files] + [b for _, b in archive_2018_members]


@pytest.fixture(scope="session")
def prefect_server():
    """A real, temporary Prefect server (SQLite) for flow tests; request it in any test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
