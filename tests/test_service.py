"""The archive service against a real archive: published to a real broker, archived by the real archiver, served
by a real uvicorn server and asked by a real HTTP client (httpx). Local folder and moto's S3 server."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import stat
import uuid
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import TopicPartition

from alertdist import schemas
from alertdist.access.download import download_night
from alertdist.archive import ArchiveOptions, archive_night, read_manifest
from alertdist.archive.index import INDEX_SCHEMA, index_path
from alertdist.archive.tarball import read_members
from alertdist.avro import codec
from alertdist.cli.main import main
from alertdist.infra.s3_local import local_s3
from alertdist.kafka.clients import consumer
from alertdist.kafka.reading import read_to_end
from alertdist.nights.topics import TopicNaming
from alertdist.service.app import ServiceConfig
from alertdist.service.rights import TokenStore
from alertdist.service.server import serving_in_thread
from alertdist.simulate.cutouts import read_stamp
from alertdist.simulate.night import simulate_night
from tests.archive_support import publish_night

NIGHT = dt.date(2023, 10, 14)
LABEL = f"{NIGHT:%Y%m%d}"
PNG = b"\x89PNG\r\n\x1a\n"
#: rate limits no test reaches but the one about them, which sets its own
GENEROUS = dict.fromkeys(("anonymous", "standard", "bulk"), (10_000.0, 10_000))


def test_every_member_inflates_alone_from_its_restart_point(real_packets):
    """No broker: the writer's offsets hold for every shipped version and after a member that is no packet
    (no full flush after it: its successor starts from the same restart point)."""
    from alertdist.archive.index import IndexingTarball, read_packet
    from alertdist.archive.tarball import TarballWriter

    packets = list(real_packets)
    packets.insert(5, b"not an alert packet " * 40)
    plain, indexed = io.BytesIO(), io.BytesIO()
    writers = TarballWriter(plain), IndexingTarball(indexed)
    for candid, packet in enumerate(packets, 1):
        for writer in writers:
            writer.add(f"{candid}.avro", packet, 1_600_000_000)
    for writer in writers:
        writer.close()
    assert indexed.getvalue() == plain.getvalue()  # indexing changes no byte
    raw, where = indexed.getvalue(), writers[1].locations()
    assert where["offset"][4] != where["offset"][5] == where["offset"][6] != where["offset"][7]
    for i, packet in enumerate(packets):
        row = {"candid": i + 1, **{k: v[i] for k, v in where.items()}}
        assert read_packet(lambda _, start, end: raw[start:end], "t.tar.gz", row) == packet
        assert where["length"][i] < len(packet) + 2048 or i in (5, 6)


@pytest.fixture(scope="module")
def archived(kafka_bootstrap, real_packets, tmp_path_factory):
    """A night of simulated packets (4.02) in all three programmes plus the real ones (3.0, 3.3, 4.01) in
    programme 1, archived by the archiver; returns (root, naming, Kafka messages by programme: candid -> bytes)."""
    naming = TopicNaming(survey=f"sv{uuid.uuid4().hex[:6]}")
    by_programme: dict[int, list[bytes]] = {1: [], 2: [], 3: []}
    for alert in simulate_night(150, night=NIGHT, seed=11):
        by_programme[alert.programid].append(alert.packet)
    by_programme[1] += real_packets
    state = publish_night(kafka_bootstrap, naming, NIGHT, by_programme, partitions=2)
    root = tmp_path_factory.mktemp("served-archive")
    archive_night(kafka_bootstrap, naming, NIGHT, str(root), ArchiveOptions(row_group_rows=40))
    messages: dict[int, dict[int, bytes]] = {}
    c = consumer(kafka_bootstrap, f"svc-test-{uuid.uuid4().hex[:6]}")
    try:
        for programid in (1, 2, 3):
            topic = naming.programme_topic(NIGHT, programid)
            parts = [TopicPartition(topic, p, 0) for p in state.end_offsets[topic]]
            messages[programid] = {codec.peek(m.value()).candid: m.value() for m in read_to_end(c, parts)}
    finally:
        c.close()
    return root, naming, messages


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    store = TokenStore(tmp_path_factory.mktemp("tokens") / "tokens.json")
    issued = {role: store.add(f"user-{role}", role) for role in ("public", "partnership", "caltech")}
    issued["revoked"] = store.add("user-gone", "caltech")
    store.revoke("user-gone")
    return store, issued


@pytest.fixture(scope="module")
def service(archived, tokens):
    root, naming, _ = archived
    config = ServiceConfig(str(root), str(tokens[0].path), survey=naming.survey, rate_tiers=GENEROUS)
    with serving_in_thread(config) as (base, app):
        yield base, app


def _get(base: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{base}{path}", headers=headers, timeout=30, **kwargs)


# ------------------------------------------------------------------------------------------------- alerts


def test_alert_bytes_equal_the_kafka_message_for_every_schema_version(archived, service, tokens):
    _, _, messages = archived
    base, _ = service
    versions = set()
    for programid, token in ((1, None), (2, tokens[1]["partnership"]), (3, tokens[1]["caltech"])):
        for candid, message in messages[programid].items():
            response = _get(base, f"alerts/{candid}", token)
            assert response.status_code == 200, (programid, candid, response.text)
            assert response.headers["content-type"] == "application/avro"
            assert response.content == message
            versions.add(codec.schema_version_of(message))
    assert versions == set(schemas.available_versions())


def test_alert_bytes_equal_the_tarball_member(archived, service):
    root, naming, _ = archived
    base, _ = service
    with open(root / f"{naming.survey}_public_{LABEL}.tar.gz", "rb") as f:
        members = list(read_members(f))
    for member in members[:: max(1, len(members) // 25)] + members[-1:]:
        assert _get(base, f"alerts/{member.name[:-5]}").content == member.data


def test_alert_as_json_links_its_cutouts(archived, service):
    _, _, messages = archived
    base, _ = service
    candid, packet = next(iter(messages[1].items()))
    body = _get(base, f"alerts/{candid}", params={"format": "json"}).json()
    record = codec.decode(packet)
    assert body["candid"] == candid and body["objectId"] == record["objectId"]
    assert body["candidate"]["jd"] == record["candidate"]["jd"]
    assert body["cutoutScience"]["png"].endswith(f"/alerts/{candid}/cutouts/science.png")
    assert body["_archive"] == {"night": LABEL, "programid": 1}


def test_cutouts_as_fits_and_png(archived, service):
    from astropy.io import fits

    _, _, messages = archived
    base, _ = service
    for candid, packet in list(messages[1].items())[:3] + list(messages[1].items())[-3:]:
        record = codec.decode(packet)
        for kind, field in (
            ("science", "cutoutScience"),
            ("template", "cutoutTemplate"),
            ("difference", "cutoutDifference"),
        ):
            raw = _get(base, f"alerts/{candid}/cutouts/{kind}.fits")
            assert raw.status_code == 200 and raw.headers["content-type"] == "application/fits"
            with fits.open(io.BytesIO(raw.content), output_verify="ignore") as hdus:
                image = np.asarray(hdus[0].data)
            np.testing.assert_array_equal(image, read_stamp(record[field]["stampData"]))
            png = _get(base, f"alerts/{candid}/cutouts/{kind}.png")
            assert png.status_code == 200 and png.content.startswith(PNG)
    assert _get(base, f"alerts/{candid}/cutouts/other.png").status_code == 404


def test_unknown_alert_is_404(service):
    base, _ = service
    assert _get(base, "alerts/1").status_code == 404
    assert _get(base, "alerts/not-a-number").status_code == 422


# ------------------------------------------------------------------------------------------------ objects


def test_an_object_history_over_the_archive(archived, service):
    _, _, messages = archived
    base, _ = service
    objects: dict[str, list[int]] = {}
    for candid, packet in messages[1].items():
        objects.setdefault(codec.peek(packet).objectId, []).append(candid)
    object_id, candids = max(objects.items(), key=lambda kv: len(kv[1]))
    rows = _get(base, f"objects/{object_id}").json()
    assert sorted(r["candid"] for r in rows) == sorted(candids)
    assert all(r["night"] == LABEL and r["programid"] == 1 for r in rows)
    jds = [r["jd"] for r in rows]
    assert jds == sorted(jds)
    first = codec.decode(messages[1][rows[0]["candid"]])["candidate"]
    assert rows[0]["magpsf"] == pytest.approx(first["magpsf"]) and rows[0]["fid"] == first["fid"]
    table = pq.read_table(io.BytesIO(_get(base, f"objects/{object_id}", params={"format": "parquet"}).content))
    assert sorted(table.column("candid").to_pylist()) == sorted(candids)
    stream = _get(base, f"objects/{object_id}", params={"format": "arrow"}).content
    assert pa.ipc.open_stream(stream).read_all().num_rows == len(candids)
    curve = _get(base, f"objects/{object_id}/lightcurve.png")
    assert curve.status_code == 200 and curve.content.startswith(PNG)
    page = _get(base, f"objects/{object_id}/page")
    assert page.status_code == 200 and str(candids[0]) in page.text
    assert _get(base, "objects/ZTF00nothere").status_code == 404


def test_cone_and_time_search(archived, service):
    _, _, messages = archived
    base, _ = service
    candid, packet = list(messages[1].items())[7]
    c = codec.decode(packet)["candidate"]
    near = _get(base, "alerts", params={"ra": c["ra"], "dec": c["dec"], "radius": 1 / 3600}).json()
    assert candid in [r["candid"] for r in near]
    assert all(r["separation_deg"] <= 1 / 3600 for r in near)
    expected = {k for k, p in messages[1].items() if _separation(codec.decode(p)["candidate"], c) <= 0.5}
    wide = _get(base, "alerts", params={"ra": c["ra"], "dec": c["dec"], "radius": 0.5}).json()
    assert {r["candid"] for r in wide} == expected
    after = _get(base, "alerts", params={"ra": c["ra"], "dec": c["dec"], "radius": 0.5, "since": c["jd"] + 1e-6}).json()
    assert candid not in {r["candid"] for r in after}
    assert all(r["jd"] > c["jd"] for r in after)
    assert _get(base, "alerts", params={"ra": 400, "dec": 0, "radius": 1}).status_code == 422


def _separation(a: dict, b: dict) -> float:
    r1, d1, r2, d2 = map(np.radians, (a["ra"], a["dec"], b["ra"], b["dec"]))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return float(np.degrees(2 * np.arcsin(np.sqrt(h))))


# ------------------------------------------------------------------------------------ nights and schemas


def test_nights_and_schemas(archived, service, tokens):
    _root, _naming, messages = archived
    base, _ = service
    assert _get(base, "nights").json() == [
        {"night": LABEL, "alerts": len(messages[1]), "programmes": {"1": len(messages[1])}}
    ]
    everything = _get(base, "nights", tokens[1]["caltech"]).json()[0]
    assert everything["programmes"] == {str(p): len(messages[p]) for p in (1, 2, 3)}
    night = _get(base, f"nights/{LABEL}").json()
    assert set(night["manifest"]["programmes"]) == {"1"}
    assert set(night["schema_versions"]) == set(schemas.available_versions())
    assert _get(base, "nights/20000101").status_code == 404
    for version in schemas.available_versions():
        assert _get(base, f"schemas/{version}").text == schemas.load_schema_text(version)
    assert _get(base, "schemas/9.9").status_code == 404
    assert _get(base, "openapi.json").json()["info"]["title"] == "alertdist archive service"


# ---------------------------------------------------------------------------------------------- rights


def test_programmes_2_and_3_only_for_roles_that_allow_them(archived, service, tokens):
    _, _, messages = archived
    base, _ = service
    issued = tokens[1]
    missing = _get(base, "alerts/1")
    for programid, allowed in ((2, ("partnership", "caltech")), (3, ("caltech",))):
        candid, packet = next(iter(messages[programid].items()))
        object_id = codec.peek(packet).objectId
        for role in ("public", "partnership", "caltech"):
            response = _get(base, f"alerts/{candid}", issued[role])
            if role in allowed:
                assert response.status_code == 200 and response.content == packet
            else:  # refused exactly as a candid that does not exist
                assert (response.status_code, response.content) == (missing.status_code, missing.content)
        anonymous = [
            _get(base, path)
            for path in (f"alerts/{candid}", f"alerts/{candid}/cutouts/science.png", f"alerts/{candid}/page")
        ]
        assert {(r.status_code, r.content) for r in anonymous} == {(404, missing.content)}
        hidden = _get(base, f"objects/{object_id}")
        if hidden.status_code == 200:  # the object has public alerts too: only those are shown
            assert {r["programid"] for r in hidden.json()} == {1}
        else:
            assert (hidden.status_code, hidden.content) == (404, missing.content)


def test_a_revoked_or_unknown_token_is_refused(service, tokens):
    base, _ = service
    for token in (tokens[1]["revoked"], "ad_not-a-token"):
        response = _get(base, "nights", token)
        assert response.status_code == 401 and "token" in response.json()["detail"]
    assert _get(base, "nights", tokens[1]["public"]).status_code == 200


def test_files_of_other_programmes_are_hidden(archived, service, tokens):
    root, naming, _ = archived
    base, _ = service
    partnership = f"{naming.survey}_partnership_{LABEL}.tar.gz"
    listing = _get(base, "files/").text
    assert f"{naming.survey}_public_{LABEL}.tar.gz" in listing and partnership not in listing
    assert _get(base, f"files/{partnership}").status_code == 404
    assert _get(base, f"files/parquet/night={LABEL}/programid=2/part-0.parquet").status_code == 404
    assert "programid=2" not in _get(base, f"files/parquet/night={LABEL}/").text
    assert partnership not in _get(base, "files/MD5SUMS").text
    manifest = json.loads(_get(base, f"files/manifests/{naming.survey}_{LABEL}.json").content)
    assert set(manifest["programmes"]) == {"1"}
    full = _get(base, f"files/{partnership}", tokens[1]["partnership"])
    assert full.content == (root / partnership).read_bytes()
    assert partnership in _get(base, "files/MD5SUMS", tokens[1]["caltech"]).text
    assert _get(base, "files/../secret").status_code == 404


def test_rate_limits_answer_429_with_retry_after(archived, tokens):
    root, naming, _ = archived
    config = ServiceConfig(
        str(root),
        str(tokens[0].path),
        survey=naming.survey,
        rate_tiers={"anonymous": (0.5, 3), "standard": (0.5, 5), "bulk": (100.0, 100)},
    )
    with serving_in_thread(config) as (base, _):
        codes = [_get(base, "nights", tokens[1]["caltech"]).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5] == 429
        limited = _get(base, "nights", tokens[1]["caltech"])
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert "retry after" in limited.json()["detail"]
        assert _get(base, "nights", tokens[1]["partnership"]).status_code == 200  # per token


def test_tokens_are_stored_hashed_and_private(tokens):
    store, issued = tokens
    text = store.path.read_text()
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert not any(token in text for token in issued.values())
    assert {e["name"]: e["revoked"] for e in store.list()}["user-gone"] is True


def test_token_commands(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("ALERTDIST_HOME", str(home))
    assert main(["serve", "token", "add", "alice", "--role", "partnership"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("ad_")
    assert main(["serve", "token", "list"]) == 0
    listed = capsys.readouterr().out
    assert "alice" in listed and "partnership" in listed and token not in listed
    store = TokenStore(home / "service" / "tokens.json")
    assert store.caller(token).programmes == {1, 2}
    assert main(["serve", "token", "revoke", "alice"]) == 0
    assert store.caller(token) is None
    with pytest.raises(SystemExit):  # not a reader's role: refused by the parser
        main(["serve", "token", "add", "bob", "--role", "archiver"])


# ----------------------------------------------------------------------------------------------- files


def test_files_with_ranges_and_download_resumes_against_the_service(archived, service, tmp_path):
    root, naming, _ = archived
    base, _ = service
    name = f"{naming.survey}_public_{LABEL}.tar.gz"
    whole = (root / name).read_bytes()
    part = _get(base, f"files/{name}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole)}"
    assert _get(base, f"files/{name}", headers={"Range": f"bytes={len(whole)}-"}).status_code == 416
    (tmp_path / f"{name}.part").write_bytes(whole[:1000])
    report = download_night(NIGHT, f"{base}files/", tmp_path, programmes=[1])
    by_path = {f.path: f for f in report.files}
    assert by_path[name].resumed_from == 1000 and (tmp_path / name).read_bytes() == whole
    parquet = f"parquet/night={LABEL}/programid=1/part-0.parquet"
    assert (tmp_path / parquet).read_bytes() == (root / parquet).read_bytes()
    assert all(f.checked for f in report.files)


def test_replay_and_batch_filters_read_a_night_through_the_service(archived, service):
    """`alertdist replay` and `alertdist filter batch` open their sources with `open_sources`: over the service an
    anonymous caller reads the public programme's tarball, checked against the MD5SUMS the service shows."""
    from alertdist.access.readers import open_sources

    _, _, messages = archived
    base, _ = service
    alerts, counts, _ = open_sources([f"{base}files/"], archived_night=NIGHT)
    read = {a.info.candid: a.packet for a in alerts}
    assert read == messages[1]
    assert sum(c.bad for c in counts) == 0


