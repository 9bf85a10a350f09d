"""The end-of-night archive against a real broker: tarballs, Parquet, manifest, verification, reproducibility."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alertdist import schemas
from alertdist.archive import (
    ArchiveOptions,
    ArchiveVerificationError,
    NightManifest,
    NightNotClosedError,
    ProgrammeArchive,
    archive_night,
    read_manifest,
    verify_night,
)
from alertdist.archive.night import _schedule
from alertdist.archive.stream import Duplicates, Spool
from alertdist.archive.tarball import (
    MEMBER_MODE,
    TarballWriter,
    _member_header,
    member_header,
    parse_md5sums,
    read_members,
)
from alertdist.avro import codec
from alertdist.avro.arrow import arrow_schema, night_table_columns, packet_headers
from alertdist.avro.arrow_decoder import AlertDecoder
from alertdist.nights.dates import jd_to_unix
from alertdist.nights.state import NightState, mark_night
from alertdist.nights.topics import TopicNaming
from alertdist.simulate.night import simulate_night
from tests.archive_support import cut_short, publish_night
from tests.conftest import ARCHIVE_2018

NIGHT = dt.date(2023, 10, 12)
AVRO_TO_ARROW = {
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
}


# ------------------------------------------------------------------------------------------- no broker


@pytest.mark.parametrize("version", schemas.available_versions())
def test_arrow_schema_follows_the_avro_types(version):
    avro = schemas.load_schema(version)
    table = arrow_schema(avro)
    candidate = next(f for f in avro["fields"] if f["name"] == "candidate")["type"]
    for field in candidate["fields"]:
        name = field["name"] if field["name"] != "candid" else "candidate_candid"
        nullable = isinstance(field["type"], list)
        kind = next(t for t in field["type"] if t != "null") if nullable else field["type"]
        assert table.field(name).type == AVRO_TO_ARROW[kind], (version, name)
        assert table.field(name).nullable == nullable, (version, name)
    history = table.field("prv_candidates").type
    assert pa.types.is_list(history) and pa.types.is_struct(history.value_type)
    assert history.value_type.field("magpsf").type == pa.float32()
    if version.startswith("4"):
        assert table.field("fp_hists").type.value_type.field("forcediffimflux").type == pa.float32()
    else:
        assert "fp_hists" not in table.names
    assert table.field("cutoutScience").type == pa.binary()
    assert table.field("cutoutScience_fileName").type == pa.string()
    assert table.field("candid").type == pa.int64() and not table.field("candid").nullable


def test_night_table_is_the_union_of_every_version():
    columns = night_table_columns()
    schema = pa.schema([c.field for c in columns])
    latest = arrow_schema(schemas.load_schema(schemas.LATEST_VERSION))
    assert schema.names[: len(latest)] == latest.names  # the latest version's order first
    for version in schemas.available_versions():
        own = arrow_schema(schemas.load_schema(version))
        assert set(own.names) <= set(schema.names)
        for name in set(schema.names) - set(own.names):
            assert schema.field(name).nullable, (version, name)
    prv_fields = {f.name: f for f in schema.field("prv_candidates").type.value_type}
    assert prv_fields["magzpsci"].nullable  # absent from 3.0 histories


def test_both_decoders_give_the_same_table_for_every_real_version(packets, tmp_path):
    columns = night_table_columns()
    candids = [codec.peek(p).candid for p in packets]
    headers = packet_headers(packets)
    fast = AlertDecoder(columns, tmp_path, "datafusion", headers).decode(packets, candids)
    reference = AlertDecoder(columns, tmp_path, "fastavro", headers).decode(packets, candids)
    assert fast.schema.equals(reference.schema)
    assert fast.equals(reference)
    versions = [codec.peek(p).schemavsn for p in packets]
    assert set(fast.column("schemavsn").to_pylist()) == set(versions) >= {"3.0", "3.3", "4.01"}
    assert fast.column("drb").null_count >= versions.count("3.0") >= 15  # the 3.0 packets have no drb


def test_tar_headers_match_uw_byte_for_byte_and_the_reader_reads_uw(archive_2018_members):
    raw = gzip.open(ARCHIVE_2018).read()
    with tarfile.open(ARCHIVE_2018) as tar:
        infos = tar.getmembers()
    position = 0
    for info in infos[:5]:
        assert _member_header(info.name, info.size, info.mtime) == raw[position : position + 512]
        position += 512 + -(-info.size // 512) * 512
    with open(ARCHIVE_2018, "rb") as f:
        members = list(read_members(f))
    assert [(m.name, m.data) for m in members] == archive_2018_members
    assert {(m.mode, m.uid, m.gid, m.uname, m.gname) for m in members} == {(MEMBER_MODE, 0, 0, "", "")}


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), min_size=1, max_size=110),
    size=st.integers(0, 8**12),
    mtime=st.integers(0, 8**12),
)
def test_the_fast_member_header_is_the_tarfile_one(name, size, mtime):
    try:
        expected = _member_header(name, size, mtime)
    except ValueError:  # a name too long for one block: both refuse it
        with pytest.raises(ValueError):
            member_header(name, size, mtime)
        return
    assert member_header(name, size, mtime) == expected


def test_the_tarball_stream_is_exactly_the_tar_of_its_members(packets):
    """Stored cutouts, a schema compressed once and reused: gunzip still gives the plain tar, byte for byte."""
    members = [(f"{codec.peek(p).candid}.avro", p) for p in packets]
    members += [("0.avro", b"not an alert" * 50), ("1.avro", b""), ("2.avro", b"\x1f\x8b\x08" * 9)]
    out = io.BytesIO()
    writer = TarballWriter(out)
    for i, (name, data) in enumerate(members):
        writer.add(name, data, 1_500_000_000 + i)
    writer.close()
    plain = b"".join(
        member_header(name, len(data), 1_500_000_000 + i) + data + bytes(-len(data) % 512)
        for i, (name, data) in enumerate(members)
    ) + bytes(1024)
    assert gzip.decompress(out.getvalue()) == plain
    assert len(out.getvalue()) < 0.75 * len(plain)  # the schemas and records did shrink
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar] == members


def test_spool_sorts_across_runs_and_drops_duplicates(tmp_path, packets):
    packets = packets + packets[:7]
    spool = Spool(tmp_path, run_size=8)  # many runs, merged
    for offset, packet in enumerate(packets):
        spool.add(packet, partition=offset % 3, offset=offset)
    spool.finish()
    duplicates = Duplicates()
    kept = list(spool.unique(duplicates))
    candids = [int(e[0]) for e in kept]
    assert candids == sorted({codec.peek(p).candid for p in packets})
    assert duplicates.dropped == 7 and duplicates.conflicting_count == 0
    assert [spool.read(e) for e in kept] == [p for _, p in sorted({codec.peek(p).candid: p for p in packets}.items())]
    spool.close()


# ------------------------------------------------------------------------------------------- live broker


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_night(kafka_bootstrap, tmp_path_factory, packet_files):
    """A published, closed night: a simulated night, the packet files in programme 1, duplicates, a bad message."""
    naming = TopicNaming(survey=f"tarch{tmp_path_factory.mktemp('n').name[-6:].replace('_', '')}x")
    by_programme: dict[int, list[bytes]] = {}
    for alert in simulate_night(240, night=NIGHT, seed=5):
        by_programme.setdefault(alert.programid, []).append(alert.packet)
    real = [p.read_bytes() for p in packet_files]
    duplicates = [by_programme[2][0], by_programme[2][5], real[3]]
    by_programme[1] = by_programme[1] + real + [real[3], b"not an avro packet"]
    by_programme[2] = by_programme[2] + duplicates[:2]
    state = publish_night(kafka_bootstrap, naming, NIGHT, by_programme)
    unique = {
        p: {codec.peek(x).candid: x for x in packets if x.startswith(b"Obj")} for p, packets in by_programme.items()
    }
    return naming, state, by_programme, unique


@pytest.fixture(scope="module")
def archived(kafka_bootstrap, small_night, tmp_path_factory):
    naming, _state, _, _ = small_night
    dest = tmp_path_factory.mktemp("archive")
    manifest = archive_night(kafka_bootstrap, naming, NIGHT, str(dest), ArchiveOptions(row_group_rows=50))
    return dest, manifest


def test_tarballs_hold_the_published_packets_byte_for_byte(small_night, archived):
    naming, _, _, unique = small_night
    dest, manifest = archived
    for programid, name in naming.programmes.items():
        path = dest / f"{naming.survey}_{name}_{NIGHT:%Y%m%d}.tar.gz"
        with open(path, "rb") as f:
            members = list(read_members(f))
        expected = unique[programid]
        assert [m.name for m in members] == [f"{c}.avro" for c in sorted(expected)]
        assert all(m.data == expected[int(m.name[:-5])] for m in members)
        assert all(m.mtime == jd_to_unix(codec.peek(m.data).jd) for m in members)
        assert {(m.mode, m.uid, m.gid, m.uname, m.gname) for m in members} == {(MEMBER_MODE, 0, 0, "", "")}
        assert path.read_bytes()[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"  # no name, mtime 0
        assert manifest.programmes[programid].counts["written"] == len(expected)


def test_parquet_rows_match_the_tarball_and_the_decoded_packets(small_night, archived):
    _naming, _, _, unique = small_night
    dest, _ = archived
    table = ds.dataset(dest / "parquet", partitioning="hive").to_table()
    assert table.num_rows == sum(len(u) for u in unique.values())
    for programid, expected in unique.items():
        rows = table.filter((pa.compute.field("programid") == programid) & (pa.compute.field("night") == 20231012))
        assert sorted(rows.column("candid").to_pylist()) == sorted(expected)
    part = pq.ParquetFile(dest / f"parquet/night={NIGHT:%Y%m%d}/programid=1/part-0.parquet")
    assert part.metadata.num_row_groups > 1 and part.metadata.row_group(0).column(0).compression == "ZSTD"
    compression = {
        part.metadata.row_group(0).column(i).path_in_schema: part.metadata.row_group(0).column(i).compression
        for i in range(part.metadata.num_columns)
    }
    assert compression["prv_candidates.list.element.magpsf"] == "ZSTD"  # nested leaves too
    assert compression["cutoutScience"] == "UNCOMPRESSED"  # gzipped FITS already
    rows = part.read().to_pylist()
    rng = np.random.default_rng(0)
    for row in [rows[i] for i in rng.choice(len(rows), 12, replace=False)] + rows[-3:]:
        record = codec.decode(unique[1][row["candid"]])
        for key, value in record["candidate"].items():
            column = "candidate_candid" if key == "candid" else key
            assert (
                row[column] == pytest.approx(value, nan_ok=True) if isinstance(value, float) else row[column] == value
            )
        assert _history(row["prv_candidates"]) == _history(record["prv_candidates"])
        assert _history(row["fp_hists"]) == _history(record.get("fp_hists"))
        for cutout in ("cutoutScience", "cutoutTemplate", "cutoutDifference"):
            assert row[cutout] == record[cutout]["stampData"]
            assert row[f"{cutout}_fileName"] == record[cutout]["fileName"]
        assert (row["objectId"], row["schemavsn"], row["publisher"]) == (
            record["objectId"],
            record["schemavsn"],
            record["publisher"],
        )


def _history(entries):
    """Entries with float32 rounding applied, absent fields as None, so Avro and Parquet compare exactly."""
    if entries is None:
        return None
    return [
        {k: (float(np.float32(v)) if isinstance(v, float) else v) for k, v in e.items() if v is not None}
        for e in entries
    ]


def test_manifest_accounts_for_every_message(small_night, archived):
    naming, state, by_programme, unique = small_night
    dest, manifest = archived
    assert manifest == read_manifest(str(dest), naming.survey, f"{NIGHT:%Y%m%d}")
    public, partnership = manifest.programmes[1], manifest.programmes[2]
    assert public.counts == {
        "read": len(by_programme[1]),
        "written": len(unique[1]),
        "duplicates": 1,
        "conflicting_duplicates": 0,
        "rejected": 1,
    }
    assert partnership.counts["duplicates"] == 2 and partnership.counts["rejected"] == 0
    assert public.rejected[0]["size"] == len(b"not an avro packet") and "magic" in public.rejected[0]["reason"]
    seen = Counter(codec.peek(x).schemavsn for x in by_programme[1] if x.startswith(b"Obj"))
    assert public.schema_versions == dict(seen) and set(seen) == {"3.3", "4.01", "4.02"}
    for archive in manifest.programmes.values():
        assert {p: e["end_offset"] for p, e in archive.partitions.items()} == state.end_offsets[archive.topic]
        for kind, f in archive.files.items():
            data = (dest / f["path"]).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest(), f"{zlib.crc32(data):08x}") == (
                f["size"],
                f["sha256"],
                f["crc32"],
            )
            # md5 only where MD5SUMS publishes it (tarballs, as UW): it is the archiver's dearest checksum
            assert f["md5"] == (hashlib.md5(data).hexdigest() if kind == "tarball" else None)
    md5sums = parse_md5sums((dest / "MD5SUMS").read_text())
    assert md5sums == {a.files["tarball"]["path"]: a.files["tarball"]["md5"] for a in manifest.programmes.values()}


def test_archiving_twice_gives_identical_bytes(kafka_bootstrap, small_night, archived, tmp_path):
    naming, _, _, _ = small_night
    dest, _ = archived
    first = _files(dest)
    archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path), ArchiveOptions(row_group_rows=50, engine="fastavro"))
    assert _files(tmp_path) == first  # another run, another decoder: the same bytes
    archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path), ArchiveOptions(row_group_rows=50))
    assert _files(tmp_path) == first  # a re-run into the same place replaces, adds nothing


def test_a_replay_into_new_topics_gives_the_same_tarballs(kafka_bootstrap, small_night, archived, unique):
    naming, _, by_programme, _ = small_night
    dest, manifest = archived
    replay = TopicNaming(survey=f"{naming.survey}r{unique[:4]}", programmes=naming.programmes)
    # reversed order and another partition count: Kafka order differs, the alerts do not
    publish_night(kafka_bootstrap, replay, NIGHT, {p: list(reversed(v)) for p, v in by_programme.items()}, partitions=3)
    other = dest.parent / f"replay-{unique}"
    again = archive_night(kafka_bootstrap, replay, NIGHT, str(other), ArchiveOptions(row_group_rows=50))
    for programid, archive in manifest.programmes.items():
        for kind in ("tarball", "parquet"):
            assert again.programmes[programid].files[kind]["sha256"] == archive.files[kind]["sha256"]


def test_verification_names_what_is_missing_or_changed(small_night, archived, tmp_path):
    _naming, state, _, _ = small_night
    dest, manifest = archived
    copy = tmp_path / "copy"
    for name, data in _files(dest).items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    verify_night(str(copy), manifest, state)
    parquet_file = copy / manifest.programmes[2].files["parquet"]["path"]
    parquet_file.unlink()
    tarball = copy / manifest.programmes[1].files["tarball"]["path"]
    members = list(read_members(io.BytesIO(tarball.read_bytes())))
    with open(tarball, "wb") as f:  # a tarball that lost one alert
        writer = TarballWriter(f)
        for m in members[:-1]:
            writer.add(m.name, m.data, m.mtime)
        writer.close()
    with pytest.raises(ArchiveVerificationError) as error:
        verify_night(str(copy), manifest, state)
    message = str(error.value)
    assert f"{parquet_file.relative_to(copy)} is missing" in message
    assert f"{len(members) - 1} members, but {len(members)} alerts were written" in message
    moved = NightState(
        state.night, "closed", {t: {p: o + 1 for p, o in parts.items()} for t, parts in state.end_offsets.items()}
    )
    with pytest.raises(ArchiveVerificationError, match="but the night closed at"):
        verify_night(str(dest), manifest, moved)


@pytest.mark.parametrize("checksum", ["sha256", "crc32"])
def test_verification_reads_every_byte_of_the_tarball(archived, tmp_path, checksum):
    """A flipped byte deep in a stored cutout, or a cut tail, is found (the checksum asked for, gzip CRC, tar
    structure); crc32 is the archiver's own read-back right after writing, sha256 any later check."""
    dest, manifest = archived
    path = manifest.programmes[1].files["tarball"]["path"]
    raw = (dest / path).read_bytes()
    for label, damaged, expected in [
        (
            "flipped",
            raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 1]) + raw[len(raw) // 2 + 1 :],
            [checksum, "not a valid gzip stream"],
        ),
        ("cut", raw[:-20_000], [checksum, "cut short"]),
    ]:
        copy = tmp_path / label
        for name, data in _files(dest).items():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes(damaged if name == path else data)
        with pytest.raises(ArchiveVerificationError) as error:
            verify_night(str(copy), manifest, checksum=checksum)
        assert all(word in str(error.value) for word in expected), (label, str(error.value))


