"""Archive listing and downloads against real servers on loopback: an HTTP server (Python's http.server, with
Range support and switches to misbehave) and an S3 API (moto's server, through s3fs).

The archive served is a real one: a simulated night published to the test broker and archived by the archiver
(tarballs, MD5SUMS, Parquet, manifest), plus UW's 2018 tarball as UW serves it (tarball + MD5SUMS line only).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import socket
import threading
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alertdist.access import ArchiveAccessError, ChecksumMismatchError, download_night, list_nights
from alertdist.access.names import ArchiveNameError, archive_name
from alertdist.access.readers import open_sources
from alertdist.archive import ArchiveOptions, archive_night
from alertdist.archive.tarball import read_members
from alertdist.cli.main import main as cli
from alertdist.infra.s3_local import local_s3
from alertdist.kafka.clients import admin_client
from alertdist.nights.dates import format_night
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import publish
from alertdist.publish.sources import SourcePacket, simulated_alerts

NIGHT = dt.date(2023, 10, 12)
UW_NIGHT = dt.date(2018, 8, 19)
UW_NAME = "ztf_public_20180819.tar.gz"


def _published_checksums(path: str) -> tuple[str, ...]:
    """What our archive publishes for a file: md5 (MD5SUMS and manifest) for tarballs, sha256 for every file."""
    return ("size", "md5", "sha256") if path.endswith(".tar.gz") else ("size", "sha256")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def archive_root(kafka_bootstrap, uw_tarball, tmp_path_factory) -> tuple[Path, str]:
    """An archive folder with two nights: 20180819 as UW has it, 20231012 as our archiver writes it."""
    root = tmp_path_factory.mktemp("served")
    shutil.copy(uw_tarball, root / UW_NAME)
    (root / "MD5SUMS").write_text(f"{_md5(root / UW_NAME)}  {UW_NAME}\n")
    naming = TopicNaming(survey=f"d{uuid.uuid4().hex[:6]}")
    ensure_night_topics(admin_client(kafka_bootstrap), naming, NIGHT, TopicSettings(partitions=2))
    alerts = simulated_alerts(90, night=NIGHT, seed=3)
    publish(
        (SourcePacket(f"{a.candid}.avro", a.packet, None) for a in alerts),
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        night=NIGHT,
    )
    archive_night(kafka_bootstrap, naming, NIGHT, str(root), ArchiveOptions(row_group_rows=32))
    return root, naming.survey


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------- HTTP server


class _Handler(SimpleHTTPRequestHandler):
    """Serves the archive folder with Range requests, and misbehaves when the test asks it to."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        local = Path(self.translate_path(self.path))
        if local.is_dir():
            if server.no_index:
                self.send_error(404)
                return
            super().do_GET()
            return
        if not local.is_file():
            self.send_error(404)
            return
        relative = str(local.relative_to(server.root))
        data = bytearray(local.read_bytes())
        if relative in server.corrupt:
            data[len(data) // 2] ^= 0x01
        start, end = 0, len(data)
        wanted = self.headers.get("Range")
        if wanted and not server.ignore_range:
            first, last = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted).groups()
            start, end = int(first), min(int(last) + 1 if last else len(data), len(data))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = bytes(data[start:end])
        self.send_response(206 if wanted and not server.ignore_range else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if wanted and not server.ignore_range:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        cut = server.cut_once.pop(relative, None)
        if cut is not None:  # send part of the body, then drop the connection
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        self.root = root
        super().__init__(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
        self.reset()

    def reset(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.cut_once: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.no_index = False
        self.ignore_range = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


@pytest.fixture(scope="module")
def http_server(archive_root):
    server = _Server(archive_root[0])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http(http_server):
    http_server.reset()
    return http_server


# ------------------------------------------------------------------------------------------------ S3 (moto)


@pytest.fixture(scope="module")
def s3(archive_root):
    """The archive uploaded to a bucket of moto's S3 server on loopback; yields (url, storage_options)."""
    pytest.importorskip("boto3")
    with local_s3() as s3:
        yield s3.upload_folder(archive_root[0], "download-test", "archive"), s3.storage_options


# ----------------------------------------------------------------------------------------------------- tests


def _listing(nights) -> dict[str, tuple]:
    return {format_night(n.night): (sorted(n.tarballs), n.parquet, len(n.manifests)) for n in nights}


def test_the_same_nights_are_listed_from_a_folder_http_with_and_without_index_pages_and_s3(archive_root, http, s3):
    root, survey = archive_root
    expected = {
        "20180819": ([UW_NAME], False, 0),
        "20231012": ([f"{survey}_{p}_20231012.tar.gz" for p in ("caltech", "partnership", "public")], True, 1),
    }
    assert _listing(list_nights(str(root))) == expected
    assert _listing(list_nights(http.url)) == expected
    assert _listing(list_nights(s3[0], s3[1])) == expected
    http.no_index = True  # like a server that shows no folder pages: MD5SUMS names the tarballs
    bare = list_nights(http.url)
    assert {format_night(n.night): sorted(n.tarballs) for n in bare} == {k: v[0] for k, v in expected.items()}
    assert all(f.md5 for n in bare for f in n.tarballs.values())


def test_download_from_http_verifies_every_file_and_makes_an_archive_root(archive_root, http, uw_tarball, tmp_path):
    root, survey = archive_root
    report = download_night(NIGHT, http.url, tmp_path)
    served = _files(root)
    assert len(report.files) == 6  # three tarballs, three Parquet files
    for f in report.files:
        assert f.checked == _published_checksums(f.path)
        assert f.local.read_bytes() == served[f.path]
        assert not f.local.with_name(f.local.name + ".part").exists()
    assert (tmp_path / "manifests" / f"{survey}_20231012.json").read_bytes() == served[
        f"manifests/{survey}_20231012.json"
    ]
    assert _listing(list_nights(str(tmp_path)))["20231012"][1:] == (True, 1)
    alerts, counts, _ = open_sources([str(tmp_path)], archived_night=NIGHT)
    assert sum(1 for _ in alerts) == 90 and sum(c.bad for c in counts) == 0

    uw = download_night(UW_NIGHT, http.url, tmp_path, what=["tarball"])
    assert [f.checked for f in uw.files] == [("md5",)]  # UW publishes md5 only
    assert (tmp_path / UW_NAME).read_bytes() == uw_tarball.read_bytes()
    sums = (tmp_path / "MD5SUMS").read_text()
    assert UW_NAME in sums and f"{survey}_public_20231012.tar.gz" in sums


def test_download_from_s3_verifies_and_resumes_a_partial_file(archive_root, s3, tmp_path):
    root, survey = archive_root
    url, options = s3
    name = f"{survey}_public_20231012.tar.gz"
    whole = (root / name).read_bytes()
    (tmp_path / f"{name}.part").write_bytes(whole[: len(whole) // 2])
    report = download_night(NIGHT, url, tmp_path, ["tarball", "parquet"], storage_options=options)
    by_path = {f.path: f for f in report.files}
    assert by_path[name].resumed_from == len(whole) // 2 and by_path[name].restarts == 0
    assert report.bytes_fetched == sum(f.size for f in report.files) - len(whole) // 2
    served = _files(root)
    assert len(report.files) == 6
    for f in report.files:
        assert f.local.read_bytes() == served[f.path] and f.checked == _published_checksums(f.path)
    assert not list(tmp_path.rglob("*.part"))


def test_a_connection_cut_mid_file_is_resumed_with_a_range_request(archive_root, http, tmp_path):
    root, survey = archive_root
    name = f"{survey}_partnership_20231012.tar.gz"
    size = (root / name).stat().st_size
    http.cut_once[name] = size // 3
    report = download_night(NIGHT, http.url, tmp_path, ["tarball"], programmes=[2])
    assert [f.path for f in report.files] == [name]
    assert (tmp_path / name).read_bytes() == (root / name).read_bytes()
    gets = [rng for path, rng in http.requests if path == f"/{name}"]
    assert gets[0] is None and len(gets) == 2
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", gets[1]).group(1))
    assert 0 < resumed_at <= size // 3  # asked only for what it did not have


def test_an_earlier_part_file_is_resumed_and_a_bad_one_replaced(archive_root, http, tmp_path):
    root, survey = archive_root
    name = f"{survey}_caltech_20231012.tar.gz"
    whole = (root / name).read_bytes()
    part = tmp_path / f"{name}.part"
    part.write_bytes(whole[:1000])
    first = download_night(NIGHT, http.url, tmp_path, ["tarball"], programmes=[3])
    assert first.files[0].resumed_from == 1000 and first.files[0].restarts == 0
    assert [rng for path, rng in http.requests if path == f"/{name}"] == ["bytes=1000-"]

    (tmp_path / name).unlink()
    part.write_bytes(b"\0" * 1000)  # a part file that is not the start of this file
    second = download_night(NIGHT, http.url, tmp_path, ["tarball"], programmes=[3])
    assert second.files[0].restarts == 1 and (tmp_path / name).read_bytes() == whole

    again = download_night(NIGHT, http.url, tmp_path, ["tarball"], programmes=[3])
    assert again.files[0].already_there and again.bytes_fetched == 0


def test_a_server_that_ignores_ranges_gets_the_whole_file_again(archive_root, http, tmp_path):
    root, survey = archive_root
    name = f"{survey}_caltech_20231012.tar.gz"
    (tmp_path / f"{name}.part").write_bytes((root / name).read_bytes()[:5000])
    http.ignore_range = True
    report = download_night(NIGHT, http.url, tmp_path, ["tarball"], programmes=[3])
    assert report.files[0].restarts == 1 and (tmp_path / name).read_bytes() == (root / name).read_bytes()


def test_a_corrupted_byte_is_detected_and_nothing_is_kept(archive_root, http, tmp_path):
    _root, _survey = archive_root
    parquet = "parquet/night=20231012/programid=1/part-0.parquet"
    http.corrupt.add(parquet)
    with pytest.raises(ChecksumMismatchError, match="sha256") as failure:
        download_night(NIGHT, http.url, tmp_path, ["parquet"], programmes=[1])
    assert parquet in str(failure.value)
    assert not (tmp_path / parquet).exists()
    assert not list(tmp_path.rglob("*.part"))

    http.corrupt = {UW_NAME}  # UW's tarball: only MD5SUMS to go by, and that is enough
    with pytest.raises(ChecksumMismatchError, match="md5"):
        download_night(UW_NIGHT, http.url, tmp_path)
    assert not (tmp_path / UW_NAME).exists() and not list(tmp_path.rglob("*.part"))


def test_a_file_without_any_checksum_is_refused_unless_allowed(archive_root, tmp_path):
    root, _ = archive_root
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(root / UW_NAME, bare / UW_NAME)  # no MD5SUMS, no manifest
    with pytest.raises(ArchiveAccessError, match="no checksum"):
        download_night(UW_NIGHT, str(bare), tmp_path / "out")
    assert not (tmp_path / "out" / UW_NAME).exists()
    report = download_night(UW_NIGHT, str(bare), tmp_path / "out", require_checksum=False)
    assert report.files[0].checked == ("size",)


def test_a_missing_night_says_where_to_look(archive_root, http):
    with pytest.raises(ArchiveAccessError, match="archive-list"):
        download_night(dt.date(2020, 1, 1), http.url, "/nonexistent")


def test_a_name_whose_digits_are_no_date_is_passed_over_and_nights_are_dates(archive_root, tmp_path):
    """The archiver never writes ztf_public_20231399: listing passes over it, and no download can ask for it."""
    root, _ = archive_root
    shutil.copy(root / UW_NAME, tmp_path / UW_NAME)
    (tmp_path / "ztf_public_20231399.tar.gz").write_bytes((root / UW_NAME).read_bytes())
    (tmp_path / "parquet" / "night=20230230").mkdir(parents=True)
    listed = list_nights(str(tmp_path))
    assert [(n.night, sorted(n.tarballs), n.parquet) for n in listed] == [(UW_NIGHT, [UW_NAME], False)]
    assert listed[0].describe().startswith("20180819  1 tarball(s)")
    with pytest.raises(ArchiveNameError, match="not a name an archive writes"):
        archive_name("ztf_public_20231399.tar.gz")
    assert archive_name(UW_NAME, night=UW_NIGHT).night == UW_NIGHT
    report = download_night(UW_NIGHT, str(tmp_path), tmp_path / "out", require_checksum=False)
    assert report.night == UW_NIGHT and [f.path for f in report.files] == [UW_NAME]


def test_the_archive_list_and_download_commands(archive_root, http, tmp_path, capsys):
    root, survey = archive_root
    assert cli(["archive-list", http.url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["20180819", "20231012"]
    assert "parquet: yes" in out[1] and "manifest: yes" in out[1]
    assert cli(["download", "20231012", "--from", http.url, "--to", str(tmp_path), "--what", "parquet", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("checked size, sha256") == 3 and "3 file(s)" in out  # Parquet files have no md5
    assert sorted(p.name for p in (tmp_path / "parquet" / "night=20231012").iterdir()) == [
        "programid=1",
        "programid=2",
        "programid=3",
    ]
    assert not os.path.exists(tmp_path / f"{survey}_public_20231012.tar.gz")
    assert (tmp_path / "manifests" / f"{survey}_20231012.json").read_bytes() == (
        root / "manifests" / f"{survey}_20231012.json"
    ).read_bytes()


def test_remote_tarballs_and_parquet_are_read_as_streams(archive_root, http, s3, uw_tarball):
    """What a replay or an offline filter reads from a URL: the same alerts as from the local files."""
    root, survey = archive_root
    local, _, _ = open_sources([str(root)], archived_night=NIGHT)
    expected = {a.info.candid: a.packet for a in local}
    assert len(expected) == 90

    over_http, counts, names = open_sources([http.url], archived_night=NIGHT)
    assert {a.info.candid: a.packet for a in over_http} == expected
    assert names == [
        f"{http.url.rstrip('/')}/{survey}_{p}_20231012.tar.gz" for p in ("caltech", "partnership", "public")
    ]
    assert sum(c.good for c in counts) == 90

    over_http, _, _ = open_sources([http.url], archived_night=NIGHT, prefer="parquet")
    assert {a.info.candid: a.packet for a in over_http} == expected  # the manifest names the Parquet files

    url, options = s3
    from_s3, _, _ = open_sources([url], archived_night=NIGHT, storage_options=options)
    assert {a.info.candid: a.packet for a in from_s3} == expected
    parquet, counts, _ = open_sources([url], archived_night=NIGHT, storage_options=options, prefer="parquet")
    assert {a.info.candid: a.packet for a in parquet} == expected  # simulated packets re-encode byte for byte
    uw, _, _ = open_sources([f"{http.url}{UW_NAME}"])
    assert sorted(a.packet for a in uw) == sorted(m.data for m in read_members(open(uw_tarball, "rb")))