# -------------------------------------------------------------------------------------------- the index


def test_the_index_is_in_the_manifest_and_sorted_by_candid(archived):
    root, naming, messages = archived
    manifest = read_manifest(str(root), naming.survey, LABEL)
    for programid, archive in manifest.programmes.items():
        path = root / archive.index["path"]
        assert archive.index["path"] == index_path(LABEL, programid)
        assert archive.index["size"] == path.stat().st_size
        table = pq.read_table(path)
        assert table.schema.equals(INDEX_SCHEMA)
        assert table.column("candid").to_pylist() == sorted(messages[programid])


def test_backfill_writes_the_same_index_as_the_archiver(archived, tmp_path, monkeypatch):
    root, naming, _ = archived
    copy = tmp_path / "old-archive"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "index")
    manifest_file = copy / "manifests" / f"{naming.survey}_{LABEL}.json"
    body = json.loads(manifest_file.read_text())
    for programme in body["programmes"].values():
        del programme["index"]  # as a manifest written before the index existed
    manifest_file.write_text(json.dumps(body))
    monkeypatch.setenv("ALERTDIST_SURVEY", naming.survey)
    assert main(["archive", "index", "--night", LABEL, "--archive", str(copy)]) == 0
    for programid in (1, 2, 3):
        path = index_path(LABEL, programid)
        assert (copy / path).read_bytes() == (root / path).read_bytes()
    assert manifest_file.read_bytes() == (root / "manifests" / f"{naming.survey}_{LABEL}.json").read_bytes()