def test_the_smallest_programme_is_read_first_and_written_last():
    """Writing starts once a programme is read, and the night ends with the read-back of the last one written."""
    assert _schedule([1, 2, 3], {1: 50, 2: 40, 3: 10}) == ([3, 2, 1], [2, 1, 3])
    assert _schedule([1, 2, 3, 4], {1: 5, 2: 5, 3: 9, 4: 1}) == ([4, 1, 2, 3], [1, 2, 3, 4])
    assert _schedule([1, 2], {1: 50, 2: 40}) == ([2, 1], [2, 1])


def test_a_manifest_lists_its_files_one_row_each_for_the_reports():
    """The rows of the archive task's summary artifact and of the night summary's files table."""
    files = {
        "tarball": {"path": "t.tar.gz", "size": 10, "sha256": "a" * 64, "crc32": "1", "md5": "b" * 32},
        "parquet": {"path": "p.parquet", "size": 20, "sha256": "c" * 64, "crc32": "2", "md5": None},
    }
    counts = {"read": 5, "written": 3, "duplicates": 1, "conflicting_duplicates": 0, "rejected": 1}
    archive = ProgrammeArchive(1, "public", "topic", {}, counts, {"4.02": 5}, files)
    manifest = NightManifest("ztf", "20231012", {1: archive})
    rows = [
        {"programme": "public", "file": "t.tar.gz", "bytes": 10, "sha256": "a" * 64, "md5": "b" * 32},
        {"programme": "public", "file": "p.parquet", "bytes": 20, "sha256": "c" * 64, "md5": ""},
    ]
    assert manifest.file_rows() == rows
    counted = {"read": 5, "written": 3, "duplicates": 1, "rejected": 1}
    assert manifest.file_rows(with_counts=True) == [row | counted for row in rows]


