"""Shared fixtures: a real Kafka broker for the session, the real ZTF packets, unique names.

The broker is the one `.ci/run` started (``ALERTDIST_TEST_BOOTSTRAP``) or, when that is unset, one this
session starts itself on free ports in a temporary folder and stops at the end.
"""

from __future__ import annotations

import os
import random
import socket
import tarfile
import uuid
from pathlib import Path

import pytest

from alertdist.settings import Settings
from alertdist.infra import kafka_local

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ARCHIVE_2018 = SHARED_DATA / "ztf-archive" / "ztf_public_20180819_mod1000.tar.gz"


def _ephemeral_ports_start() -> int:
    """Where the kernel's range for client sockets' local ports begins (Linux: 32768 unless configured)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_ports(count: int) -> int:
    """A port p with p..p+count-1 and p+10000.. (client and controller listeners) free, all below the ephemeral
    range: a port from that range can be handed to some client socket (the brokers' own connections included)
    between this check and the broker's bind, which made a 3-broker start fail with "Address already in use"."""
    top = _ephemeral_ports_start() - 10000 - count
    chooser = random.Random()
    for _ in range(500):
        port = chooser.randrange(10000, top)
        if all(_is_free(port + i) and _is_free(port + 10000 + i) for i in range(count)):
            return port
    raise RuntimeError(f"no {count} free port pairs found between 10000 and {top + 10000 + count}")


def start_test_cluster(folder: Path, brokers: int = 1, heap: str = "384m") -> kafka_local.KafkaCluster:
    """A fresh local cluster in ``folder`` on free ports, using the project's installed jars (retried on new
    ports, in a new folder, if another process took one of them first)."""
    libs = Settings.from_env().kafka_home / "libs"
    kafka_local.install(libs, log=lambda *_: None)
    for attempt in range(3):
        home = folder if attempt == 0 else folder / f"retry-{attempt}"
        home.mkdir(parents=True, exist_ok=True)
        (home / "libs").symlink_to(libs, target_is_directory=True)
        port = _free_ports(brokers)
        cluster = kafka_local.KafkaCluster(home=home, brokers=brokers, port=port, controller_port=port + 10000,
                                           heap=heap)
        try:
            kafka_local.start(cluster, log=lambda *_: None)
            return cluster
        except kafka_local.KafkaInfraError as e:
            kafka_local.stop(cluster, log=lambda *_: None)
            if "Address already in use" not in str(e) or attempt == 2:  # the node's first error names it
                raise
    raise AssertionError("unreachable")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


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