def test_backfill_refuses_a_tarball_it_did_not_write(archived, tmp_path):
    root, naming, _ = archived
    copy = tmp_path / "other"
    shutil.copytree(root, copy)
    name = copy / f"{naming.survey}_caltech_{LABEL}.tar.gz"
    import gzip

    name.write_bytes(gzip.compress(gzip.decompress(name.read_bytes()), mtime=0))
    body = json.loads((copy / "manifests" / f"{naming.survey}_{LABEL}.json").read_text())
    import hashlib

    for programme in body["programmes"].values():
        if programme["programid"] == 3:
            programme["files"]["tarball"]["sha256"] = hashlib.sha256(name.read_bytes()).hexdigest()
            programme["files"]["tarball"]["size"] = name.stat().st_size
    (copy / "manifests" / f"{naming.survey}_{LABEL}.json").write_text(json.dumps(body))
    from alertdist.archive.index import IndexError_, backfill_index

    with pytest.raises(IndexError_, match="not byte for byte what this archiver writes"):
        backfill_index(str(copy), naming.survey, LABEL)


# ------------------------------------------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def s3_archive(archived):
    pytest.importorskip("boto3")
    with local_s3() as s3:
        yield s3.upload_folder(archived[0], "service-test", "archive"), s3.storage_options


