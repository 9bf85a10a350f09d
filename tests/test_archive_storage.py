"""The archive's storage side: S3 (moto's real S3 API on loopback) equals a local folder, a killed archiver
leaves nothing under a final name, and the Prefect flow archives and verifies a night."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alertdist.archive import ArchiveOptions, Destination, archive_night, read_manifest, verify_night
from alertdist.archive.storage import TEMP_PREFIX
from alertdist.nights.topics import TopicNaming
from alertdist.simulate.night import simulate_night
from tests.archive_support import publish_night

NIGHT = dt.date(2023, 10, 13)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def night(kafka_bootstrap, tmp_path_factory):
    naming = TopicNaming(survey=f"tstore{tmp_path_factory.mktemp('s').name[-3:].replace('_', '')}y")
    by_programme: dict[int, list[bytes]] = {}
    for alert in simulate_night(150, night=NIGHT, seed=9):
        by_programme.setdefault(alert.programid, []).append(alert.packet)
    return naming, publish_night(kafka_bootstrap, naming, NIGHT, by_programme), by_programme


def test_s3_and_a_local_folder_get_the_same_archive(kafka_bootstrap, night, s3_endpoint, tmp_path, unique):
    naming, state, _ = night
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    _create_bucket(s3_endpoint, f"archive-{unique}")
    url = f"s3://archive-{unique}/ztf/alerts"
    remote = archive_night(kafka_bootstrap, naming, NIGHT, url, ArchiveOptions(storage_options=options))
    local = archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path))
    assert remote == local  # same counts, offsets, sizes and checksums
    dest = Destination(url, options)
    assert dest.listdir() == sorted(p.name for p in tmp_path.iterdir())
    for archive in remote.programmes.values():
        for f in archive.files.values():
            assert dest.read_bytes(f["path"]) == (tmp_path / f["path"]).read_bytes()
    assert dest.read_bytes("MD5SUMS") == (tmp_path / "MD5SUMS").read_bytes()
    verify_night(url, read_manifest(url, naming.survey, f"{NIGHT:%Y%m%d}", options), state, options)


def test_a_failed_write_leaves_nothing_under_the_final_name(tmp_path, s3_endpoint, unique):
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    _create_bucket(s3_endpoint, f"fail-{unique}")
    for dest in (Destination(str(tmp_path)), Destination(f"s3://fail-{unique}/x", options)):
        with pytest.raises(RuntimeError, match="boom"), dest.open_atomic("a/b.bin") as out:
            out.write(b"x" * (6 * 1024 * 1024))
            raise RuntimeError("boom")
        assert not dest.exists("a/b.bin")
        assert [n for n in dest.listdir("a") if not n.startswith(TEMP_PREFIX)] == []
        assert dest.write_bytes("a/b.bin", b"whole").size == 5 and dest.read_bytes("a/b.bin") == b"whole"


def test_killing_the_archiver_leaves_no_partial_file_and_a_rerun_completes(kafka_bootstrap, night, tmp_path):
    naming, state, _ = night
    dest = tmp_path / "archive"
    env = {
        **os.environ,
        "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ALERTDIST_SURVEY": naming.survey,
        "ALERTDIST_HOME": str(tmp_path / "home"),
    }
    archive = ["archive", "--night", f"{NIGHT:%Y%m%d}", "--dest", str(dest), "--row-group-rows", "5"]
    command = [sys.executable, "-m", "alertdist.cli.main", *archive, "--work-dir", str(tmp_path)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once a final file is half-written under its temporary name
            if any(p.name.startswith(TEMP_PREFIX) and p.stat().st_size > 0 for p in dest.rglob("*")):
                break
            assert process.poll() is None, process.communicate()[1].decode()[-2000:]
            time.sleep(0.02)
        else:
            pytest.fail("the archiver never started writing")
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    # killed while writing: what was being written stands only under temporary names; any file under a final name
    # (a programme finished before the kill) is whole, the very bytes the re-run writes
    assert [p for p in dest.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    finals = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file() and not p.name.startswith(TEMP_PREFIX)}
    assert not any(p.parent.name == "manifests" or p.name == "MD5SUMS" for p in finals)  # the night is unfinished

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "verified" in rerun.stdout
    assert [p for p in dest.rglob("*") if p.name.startswith(TEMP_PREFIX)] == []  # stale temporaries removed
    manifest = read_manifest(str(dest), naming.survey, f"{NIGHT:%Y%m%d}")
    verify_night(str(dest), manifest, state)
    assert manifest.totals()["written"] == state.total_messages()
    assert {p: p.read_bytes() for p in finals} == finals


def test_the_flow_archives_and_verifies_a_night(kafka_bootstrap, night, tmp_path, prefect_server):
    from alertdist.flows.archive_night import archive_night as archive_flow

    naming, state, _ = night
    result = archive_flow(
        night=f"{NIGHT:%Y%m%d}", dest=str(tmp_path), bootstrap_servers=kafka_bootstrap, survey=naming.survey
    )
    assert result["written"] == result["read"] == state.total_messages()
    assert (tmp_path / result["manifest"]).is_file()
    verify_night(str(tmp_path), read_manifest(str(tmp_path), naming.survey, f"{NIGHT:%Y%m%d}"), state)


def test_a_local_write_syncs_the_folders_it_renamed_into_and_created(tmp_path, monkeypatch):
    """The file's bytes and its name: after the rename the folder is fsynced, and so is the parent of each folder
    the write created (a power cut must not lose the new name). Before, only the file itself was synced."""
    synced_folders = []
    real_fsync = os.fsync

    def spy(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            synced_folders.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    root = tmp_path / "archive"
    root.mkdir()
    dest = Destination(str(root))
    dest.write_bytes("parquet/night=20231013/programid=1/part-0.parquet", b"data")
    folder = root / "parquet/night=20231013/programid=1"
    assert (folder / "part-0.parquet").read_bytes() == b"data"
    assert synced_folders == [str(folder), str(folder.parent), str(folder.parent.parent), str(root)]
    synced_folders.clear()
    dest.write_bytes("MD5SUMS", b"x")
    assert synced_folders == [str(root)]
