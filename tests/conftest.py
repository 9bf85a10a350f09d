"""Shared fixtures: a real Kafka broker for the session, the real ZTF packets, unique names, and two more
clusters (producing and public) for the two-tier tests.

Packets: `real_*` fixtures are ZTF's own bytes from ../shared/data and skip (saying why) where that folder is
absent; take them only where ZTF's bytes are the point. Every other test takes `packets`, `packet_files` or
`uw_tarball`: ZTF's packets when ../shared is there (CI), else the project's own, simulated in every shipped schema
version (alertdist.simulate.samples), so a fresh clone runs nearly all of the suite. ``ALERTDIST_TEST_DATA`` points
the tests at another data folder (e.g. an empty one, to run as a fresh clone would).

The broker is the one `.ci/run` started (``ALERTDIST_TEST_BOOTSTRAP``) or, when that is unset, one this
session starts itself on free ports in a temporary folder and stops at the end.
"""

from __future__ import annotations

import functools
import os
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from alertdist.infra import kafka_local
from alertdist.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ALERTDIST_TEST_DATA") or REPO.parent / "shared" / "data")
ARCHIVE_2018 = SHARED_DATA / "ztf-archive" / "ztf_public_20180819_mod1000.tar.gz"
UW_TARBALL_NAME = ARCHIVE_2018.name
#: Made packets per schema version of the files when ../shared is absent (ZTF's real set: 24 + 5 files, 30 in a
#: tarball).
MADE_PER_VERSION = 15


def start_test_cluster(folder: Path, brokers: int = 1, heap: str = "384m") -> kafka_local.KafkaCluster:
    """A fresh local cluster in ``folder`` on free ports, using the project's installed jars."""
    libs = Settings.load().kafka_home / "libs"
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


def have_real_data() -> bool:
    """Whether ZTF's own packets are beside the clone (CI places ../shared there; a fresh clone has none)."""
    return SHARED_DATA.is_dir()


def require_real_data(why: str = "ZTF's own bytes are the point of this test") -> None:
    """Skip, saying why, when ZTF's real packets are absent: only for tests whose point is ZTF's own bytes."""
    if not have_real_data():
        pytest.skip(f"{why}: real ZTF data not found at {SHARED_DATA} (CI places ../shared beside the clone)")


def _require_shared_data() -> None:
    require_real_data()


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


#: The schema version of UW's 2018 tarball, and so of the made tarball that stands in for it.
TARBALL_VERSION = "3.0"


@functools.cache
def made_file_packets() -> tuple[bytes, ...]:
    """The project's own single-packet files: `MADE_PER_VERSION` simulated public alerts in each shipped schema
    version but the tarball's (as ../shared holds 4.01 and 3.3 files beside a 3.0 tarball)."""
    from alertdist import schemas
    from alertdist.simulate.samples import sample_alerts

    versions = [v for v in schemas.available_versions() if v != TARBALL_VERSION]
    return tuple(a.packet for v in versions for a in sample_alerts(v, MADE_PER_VERSION))


@functools.cache
def made_tarball_packets() -> tuple[bytes, ...]:
    """The 30 simulated public 3.0 alerts of the made stand-in for UW's 2018 tarball."""
    from alertdist.simulate.samples import sample_alerts

    return tuple(a.packet for a in sample_alerts(TARBALL_VERSION, 30))


def made_packets() -> list[bytes]:
    """Every made packet, files first then the tarball's members, as `real_packets` orders ZTF's."""
    return [*made_file_packets(), *made_tarball_packets()]


@pytest.fixture(scope="session")
def packets(request) -> list[bytes]:
    """Packets of several schema versions: ZTF's 59 real ones when ../shared is there, else `made_packets()`."""
    if have_real_data():
        return request.getfixturevalue("real_packets")
    return made_packets()


@pytest.fixture(scope="session")
def packet_files(request, tmp_path_factory) -> list[Path]:
    """Single-packet files laid out as in ../shared/data/ztf-alerts (``<folder>/<candid>.avro``, sorted): ZTF's
    real ones when ../shared is there, else the made packets of every schema version, one folder per version."""
    if have_real_data():
        return request.getfixturevalue("real_packet_files")
    from alertdist.avro import codec

    root = tmp_path_factory.mktemp("made-alerts")
    for packet in made_file_packets():
        head = codec.peek(packet)
        path = root / head.schemavsn.replace(".", "_") / f"{head.candid}.avro"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(packet)
    return sorted(root.glob("*/*.avro"))


@pytest.fixture(scope="session")
def uw_tarball(tmp_path_factory) -> Path:
    """A nightly tarball in UW's public layout (gzip'd tar of flat ``<candid>.avro`` members, schema 3.0): UW's
    real 2018 one when ../shared is there, else `made_tarball_packets` tarred by Python's tarfile (not our writer)."""
    if have_real_data():
        return ARCHIVE_2018
    import io

    from alertdist.avro import codec

    path = tmp_path_factory.mktemp("made-uw") / UW_TARBALL_NAME
    with tarfile.open(path, "w:gz") as tar:
        for packet in made_tarball_packets():
            info = tarfile.TarInfo(f"{codec.peek(packet).candid}.avro")
            info.size, info.mtime, info.mode = len(packet), 1534723200, 0o644
            tar.addfile(info, io.BytesIO(packet))
    return path


@pytest.fixture(scope="session")
def uw_tarball_members(uw_tarball) -> list[tuple[str, bytes]]:
    """(name, bytes) of each member of `uw_tarball`, in tar order."""
    with tarfile.open(uw_tarball) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


@pytest.fixture(scope="session")
def prefect_server():
    """A real, temporary Prefect server (SQLite) for flow tests; request it in any test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
