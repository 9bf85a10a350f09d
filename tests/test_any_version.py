"""Any ZTF packet, lossless in every format; archives checked whenever they are read (real broker, real data).

The packets of unshipped schema versions are made here from 4.01 ones (ZTF's own from ../shared/data when it is
there, else the project's simulated 4.01 packets): a writer schema
with a new optional field in `candidate` and in `prv_candidates`, another doc string, another version number, the
other header key order and goavro-style random sync markers. Each goes through the publisher, the archiver
(tarball and Parquet), both replays and the batch filter, and must come back byte for byte.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
import os
import uuid

import duckdb
import fastavro
import pyarrow.dataset as ds
import pytest

from alertdist import schemas
from alertdist.access.readers import ArchiveReadError, open_sources, packets_for_batch, parquet_alerts
from alertdist.access.replay import ReplayError
from alertdist.archive import archive_night
from alertdist.archive.parquet import ParquetPartWriter
from alertdist.archive.tarball import read_members
from alertdist.avro import codec
from alertdist.avro.arrow import HEADERS_KEY, night_table_columns, packet_headers, writer_schema_of
from alertdist.avro.arrow_decoder import AlertDecoder
from alertdist.avro.container import build_container
from alertdist.cli.main import main as cli
from alertdist.jobs.replay import ReplayRequest, replay, replay_into_night
from alertdist.kafka.clients import admin_client
from alertdist.nights.state import read_night_state
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import publish
from alertdist.publish.sources import SourceError, SourcePacket, simulated_alerts, tarball_packets
from alertdist.settings import Settings
from tests.kafka_support import read_to_end

NIGHT = dt.date(2023, 10, 12)  # the real 4.01 packets' night
OTHER_NIGHT = dt.date(2023, 10, 13)
SMALL = TopicSettings(partitions=3)


def _variant_schema(version: str) -> dict:
    """4.01 as ZTF might publish a later version: new optional fields, another doc string, another number."""
    schema = schemas.load_schema("4.01")
    schema["version"] = version
    fields = {f["name"]: f for f in schema["fields"]}
    candidate = fields["candidate"]["type"]
    candidate["fields"].append({"default": None, "doc": "a new score", "name": "newscore", "type": ["null", "float"]})
    candidate["fields"][0]["doc"] = "Observation Julian date at start of exposure [days, UTC]"
    history = fields["prv_candidates"]["type"][1]["items"]
    history["fields"].append({"default": None, "doc": "a new flag", "name": "newflag", "type": ["null", "int"]})
    return schema


def make_variants(real: list[bytes]) -> list[bytes]:
    """The 4.01 packets rewritten with two unshipped writer schemas, key orders and random sync markers."""
    out = []
    for i, packet in enumerate(real):
        version = "4.99" if i % 2 else "5.0"
        schema = _variant_schema(version)
        record = codec.decode(packet)
        record["schemavsn"] = version
        record["candidate"]["newscore"] = 0.25 * i if i % 3 else None
        for j, entry in enumerate(record["prv_candidates"] or []):
            entry["newflag"] = j if j % 2 else None
        body = io.BytesIO()
        fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
        text = json.dumps(schema, separators=(",", ":")).encode()
        keys = ("avro.schema", "avro.codec") if i % 2 else ("avro.codec", "avro.schema")
        out.append(build_container(text, body.getvalue(), os.urandom(16), keys))
    return out


@pytest.fixture(scope="module")
def real_401(packets) -> list[bytes]:
    """The 4.01 packets, in candid order: ZTF's 24 of night 20231012, or the project's own."""
    return sorted((p for p in packets if codec.peek(p).schemavsn == "4.01"), key=lambda p: codec.peek(p).candid)


@pytest.fixture(scope="module")
def variants(real_401) -> list[bytes]:
    return make_variants(real_401)


def test_the_402_schema_says_402_and_encode_refuses_a_missing_version(real_401):
    assert {f"{m}" for m in _versions_in(schemas.load_schema("4.02"))} == {"4.02"}
    with pytest.raises(codec.AlertPacketError, match="schema version"):
        codec.encode(codec.decode(real_401[0]), None)


def _versions_in(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["version"]] if "version" in node else []) + [v for x in node.values() for v in _versions_in(x)]
    if isinstance(node, list):
        return [v for x in node for v in _versions_in(x)]
    return []


@pytest.mark.parametrize("engine", ["datafusion", "fastavro"])
def test_parquet_gives_every_real_and_unshipped_packet_back_byte_for_byte(engine, packets, variants, tmp_path):
    packets = sorted(packets + variants, key=lambda p: codec.peek(p).candid)
    headers = packet_headers(packets)
    decoder = AlertDecoder(night_table_columns(writer_schema_of(h) for h in headers), tmp_path, engine, headers)
    table = decoder.decode(packets, [codec.peek(p).candid for p in packets])
    new = table.column("newscore")  # the new field is a column of its own, null for every other version
    assert len(new) - new.null_count == sum(1 for i in range(len(variants)) if i % 3)
    path = tmp_path / "part-0.parquet"
    with open(path, "wb") as f:
        writer = ParquetPartWriter(f, decoder.schema)
        writer.write(table)
        writer.close()
    assert [a.packet for a in parquet_alerts(str(path))] == packets


@pytest.mark.parametrize("kept", [b"not json", json.dumps([base64.b64encode(b"not a packet header").decode()])])
def test_a_parquet_file_whose_packet_headers_are_damaged_fails_naming_it(kept, packets, tmp_path):
    headers = packet_headers(packets)
    decoder = AlertDecoder(night_table_columns(writer_schema_of(h) for h in headers), tmp_path, "fastavro", headers)
    table = decoder.decode(packets, [codec.peek(p).candid for p in packets])
    table = table.replace_schema_metadata({HEADERS_KEY: kept})
    path = tmp_path / "part-0.parquet"
    with open(path, "wb") as f:
        writer = ParquetPartWriter(f, table.schema)
        writer.write(table)
        writer.close()
    with pytest.raises(ArchiveReadError, match="packet header") as failure:
        list(parquet_alerts(str(path)))
    assert str(path) in str(failure.value)


# ------------------------------------------------------------------------------------------ with a broker


@pytest.fixture(scope="module")
def archived(kafka_bootstrap, variants, tmp_path_factory):
    """The variants published by the publisher as night 20231012 and a simulated 4.02 night as the next one, both
    archived into one root."""
    naming = TopicNaming(survey=f"v{uuid.uuid4().hex[:6]}")
    root = tmp_path_factory.mktemp("archive")
    simulated = [a.packet for a in simulated_alerts(60, night=OTHER_NIGHT, seed=3)]
    for night, packets in ((NIGHT, variants), (OTHER_NIGHT, simulated)):
        ensure_night_topics(admin_client(kafka_bootstrap), naming, night, SMALL)
        published = publish(
            (SourcePacket(f"{codec.peek(p).candid}.avro", p, None) for p in packets),
            bootstrap_servers=kafka_bootstrap,
            naming=naming,
            night=night,
        )
        assert published.closed and published.delivered_total == len(packets)
        archive_night(kafka_bootstrap, naming, night, str(root))
    return naming, root, simulated


def test_unshipped_versions_pass_publish_archive_and_both_replays_byte_for_byte(kafka_bootstrap, variants, archived):
    naming, root, _ = archived
    tarball = root / f"{naming.survey}_public_{NIGHT:%Y%m%d}.tar.gz"
    with open(tarball, "rb") as f:
        assert sorted(m.data for m in read_members(f)) == sorted(variants)
    settings = Settings(bootstrap_servers=kafka_bootstrap)
    for from_parquet in (False, True):
        topic = f"replay-{uuid.uuid4().hex[:8]}"
        request = ReplayRequest((str(root),), topic=topic, archived_night=NIGHT, from_parquet=from_parquet)
        done = replay(settings, request)
        assert done.result.delivered == len(variants) and done.result.bad == 0, from_parquet
        assert sorted(m.value() for m in read_to_end(kafka_bootstrap, [topic], timeout=60)) == sorted(variants)


def test_unshipped_versions_pass_the_batch_filter_from_tarball_and_parquet(variants, archived):
    _naming, root, _ = archived
    for prefer in ("tarball", "parquet"):
        packets, counts = packets_for_batch([str(root)], archived_night=NIGHT, prefer=prefer)
        assert sorted(p for _, p in packets) == sorted(variants) and sum(c.bad for c in counts) == 0, prefer


def test_duckdb_and_pyarrow_read_every_night_of_the_archive(archived, variants):
    _, root, simulated = archived
    files = sorted(str(p) for p in (root / "parquet").rglob("*.parquet"))
    # no union_by_name: 4.99 and 5.0 (a longer prv_candidates struct), then 4.02. A column only the first night
    # has (newscore) is not selected here: DuckDB takes the first file's columns and refuses it in the second
    query = f"select count(*), count(distinct schemavsn), sum(len(prv_candidates)) from read_parquet({files})"
    rows = duckdb.sql(query).fetchall()[0]
    history = sum(len(codec.decode(p)["prv_candidates"] or []) for p in [*variants, *simulated])
    assert rows == (len(variants) + len(simulated), 3, history) and history > len(simulated)
    table = ds.dataset(root / "parquet", partitioning="hive").to_table(columns=["candid", "drb", "schemavsn"])
    assert table.num_rows == len(variants) + len(simulated)


# ------------------------------------------------------------------------------------ damaged archives


def _damaged(tarball, tmp_path, how: str):
    whole = tarball.read_bytes()
    if how == "flipped":
        data = bytearray(whole)
        data[-6] ^= 0x01  # in the gzip trailer's CRC: every member still reads
    else:
        data = whole[: len(whole) - 4]  # the length of the trailer missing
    path = tmp_path / "ztf_public_20180819.tar.gz"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_every_tarball_reader_checks_the_gzip_crc_and_length(uw_tarball, tmp_path, how):
    path = _damaged(uw_tarball, tmp_path, how)
    with pytest.raises(SourceError, match=str(path)):
        list(tarball_packets(path))
    with pytest.raises((gzip.BadGzipFile, EOFError)), open(path, "rb") as f:
        list(read_members(f))


def test_a_replay_checks_md5sums_first_and_publishes_nothing(kafka_bootstrap, uw_tarball, tmp_path):
    path = _damaged(uw_tarball, tmp_path, "flipped")
    (tmp_path / "MD5SUMS").write_text(f"{hashlib.md5(uw_tarball.read_bytes()).hexdigest()}  {path.name}\n")
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ArchiveReadError, match=r"is damaged .*md5"):
        replay(Settings(bootstrap_servers=kafka_bootstrap), ReplayRequest((str(path),), topic=topic))
    with pytest.raises(ArchiveReadError, match="is damaged"):
        open_sources([str(path)])
    assert topic not in admin_client(kafka_bootstrap).list_topics(timeout=10).topics  # nothing created either


def test_damage_found_at_the_end_fails_the_replay_says_what_was_produced_and_leaves_the_night_open(
    kafka_bootstrap, uw_tarball, tmp_path
):
    path = _damaged(uw_tarball, tmp_path, "flipped")  # no MD5SUMS beside it: found only at the gzip trailer
    settings = Settings(bootstrap_servers=kafka_bootstrap)
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ReplayError, match=rf"CRC.*message\(s\) had already been produced to {topic}"):
        replay(settings, ReplayRequest((str(path),), topic=topic, allow_unverified=True))
    naming = TopicNaming(survey=f"d{uuid.uuid4().hex[:6]}", programmes={1: "public"})
    alerts, counts, names = open_sources([str(path)])
    with pytest.raises(ReplayError, match="left open, not marked complete") as failure:
        replay_into_night(
            Settings(bootstrap_servers=kafka_bootstrap, survey=naming.survey, programmes=naming.programmes),
            dt.date(2018, 8, 19),
            alerts,
            sources=names,
            counts=counts,
            partitions=SMALL.partitions,
        )
    assert f"{failure.value.result.delivered} message(s)" in str(failure.value)
    assert read_night_state(kafka_bootstrap, naming, dt.date(2018, 8, 19)).state == "open"


def test_filter_batch_over_a_damaged_tarball_fails_naming_it(uw_tarball, tmp_path, capsys):
    path = _damaged(uw_tarball, tmp_path, "flipped")
    assert cli(["filter", "batch", "bright_transients", str(path)]) != 0
    assert str(path) in capsys.readouterr().err