def test_a_record_broken_after_its_candidate_is_rejected_and_the_rest_archived(
    kafka_bootstrap, unique, tmp_path, packets
):
    """Framing and the first fields are fine (the spool takes it), the record is cut inside the cutouts: the
    Parquet decode finds it, the codec names the fault, and it is left out of both files and counted."""
    good = [p for p in packets if codec.peek(p).schemavsn.startswith("4")]
    broken = cut_short(good[0])
    codec.peek(broken)  # what the publisher checks passes
    naming = TopicNaming(survey=f"tbroken{unique}")
    state = publish_night(kafka_bootstrap, naming, NIGHT, {1: [*good[1:], broken]})
    manifest = archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path), ArchiveOptions(row_group_rows=7))
    archive = manifest.programmes[1]
    assert archive.counts == {
        "read": len(good),
        "written": len(good) - 1,
        "duplicates": 0,
        "conflicting_duplicates": 0,
        "rejected": 1,
    }
    assert "does not decode" in archive.rejected[0]["reason"] and archive.rejected[0]["size"] == len(broken)
    assert sum(archive.schema_versions.values()) == len(good) - 1
    with open(tmp_path / archive.files["tarball"]["path"], "rb") as f:
        assert sorted(m.data for m in read_members(f)) == sorted(good[1:])
    rows = pq.read_table(tmp_path / archive.files["parquet"]["path"], columns=["candid"]).column("candid")
    assert rows.to_pylist() == sorted(codec.peek(p).candid for p in good[1:])
    verify_night(str(tmp_path), manifest, state)


