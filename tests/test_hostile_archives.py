"""A hostile or broken archive never names a place, and what a replay produces is what was verified.

The archives here are built by hand (a manifest whose entries name other places, a server that redirects, a
server whose file changes between two reads) and served from loopback: a local folder, and Python's
http.server on 127.0.0.1. Each test fails on the code before issue 23.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import threading
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alertdist.access import ArchiveAccessError, download_night
from alertdist.access.listing import check_sources
from alertdist.access.names import ArchiveNameError, archive_name, inside_url, landing
from alertdist.access.readers import ArchiveReadError, open_sources
from alertdist.archive.manifest import FORMAT
from alertdist.archive.tarball import read_members
from alertdist.cli.main import main as cli
from alertdist.kafka.clients import admin_client
from alertdist.nights.dates import parse_night
from tests.conftest import ARCHIVE_2018
from tests.kafka_support import read_to_end

NIGHT = "20231012"
DAY = parse_night(NIGHT)
TARBALL = f"ztf_public_{NIGHT}.tar.gz"


def _manifest(path: str, data: bytes) -> bytes:
    """A manifest of one programme whose tarball entry is ``path``, with the true size and checksums of ``data``."""
    entry = {
        "path": path,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
        "crc32": "00000000",
    }
    programme = {
        "programid": 1,
        "name": "public",
        "topic": f"ztf_{NIGHT}_programid1",
        "partitions": {},
        "counts": {},
        "schema_versions": {},
        "files": {"tarball": entry},
    }
    body = {"format": FORMAT, "survey": "ztf", "night": NIGHT, "programmes": {"1": programme}}
    return json.dumps(body).encode()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _small_tarball(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# ----------------------------------------------------------------------------------------- the name rule


@pytest.mark.parametrize(
    "path",
    ["../x", "/abs", "//host/x", "a/../../x", "parquet/night=20231012/programid=1/../../x.parquet", f"{TARBALL}\n"],
)
def test_a_name_the_archive_never_writes_is_refused(path, tmp_path):
    with pytest.raises(ArchiveNameError, match="not a name an archive writes"):
        archive_name(path)
    with pytest.raises(ArchiveNameError):
        landing(tmp_path, path)


def test_names_the_archive_writes_are_accepted_for_their_night_only(tmp_path):
    for path in (
        TARBALL,
        "MD5SUMS",
        f"manifests/ztf_{NIGHT}.json",
        f"parquet/night={NIGHT}/programid=2/part-0.parquet",
    ):
        assert landing(tmp_path, path, night=DAY) == tmp_path / path
    with pytest.raises(ArchiveNameError, match="of night 20231013"):
        archive_name("ztf_public_20231013.tar.gz", night=DAY)
    with pytest.raises(ArchiveNameError, match="not a name"):  # not as the archiver writes a programid
        archive_name(f"parquet/night={NIGHT}/programid=007/part-0.parquet")
    (tmp_path / "parquet").symlink_to(tmp_path.parent)  # a link already in the destination, pointing out
    with pytest.raises(ArchiveNameError, match="outside"):
        landing(tmp_path, f"parquet/night={NIGHT}/programid=1/part-0.parquet")


def test_a_url_stays_under_the_archive_url():
    base = "http://127.0.0.1:8000/alerts/"
    assert inside_url(base, "http://127.0.0.1:8000/alerts/ztf_public_20231012.tar.gz")
    for other in (
        "http://127.0.0.1:8001/alerts/x",
        "https://127.0.0.1:8000/alerts/x",
        "http://evil:8000/alerts/x",
        "http://127.0.0.1:8000/x",
        "http://127.0.0.1:8000/alerts/../x",
        "http://127.0.0.1:8000/alertsx/y",
        "http://127.0.0.1:80x/alerts/y",
        "http://user@127.0.0.1:8000/alerts/y",
    ):
        assert not inside_url(base, other), other


# ---------------------------------------------------------------------------------- downloads from a folder


def _hostile_folder(tmp_path: Path, path: str, out: Path) -> Path:
    """An archive folder whose manifest lists ``path``, with the payload placed where the old code read it from
    (``<root>/<path>``), so only the name check stands between the archive and a write outside ``out``."""
    root = tmp_path / "srv" / "archive"
    payload = ARCHIVE_2018.read_bytes()
    _write(root / "manifests" / f"ztf_{NIGHT}.json", _manifest(path, payload))
    _write(Path(f"{root}/{path}".replace("//", "/")).resolve(), payload)
    return root


@pytest.mark.parametrize("how", ["../x", "/abs", "//host/x", "a/../../x"])
def test_a_manifest_path_that_names_another_place_is_refused_and_nothing_is_written(how, tmp_path, capsys):
    out = tmp_path / "out"
    target = out / "d"
    path = {
        "/abs": str(out / "abs-target"),  # absolute, inside this test's folder (the old code wrote it)
        "//host/x": f"//host-{uuid.uuid4().hex[:8]}/x",
    }.get(how, how)
    root = _hostile_folder(tmp_path, path, out)
    assert cli(["download", NIGHT, "--from", str(root), "--to", str(target), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "not a name an archive writes" in err and repr(path) in err
    assert _tree(out) == [], "nothing may be written, inside the destination or outside it"
    if how == "//host/x":
        assert not Path(path).parent.exists()


def test_a_replay_refuses_a_manifest_path_that_names_another_place(tmp_path):
    root = _hostile_folder(tmp_path, "../x", tmp_path)
    with pytest.raises(ArchiveNameError, match=r"'../x'"):
        open_sources([str(root)], archived_night=DAY)


# --------------------------------------------------------------------------------------------- over HTTP


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; ``server.redirect`` maps a path to a URL to redirect it to, ``server.second`` a path to the
    bytes sent from its second GET on (a file that changes between two reads)."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        server.requests.append(self.path)
        if self.path in server.redirect:
            self.send_response(302)
            self.send_header("Location", server.redirect[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        local = Path(self.translate_path(self.path))
        if not local.is_file():
            super().do_GET()  # folders (index pages) and 404s
            return
        data = local.read_bytes()
        if self.path in server.second and server.requests.count(self.path) > 1:
            data = server.second[self.path]
        start, end = 0, len(data)
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if wanted:  # fsspec's HTTP files read by ranges
            start, end = int(wanted[1]), min(int(wanted[2]) + 1 if wanted[2] else end, end)
        self.send_response(206 if wanted else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        if wanted:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:end])


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(folder)))
        self.requests: list[str] = []
        self.redirect: dict[str, str] = {}
        self.second: dict[str, bytes] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


@pytest.fixture
def serve():
    servers = []

    def start(folder: Path) -> _Server:
        server = _Server(folder)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_an_http_archive_cannot_name_a_file_outside_its_url(tmp_path, serve):
    srv = tmp_path / "srv"
    payload = ARCHIVE_2018.read_bytes()
    _write(srv / "archive" / "manifests" / f"ztf_{NIGHT}.json", _manifest("../x", payload))
    _write(srv / "x", payload)  # beside the archive on the same server: reachable as archive/../x
    server = serve(srv)
    out = tmp_path / "out"
    with pytest.raises(ArchiveNameError, match=r"'../x'"):
        download_night(DAY, f"{server.url}archive/", out / "d")
    assert "/x" not in server.requests and _tree(out) == []


def test_a_listed_file_on_another_host_is_refused_before_any_request(tmp_path, serve, capsys):
    srv = tmp_path / "srv"
    _write(srv / "manifests" / f"ztf_{NIGHT}.json", _manifest("//localhost/x", b"payload"))
    server = serve(srv)
    assert cli(["download", NIGHT, "--from", server.url, "--to", str(tmp_path / "d"), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "not a name an archive writes" in err and "'//localhost/x'" in err and "refused" in err
    assert server.requests.count("/x") == 0
    assert not (tmp_path / "d").exists()


def test_a_redirect_to_another_host_is_refused(tmp_path, serve, capsys):
    """The archive's server sends the tarball's GET to another server (another port: another origin), which
    serves exactly the bytes the manifest describes: the old code followed and kept them."""
    payload = ARCHIVE_2018.read_bytes()
    archive = tmp_path / "archive"
    _write(archive / "manifests" / f"ztf_{NIGHT}.json", _manifest(TARBALL, payload))
    _write(archive / "MD5SUMS", f"{hashlib.md5(payload).hexdigest()}  {TARBALL}\n".encode())
    _write(archive / TARBALL, b"the archive's own copy is not what is wanted")
    elsewhere = serve(_write(tmp_path / "elsewhere" / TARBALL, payload).parent)
    server = serve(archive)
    server.redirect[f"/{TARBALL}"] = f"{elsewhere.url}{TARBALL}"
    out = tmp_path / "out"
    assert cli(["download", NIGHT, "--from", server.url, "--to", str(out), "--what", "tarball", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert f"redirected to {elsewhere.url}{TARBALL}, outside the archive {server.url}: refused" in err
    assert elsewhere.requests == [], "nothing may be read from the other host"
    assert not (out / TARBALL).exists()


def test_a_redirect_within_the_archive_is_followed(tmp_path, serve):
    payload = ARCHIVE_2018.read_bytes()
    archive = tmp_path / "archive"
    _write(archive / "manifests" / f"ztf_{NIGHT}.json", _manifest(TARBALL, payload))
    _write(archive / "moved" / TARBALL, payload)
    server = serve(archive)
    server.redirect[f"/{TARBALL}"] = f"{server.url}moved/{TARBALL}"
    report = download_night(DAY, server.url, tmp_path / "out", ["tarball"])
    assert (tmp_path / "out" / TARBALL).read_bytes() == payload and report.files[0].checked == ("size", "md5", "sha256")


# ----------------------------------------------------------------------- verified, read once, then produced


def _changing_archive(tmp_path: Path, serve) -> tuple[_Server, bytes, bytes]:
    """An archive whose tarball, from its second GET on, is another valid tarball (fewer, different packets)."""
    payload = ARCHIVE_2018.read_bytes()
    with open(ARCHIVE_2018, "rb") as f:
        members = [(m.name, m.data) for m in read_members(f)]
    other = _small_tarball(members[:3])
    archive = tmp_path / "archive"
    _write(archive / "manifests" / f"ztf_{NIGHT}.json", _manifest(TARBALL, payload))
    _write(archive / "MD5SUMS", f"{hashlib.md5(payload).hexdigest()}  {TARBALL}\n".encode())
    _write(archive / TARBALL, payload)
    server = serve(archive)
    server.second[f"/{TARBALL}"] = other
    return server, payload, other


@pytest.mark.parametrize("how", ["archive root", "tarball URL"])
def test_what_is_produced_is_what_was_verified_read_once(how, tmp_path, serve):
    server, payload, _ = _changing_archive(tmp_path, serve)
    spec = [server.url] if how == "archive root" else [f"{server.url}{TARBALL}"]
    alerts, _counts, names = open_sources(spec, archived_night=DAY if how == "archive root" else None)
    produced = sorted(a.packet for a in alerts)
    assert produced == sorted(m.data for m in read_members(io.BytesIO(payload)))
    assert server.requests.count(f"/{TARBALL}") == 1, "one read: the bytes verified are the bytes produced"
    assert names == [f"{server.url}{TARBALL}"]


def test_a_named_tarball_url_is_not_read_from_another_host(tmp_path, serve):
    server, payload, _ = _changing_archive(tmp_path, serve)
    elsewhere = serve(_write(tmp_path / "elsewhere" / TARBALL, payload).parent)
    server.redirect[f"/{TARBALL}"] = f"{elsewhere.url}{TARBALL}"
    with pytest.raises(ArchiveAccessError, match=r"outside the archive .*: refused"):
        open_sources([f"{server.url}{TARBALL}"])
    assert elsewhere.requests == []


def test_a_replay_into_kafka_produces_the_bytes_it_verified(kafka_bootstrap, tmp_path, serve):
    server, payload, _ = _changing_archive(tmp_path, serve)
    topic = f"verified_once_{uuid.uuid4().hex[:8]}"
    command = ["--bootstrap-servers", kafka_bootstrap, "replay", server.url, "--archived-night", NIGHT]
    assert cli([*command, "--topic", topic, "--quiet"]) == 0
    produced = sorted(m.value() for m in read_to_end(kafka_bootstrap, [topic], timeout=60))
    assert produced == sorted(m.data for m in read_members(io.BytesIO(payload)))
    assert server.requests.count(f"/{TARBALL}") == 1


def test_a_spool_is_removed_when_the_stream_is_done(tmp_path, serve, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    server, _, _ = _changing_archive(tmp_path, serve)
    alerts, _, _ = open_sources([server.url], archived_night=DAY)
    assert sum(1 for _ in alerts) == 30
    assert list((tmp_path / "tmp").iterdir()) == []


# ---------------------------------------------------------------------------------- replay needs a checksum


def test_a_replay_without_a_checksum_is_refused_unless_allowed(kafka_bootstrap, tmp_path, capsys):
    tarball = _write(tmp_path / "ztf_public_20180819.tar.gz", ARCHIVE_2018.read_bytes())  # no MD5SUMS beside
    topic = f"unverified_{uuid.uuid4().hex[:8]}"
    command = ["--bootstrap-servers", kafka_bootstrap, "replay", str(tarball), "--topic", topic, "--quiet"]
    assert cli(command) != 0
    err = capsys.readouterr().err
    assert "no checksum" in err and "--allow-unverified" in err
    assert topic not in admin_client(kafka_bootstrap).list_topics(timeout=10).topics  # nothing produced or created
    assert cli([*command, "--allow-unverified"]) == 0
    assert len(read_to_end(kafka_bootstrap, [topic], timeout=60)) == 30

    _write(tmp_path / "MD5SUMS", f"{hashlib.md5(ARCHIVE_2018.read_bytes()).hexdigest()}  {tarball.name}\n".encode())
    again = f"verified_{uuid.uuid4().hex[:8]}"
    assert cli(["--bootstrap-servers", kafka_bootstrap, "replay", str(tarball), "--topic", again, "--quiet"]) == 0
    assert len(read_to_end(kafka_bootstrap, [again], timeout=60)) == 30


# ------------------------------------------------------------------------------------ clear errors, no guessing


def test_a_damaged_file_of_an_archive_root_produces_nothing(tmp_path):
    payload = ARCHIVE_2018.read_bytes()
    archive = tmp_path / "archive"
    _write(archive / "manifests" / f"ztf_{NIGHT}.json", _manifest(TARBALL, payload))
    _write(archive / TARBALL, payload[:-1] + bytes([payload[-1] ^ 1]))
    with pytest.raises(ArchiveReadError, match=r"is damaged \(md5 .*sha256"):
        open_sources([str(archive)], archived_night=DAY)


@pytest.mark.parametrize("over", ["folder", "http"])
def test_a_listed_file_that_is_missing_is_not_found_not_damaged(over, tmp_path, serve):
    archive = tmp_path / "archive"
    _write(archive / "manifests" / f"ztf_{NIGHT}.json", _manifest(TARBALL, b"never written"))
    url = str(archive) if over == "folder" else serve(archive).url
    with pytest.raises(ArchiveAccessError, match=f"{TARBALL}: not found") as failure:
        open_sources([url], archived_night=DAY)
    assert "damaged" not in str(failure.value).replace("not damaged", "")
    with pytest.raises(ArchiveAccessError, match=f"{TARBALL}: not found"):
        download_night(DAY, url, tmp_path / "out")


def test_a_file_that_is_not_an_archive_says_what_a_source_can_be(tmp_path):
    text = _write(tmp_path / "passwd", b"root:x:0:0:root:/root:/bin/bash\n")
    for night in (None, DAY):
        with pytest.raises(ArchiveAccessError, match=r"neither an archive root .* a tarball .* nor a Parquet file"):
            check_sources([str(text)], archived_night=night)


def test_a_download_is_synced_and_so_is_its_folder_after_the_rename(tmp_path, monkeypatch):
    """A crash right after a download must not lose the file or its new name (the name lives in the folder)."""
    payload = ARCHIVE_2018.read_bytes()
    archive = tmp_path / "archive"
    _write(archive / "manifests" / f"ztf_{NIGHT}.json", _manifest(TARBALL, payload))
    _write(archive / TARBALL, payload)
    out = tmp_path / "out"
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def watched_fsync(fd: int) -> None:
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def watched_replace(src, dst) -> None:
        events.append(("replace", os.path.realpath(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(os, "replace", watched_replace)
    download_night(DAY, str(archive), out, ["tarball"])
    for final in (out / TARBALL, out / "manifests" / f"ztf_{NIGHT}.json", out / "MD5SUMS"):
        renamed = events.index(("replace", str(final.resolve())))
        assert ("fsync", str(final.parent.resolve())) in events[renamed + 1 :], final
        assert any(kind == "fsync" and path.startswith(str(final.parent.resolve())) for kind, path in events[:renamed])


@pytest.mark.parametrize("field,value", [("size", "1e99"), ("size", -1), ("sha256", "../../x"), ("md5", 5)])
def test_a_manifest_entry_of_the_wrong_form_is_refused_before_fetching(field, value, tmp_path):
    payload = ARCHIVE_2018.read_bytes()
    archive = tmp_path / "archive"
    body = json.loads(_manifest(TARBALL, payload))
    body["programmes"]["1"]["files"]["tarball"][field] = value
    _write(archive / "manifests" / f"ztf_{NIGHT}.json", json.dumps(body).encode())
    _write(archive / TARBALL, payload)
    with pytest.raises(ArchiveAccessError, match=f"has no valid {field}; the manifest is damaged or hostile"):
        download_night(DAY, str(archive), tmp_path / "out")
    assert not (tmp_path / "out").exists()