def test_served_from_s3_with_range_reads(archived, s3_archive, tokens):
    root, naming, messages = archived
    url, options = s3_archive
    config = ServiceConfig(url, str(tokens[0].path), storage_options=options, survey=naming.survey, rate_tiers=GENEROUS)
    with serving_in_thread(config) as (base, app):
        store = app.state.store
        assert _get(base, "nights").json()[0]["night"] == LABEL
        _get(base, f"alerts/{next(iter(messages[1]))}")  # loads the indexes
        tarball = (root / f"{naming.survey}_public_{LABEL}.tar.gz").stat().st_size
        sample = list(messages[1].items())[::7]
        before = store.bytes_read
        for candid, packet in sample:
            assert _get(base, f"alerts/{candid}").content == packet
        per_lookup = (store.bytes_read - before) / len(sample)
        assert per_lookup < 3 * max(len(p) for _, p in sample) and per_lookup < tarball / 5
        assert _get(base, f"alerts/{next(iter(messages[2]))}").status_code == 404
        obj = codec.peek(sample[0][1]).objectId
        assert sample[0][0] in [r["candid"] for r in _get(base, f"objects/{obj}").json()]


# ---------------------------------------------------------------------------------------------- browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"


def test_an_alert_page_in_a_real_browser_shows_three_cutouts_and_a_light_curve(archived, service):
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: run `make setup-test` (installs Debian's chromium) and retry")
    from playwright.sync_api import sync_playwright

    _, _, messages = archived
    base, _ = service
    candid, packet = next(iter(messages[1].items()))
    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1100})
            page.goto(f"{base}alerts/{candid}/page", wait_until="networkidle", timeout=60_000)
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.alt, e.complete && e.naturalWidth, e.naturalHeight])"
            )
            text = page.inner_text("body")
            page.screenshot(path=str(OUTPUT / "service-alert-page.png"), full_page=True)
        finally:
            browser.close()
    shown = {alt: (width, height) for alt, width, height in images}
    assert set(shown) == {"science cutout", "template cutout", "difference cutout", "light curve"}
    assert all(width > 100 and height > 100 for width, height in shown.values()), shown
    assert codec.peek(packet).objectId in text and str(candid) in text