def test_a_failed_write_stops_the_read_ahead_and_leaves_no_spool(kafka_bootstrap, small_night, tmp_path):
    """Programme 1 cannot be written (the destination is a file): the error comes out, programme 2's read-ahead
    stops, and neither spool stays behind."""
    naming, _, _, _ = small_night
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive root should be")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(Exception, match="not-a-folder"):
        archive_night(kafka_bootstrap, naming, NIGHT, str(blocker), ArchiveOptions(work_dir=str(work)))
    assert list(work.iterdir()) == []
    assert blocker.read_text() == "a file where the archive root should be"


def test_an_open_night_is_not_archived(kafka_bootstrap, unique, tmp_path, packets):
    naming = TopicNaming(survey=f"topen{unique}")
    publish_night(kafka_bootstrap, naming, NIGHT, {1: packets[:3]}, close=False)
    with pytest.raises(NightNotClosedError, match="never opened"):
        archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path))
    mark_night(kafka_bootstrap, naming, NightState(f"{NIGHT:%Y%m%d}", "open"))
    with pytest.raises(NightNotClosedError, match="is 'open'"):
        archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_the_real_2018_night_reads_back_like_uws_own_file(kafka_bootstrap, unique, tmp_path, archive_2018_members):
    night = dt.date(2018, 8, 19)
    naming = TopicNaming(survey=f"ztf{unique}", programmes={1: "public"})
    publish_night(kafka_bootstrap, naming, night, {1: [data for _, data in archive_2018_members]})
    manifest = archive_night(kafka_bootstrap, naming, night, str(tmp_path))
    ours = tmp_path / f"{naming.survey}_public_20180819.tar.gz"
    assert gzip.open(ours).read(512)[257:265] == gzip.open(ARCHIVE_2018).read(512)[257:265] == b"ustar  \0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MD5SUMS", "index", "manifests", "parquet", ours.name]
    with tarfile.open(ours) as mine, tarfile.open(ARCHIVE_2018) as uw:
        our_members, uw_members = mine.getmembers(), uw.getmembers()
        assert sorted(m.name for m in our_members) == sorted(m.name for m in uw_members)
        assert all("/" not in m.name and m.isfile() for m in our_members)
        by_name = {m.name: m for m in uw_members}
        for m in our_members:
            theirs = by_name[m.name]
            assert (m.mode, m.uid, m.gid, m.uname, m.gname, m.size) == (
                theirs.mode,
                theirs.uid,
                theirs.gid,
                theirs.uname,
                theirs.gname,
                theirs.size,
            )
            assert mine.extractfile(m).read() == uw.extractfile(theirs).read()
            assert abs(m.mtime - theirs.mtime) < 6 * 3600  # ours: observation time; UW's: when it was written
    assert manifest.programmes[1].schema_versions == {"3.0": 30}
    rows = pq.read_table(tmp_path / manifest.programmes[1].files["parquet"]["path"])
    assert rows.num_rows == 30 and rows.column("drb").null_count == 30


def test_parquet_of_an_empty_programme_is_an_empty_table(kafka_bootstrap, unique, tmp_path, packets):
    naming = TopicNaming(survey=f"tempty{unique}")
    publish_night(kafka_bootstrap, naming, NIGHT, {1: packets[:2], 3: []})
    manifest = archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path))
    assert manifest.programmes[3].counts["written"] == 0
    assert pq.read_table(tmp_path / manifest.programmes[3].files["parquet"]["path"]).num_rows == 0
    with open(tmp_path / manifest.programmes[3].files["tarball"]["path"], "rb") as f:
        assert list(read_members(f)) == []
    assert json.loads((tmp_path / manifest.path).read_text())["programmes"]["3"]["counts"]["read"] == 0