# ------------------------------------------------------------------------------------------------- docs

DOCS = Path(__file__).resolve().parents[1] / "README.md"  # its section for scientists


def test_the_docs_curl_and_python_examples_run_as_written(archived, service, tokens, tmp_path):
    import re
    import subprocess
    import sys

    _, _, messages = archived
    base, _ = service
    text = DOCS.read_text()
    curl = [b for b in re.findall(r"^```shell\n(.*?)^```$", text, re.M | re.S) if "curl" in b]
    python = re.findall(r"^```py\n(.*?)^```$", text, re.M | re.S)
    assert len(curl) == 1 and len(python) == 1
    candid, packet = next(iter(messages[2].items()))  # a partnership alert: the token is needed
    env = {
        **os.environ,
        "SERVICE": base.rstrip("/"),
        "CANDID": str(candid),
        "OBJECT": codec.peek(packet).objectId,
        "TOKEN": tokens[1]["partnership"],
    }
    public, public_packet = next(iter(messages[1].items()))  # curl's lines send the token only where it says
    env.update(CANDID=str(public), OBJECT=codec.peek(public_packet).objectId)
    shell = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", curl[0]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert shell.returncode == 0, shell.stderr
    assert (tmp_path / f"{public}.avro").read_bytes() == public_packet
    assert (tmp_path / "science.png").read_bytes().startswith(PNG)
    assert (tmp_path / "lightcurve.png").read_bytes().startswith(PNG)
    assert json.loads((tmp_path / f"{public}.json").read_text())["candid"] == public
    assert public in [r["candid"] for r in json.loads((tmp_path / f"{env['OBJECT']}.json").read_text())]
    env.update(CANDID=str(candid), OBJECT=codec.peek(packet).objectId)
    ran = subprocess.run(
        [sys.executable, "-c", python[0]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    assert codec.peek(packet).objectId in ran.stdout and "alerts within 36 arcsec" in ran.stdout


# ------------------------------------------------------------------------------------ across nights


def _with_candid(packet: bytes, candid: int) -> bytes:
    """The packet with its candid (top level and candidate) changed in place: another alert of the object."""
    from alertdist.avro.container import zigzag_varint

    old, new = zigzag_varint(codec.peek(packet).candid), zigzag_varint(candid)
    assert len(old) == len(new) and packet.count(old) == 2
    return packet.replace(old, new)


def test_an_object_history_and_cone_search_span_nights(kafka_bootstrap, archived, tokens, tmp_path):
    """A second night, archived beside a copy of the first, holds new alerts of some of its objects."""
    first, naming, messages = archived
    root = tmp_path / "two-nights"
    shutil.copytree(first, root)
    later = NIGHT + dt.timedelta(days=1)
    real = [p for p in messages[1].values() if codec.schema_version_of(p) == "4.01"][:2]
    again = {codec.peek(p).candid + 7: _with_candid(p, codec.peek(p).candid + 7) for p in real}
    publish_night(kafka_bootstrap, naming, later, {1: list(again.values())}, partitions=1)
    archive_night(kafka_bootstrap, naming, later, str(root), ArchiveOptions())
    config = ServiceConfig(str(root), str(tokens[0].path), survey=naming.survey, rate_tiers=GENEROUS)
    with serving_in_thread(config) as (base, _):
        assert [n["night"] for n in _get(base, "nights").json()] == [LABEL, f"{later:%Y%m%d}"]
        for candid, packet in again.items():
            assert _get(base, f"alerts/{candid}").content == packet
            object_id = codec.peek(packet).objectId
            rows = _get(base, f"objects/{object_id}").json()
            nights = {r["night"] for r in rows}
            assert nights == {LABEL, f"{later:%Y%m%d}"} and candid in [r["candid"] for r in rows]
            c = codec.decode(packet)["candidate"]
            near = _get(base, "alerts", params={"ra": c["ra"], "dec": c["dec"], "radius": 1 / 3600}).json()
            assert {candid, candid - 7} <= {r["candid"] for r in near}
