"""The archive against hostile and unusual input (real broker, real ZTF packets): no packet stops a programme,
every archive reads as one dataset, an aborted night is never archived as whole, nothing is dropped silently."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import io
import json
import math
import struct
import tarfile

import duckdb
import fastavro
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from alertdist.access.readers import parquet_alerts, read_table
from alertdist.archive import (
    ArchiveOptions,
    ArchiveVerificationError,
    NightAbortedError,
    archive_night,
    read_manifest,
    verify_night,
)
from alertdist.archive.tarball import read_members
from alertdist.avro import codec
from alertdist.avro.container import build_container, parse_container, read_length, read_long
from alertdist.cli.main import main as cli
from alertdist.jobs.nights import abort_night
from alertdist.nights.state import read_night_state
from alertdist.nights.topics import TopicNaming
from alertdist.settings import Settings
from tests.archive_support import cut_short, publish_night
from tests.conftest import ARCHIVE_2018, SHARED_DATA

NIGHT = dt.date(2023, 10, 12)


# ------------------------------------------------------------------------------------------- packets


def _real_alerts(night_folder: str) -> list[bytes]:
    files = sorted((SHARED_DATA / "ztf-alerts" / night_folder).glob("*.avro"))
    if not files:
        pytest.skip(f"real ZTF data not found at {SHARED_DATA}")
    return [f.read_bytes() for f in files]


@pytest.fixture(scope="module")
def real_401() -> list[bytes]:
    return _real_alerts("20231012")


@pytest.fixture(scope="module")
def real_33() -> list[bytes]:
    return _real_alerts("20200202")


@pytest.fixture(scope="module")
def real_30() -> list[bytes]:
    if not ARCHIVE_2018.is_file():
        pytest.skip(f"real ZTF data not found at {ARCHIVE_2018}")
    with tarfile.open(ARCHIVE_2018) as tar:
        return [tar.extractfile(m).read() for m in tar if m.isfile()]


def with_jd(packet: bytes, jd: float) -> bytes:
    """``packet`` with candidate.jd overwritten in place (the header, schema and everything else unchanged)."""
    container = parse_container(packet)
    pos = container.body_start
    for what in ("schemavsn", "publisher", "objectId"):
        length, pos = read_length(packet, pos, what, container.body_end)
        pos += length
    _, pos = read_long(packet, pos, "candid")
    return packet[:pos] + struct.pack("<d", jd) + packet[pos + 8 :]


def variant(packet: bytes, edit_schema=lambda schema: None, edit_record=lambda record: None) -> bytes:
    """``packet`` re-encoded (by fastavro) with an edited writer schema and record; the sync marker kept."""
    schema = copy.deepcopy(codec.writer_schema(packet))
    edit_schema(schema)
    record = codec.decode(packet)
    edit_record(record)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    text = json.dumps(schema, separators=(",", ":")).encode()
    return build_container(text, body.getvalue(), parse_container(packet).sync_marker, ("avro.schema", "avro.codec"))


def candidate_field(schema: dict, name: str) -> dict:
    candidate = next(f for f in schema["fields"] if f["name"] == "candidate")["type"]
    return next(f for f in candidate["fields"] if f["name"] == name)


def history_field(schema: dict, name: str) -> dict:
    history = next(f for f in schema["fields"] if f["name"] == "prv_candidates")["type"]
    items = next(t for t in history if t != "null")["items"] if isinstance(history, list) else history["items"]
    return next(f for f in items["fields"] if f["name"] == name)


def _set_type(where, name: str, avro_type):
    return lambda schema: where(schema, name).update(type=avro_type)


def _parquet(root, manifest, programid: int = 1) -> pa.Table:
    return pq.read_table(root / manifest.programmes[programid].files["parquet"]["path"])


# ------------------------------------------------------------------------------------------- item 2: no packet stops a


def test_a_packet_with_an_unusable_jd_or_candid_is_a_reject_with_its_reason(
    kafka_bootstrap, unique, tmp_path, real_401
):
    """NaN and 1e300 jd and a negative candid, among real packets of one topic: each is set aside with its
    reason and counted, the rest archived and verified (the archiver raised on the NaN before)."""
    hostile = {
        "nan": with_jd(real_401[0], math.nan),
        "huge": with_jd(real_401[1], 1e300),
        "negative candid": variant(real_401[2], edit_record=lambda r: r.update(candid=-r["candid"])),
    }
    good = real_401[3:]
    naming = TopicNaming(survey=f"thjd{unique}")
    state = publish_night(kafka_bootstrap, naming, NIGHT, {1: good + list(hostile.values())})
    manifest = archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path))
    archive = manifest.programmes[1]
    assert archive.counts == {
        "read": len(good) + 3,
        "written": len(good),
        "duplicates": 0,
        "conflicting_duplicates": 0,
        "rejected": 3,
    }
    reasons = sorted(r["reason"] for r in archive.rejected)
    assert sum("candidate.jd is float nan" in r for r in reasons) == 1
    assert sum("candidate.jd 1e+300" in r for r in reasons) == 1
    assert sum(f"candid is int -{codec.peek(real_401[2]).candid}" in r for r in reasons) == 1
    assert sorted(r["size"] for r in archive.rejected) == sorted(len(p) for p in hostile.values())
    with open(tmp_path / archive.files["tarball"]["path"], "rb") as f:
        assert sorted(m.data for m in read_members(f)) == sorted(good)
    verify_night(str(tmp_path), manifest, state)


def test_float_versus_double_and_two_type_unions_are_archived_and_an_unlike_union_set_aside(
    kafka_bootstrap, unique, tmp_path, real_401
):
    """A writer schema with magpsf as double (4.01 has float), one with fid as ["int", "long"] and magpsf as
    ["null", "float", "double"]: the columns widen (double, long) and every packet is archived, in both files,
    and rebuilt from Parquet byte for byte. A union no column can hold (float or string) is set aside with its
    reason. Before, the schema merge raised and the whole programme failed."""
    as_double = [
        variant(p, _set_type(candidate_field, "magpsf", "double"), lambda r: r["candidate"].update(magpsf=18.123456789))
        for p in real_401[:3]
    ]

    def two_unions(schema):
        candidate_field(schema, "fid")["type"] = ["int", "long"]
        candidate_field(schema, "magpsf")["type"] = ["null", "float", "double"]

    unions = [variant(p, two_unions) for p in real_401[3:5]]
    other_branches = variant(real_401[5], two_unions, lambda r: r["candidate"].update(fid=2**40, magpsf=None))
    unions.append(other_branches)  # the long branch and the null branch
    unlike = variant(real_401[6], _set_type(candidate_field, "rb", ["null", "float", "string"]))
    plain = real_401[7:]
    naming = TopicNaming(survey=f"thunion{unique}")
    state = publish_night(kafka_bootstrap, naming, NIGHT, {1: plain + as_double + unions + [unlike]})
    for engine in ("datafusion", "fastavro"):
        root = tmp_path / engine
        manifest = archive_night(kafka_bootstrap, naming, NIGHT, str(root), ArchiveOptions(engine=engine))
        archive = manifest.programmes[1]
        kept = plain + as_double + unions
        assert archive.counts["written"] == len(kept) and archive.counts["rejected"] == 1, engine
        assert "does not fit the night's Parquet table" in archive.rejected[0]["reason"]
        assert "rb" in archive.rejected[0]["reason"] and archive.rejected[0]["size"] == len(unlike)
        table = _parquet(root, manifest)
        assert table.schema.field("magpsf").type == pa.float64() and table.schema.field("fid").type == pa.int64()
        magpsf = dict(zip(table.column("candid").to_pylist(), table.column("magpsf").to_pylist()))
        assert {magpsf[codec.peek(p).candid] for p in as_double} == {18.123456789}
        for p in plain:  # float32 values widened exactly
            assert magpsf[codec.peek(p).candid] == codec.decode(p)["candidate"]["magpsf"]
        fid = dict(zip(table.column("candid").to_pylist(), table.column("fid").to_pylist()))
        candid = codec.peek(other_branches).candid
        assert (fid[candid], magpsf[candid]) == (2**40, None)
        assert fid[codec.peek(unions[0]).candid] == codec.decode(unions[0])["candidate"]["fid"]
        with open(root / archive.files["tarball"]["path"], "rb") as f:
            assert sorted(m.data for m in read_members(f)) == sorted(kept)
        assert sorted(a.packet for a in parquet_alerts(str(root))) == sorted(kept)
        verify_night(str(root), manifest, state)
    datafusion, fastavro_ = (_parquet(tmp_path / e, manifest) for e in ("datafusion", "fastavro"))
    assert datafusion.equals(fastavro_)


# ------------------------------------------------------------------------------------------- item 8: one dataset


def test_nights_of_every_schema_version_read_as_one_dataset(
    kafka_bootstrap, unique, tmp_path, real_30, real_33, real_401
):
    """Real 3.0 (UW's 2018 tarball), 3.3 and 4.01 nights, and a night whose writer schema makes a history field
    optional (null), archived into one root: the project's reader, DuckDB and a plain pyarrow.dataset read them
    all. Before, read_table and pyarrow.dataset failed: "field 'rbversion' of type string has nulls. Can't cast
    to non-nullable field". Then a night with magpsf as double joins: read_table widens the column."""

    def optional_history_field(schema):
        history_field(schema, "rbversion")["type"] = ["null", "string"]

    def no_history_rbversion(record):
        for entry in record["prv_candidates"] or []:
            entry["rbversion"] = None

    odd = [variant(p, optional_history_field, no_history_rbversion) for p in real_401[:5]]
    nights = {
        dt.date(2018, 8, 19): real_30,
        dt.date(2020, 2, 2): real_33,
        NIGHT: real_401,
        dt.date(2023, 10, 14): odd,
    }
    naming = TopicNaming(survey=f"thmix{unique}", programmes={1: "public"})
    for night, packets in nights.items():
        publish_night(kafka_bootstrap, naming, night, {1: packets})
        archive_night(kafka_bootstrap, naming, night, str(tmp_path))
    history_rows = sum(len(codec.decode(p)["prv_candidates"] or []) for p in odd)
    assert history_rows > 0
    _reads_as_one(tmp_path, sum(len(p) for p in nights.values()), history_rows)

    double = [
        variant(p, _set_type(candidate_field, "magpsf", "double"), lambda r: r["candidate"].update(magpsf=19.0000001))
        for p in real_401[5:9]
    ]
    nights[dt.date(2023, 10, 15)] = double
    publish_night(kafka_bootstrap, naming, dt.date(2023, 10, 15), {1: double})
    archive_night(kafka_bootstrap, naming, dt.date(2023, 10, 15), str(tmp_path))
    table = _reads_as_one(tmp_path, sum(len(p) for p in nights.values()), history_rows)
    assert table.schema.field("magpsf").type == pa.float64()
    assert set(table.filter(ds.field("night") == "20231015").column("magpsf").to_pylist()) == {19.0000001}


def _reads_as_one(root, total: int, null_history_rows: int) -> pa.Table:
    table = read_table(str(root))
    assert table.num_rows == total
    assert set(table.column("schemavsn").to_pylist()) == {"3.0", "3.3", "4.01"}
    odd_night = table.filter(ds.field("night") == "20231014")
    history = pa.compute.list_flatten(odd_night.column("prv_candidates"))
    assert len(history) == null_history_rows
    assert pa.compute.struct_field(history, "rbversion").null_count == null_history_rows
    assert read_table(str(root), ["candid", "drb"], ds.field("night") == "20180819").column("drb").null_count == 30

    assert ds.dataset(root / "parquet", partitioning="hive").to_table().num_rows == total

    query = (
        f"select count(*), count(distinct schemavsn), count(distinct night), sum(len(prv_candidates)) "
        f"from read_parquet('{root}/parquet/**/*.parquet', hive_partitioning=true, union_by_name=true)"
    )
    rows, versions, nights, histories = duckdb.sql(query).fetchall()[0]
    assert (rows, versions) == (total, 3) and histories > null_history_rows
    assert nights == len(set(table.column("night").to_pylist()))
    return table


# ------------------------------------------------------------------------------------------- item 6: aborted nights


def test_an_aborted_night_is_refused_without_partial_and_marked_partial_with_it(
    kafka_bootstrap, unique, tmp_path, real_401, monkeypatch, capsys
):
    """A night whose publishing failed is ended as "aborted" (readers stop on it like on "closed"); the archive
    refuses it (API and CLI) and writes nothing, --partial archives what was published, verified, and the
    manifest and archive-list say it is partial. Before, the abort wrote an ordinary "closed" record."""
    naming = TopicNaming(survey=f"thabort{unique}")
    publish_night(kafka_bootstrap, naming, NIGHT, {1: real_401[:6], 2: real_401[6:9], 3: []}, close=False)
    settings = Settings(bootstrap_servers=kafka_bootstrap, survey=naming.survey)
    assert abort_night(settings, NIGHT, "publishing failed: the drop folder vanished")
    assert not abort_night(settings, NIGHT, "again")  # already ended
    state = read_night_state(kafka_bootstrap, naming, NIGHT)
    assert (state.state, state.ended, state.closed) == ("aborted", True, False)  # ended: readers stop on it

    dest = tmp_path / "archive"
    with pytest.raises(NightAbortedError, match=r"was aborted .*publishing failed.*--partial"):
        archive_night(kafka_bootstrap, naming, NIGHT, str(dest))
    monkeypatch.setenv("ALERTDIST_SURVEY", naming.survey)
    run = ["--bootstrap-servers", kafka_bootstrap, "archive", "--night", f"{NIGHT:%Y%m%d}", "--archive", str(dest)]
    assert cli([*run, "--quiet"]) == 1
    assert "was aborted" in capsys.readouterr().err
    assert not dest.exists()  # nothing written

    assert cli([*run, "--quiet", "--partial"]) == 0
    assert "PARTIAL: night aborted (publishing failed: the drop folder vanished)" in capsys.readouterr().err
    manifest = read_manifest(str(dest), naming.survey, f"{NIGHT:%Y%m%d}")
    body = json.loads((dest / manifest.path).read_text())
    assert (body["partial"], body["night_state"]) == (True, "aborted")
    assert "the drop folder vanished" in body["aborted_reason"]
    assert manifest.programmes[1].counts["written"] == 6 and manifest.programmes[2].counts["written"] == 3
    verify_night(str(dest), manifest, state)

    assert cli(["archive-list", str(dest)]) == 0
    listed = capsys.readouterr().out
    assert f"{NIGHT:%Y%m%d}" in listed and "PARTIAL: night aborted" in listed


def test_a_whole_night_is_not_marked_partial(kafka_bootstrap, unique, tmp_path, real_401, capsys):
    naming = TopicNaming(survey=f"thwhole{unique}")
    publish_night(kafka_bootstrap, naming, NIGHT, {1: real_401[:4]})
    manifest = archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path), partial=True)  # closed: not partial
    body = json.loads((tmp_path / manifest.path).read_text())
    assert (body["partial"], body["night_state"], body["aborted_reason"]) == (False, "closed", None)
    assert cli(["archive-list", str(tmp_path)]) == 0
    assert "PARTIAL" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- item 9: nothing dropped


def test_the_bytes_of_every_reject_and_conflicting_duplicate_are_kept_and_checksummed(
    kafka_bootstrap, unique, tmp_path, real_401
):
    """Rejects on reading (junk, NaN jd), on decoding (a record cut short) and for a writer schema no column holds,
    and a duplicate whose bytes differ: each message's bytes are in the programme's rejects tarball with its
    reason, the file is in the manifest with its checksum and verified; an identical duplicate is only counted.
    Before, only the manifest's list of them remained."""
    broken = cut_short(real_401[0])
    unlike = variant(real_401[1], _set_type(candidate_field, "rb", ["null", "float", "string"]))
    other_bytes = variant(real_401[2], edit_record=lambda r: r["candidate"].update(magpsf=12.5))
    assert codec.peek(other_bytes).candid == codec.peek(real_401[2]).candid and other_bytes != real_401[2]
    good = real_401[2:]
    extra = [b"junk, not a packet", with_jd(real_401[3], math.nan), broken, unlike, other_bytes, real_401[4]]
    naming = TopicNaming(survey=f"thkeep{unique}")
    state = publish_night(kafka_bootstrap, naming, NIGHT, {1: good + extra}, partitions=1)  # offsets = list order
    manifest = archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path))
    archive = manifest.programmes[1]
    assert archive.counts == {
        "read": len(good) + len(extra),
        "written": len(good),
        "duplicates": 2,
        "conflicting_duplicates": 1,
        "rejected": 4,
    }
    kept = archive.set_aside
    path = tmp_path / kept["path"]
    assert kept["path"] == f"rejects/20231012/programid=1/{naming.survey}_public_20231012_rejects.tar.gz"
    data = path.read_bytes()
    assert (kept["size"], kept["sha256"], kept["members"]) == (len(data), hashlib.sha256(data).hexdigest(), 5)
    with tarfile.open(path) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    index = json.loads(members.pop("index.json"))
    offset = {p: i for i, p in enumerate(good + extra)}  # one partition: the offset is the place in the list
    expected = {extra[i]: offset[extra[i]] for i in range(5)}  # the identical duplicate (extra[5]) is not kept
    assert members == {f"p0-o{o}.msg": p for p, o in expected.items()}
    reasons = {e["offset"]: e["reason"] for e in index}
    assert set(reasons) == set(expected.values()) and all(e["size"] == len(members[e["member"]]) for e in index)
    assert "magic" in reasons[offset[extra[0]]] and "candidate.jd is float nan" in reasons[offset[extra[1]]]
    assert "does not decode" in reasons[offset[broken]] and "does not fit" in reasons[offset[unlike]]
    assert "different bytes" in reasons[offset[other_bytes]]
    verify_night(str(tmp_path), manifest, state)

    path.write_bytes(data[:-10])  # the kept messages are checked like every other file
    with pytest.raises(ArchiveVerificationError, match=r"rejects.tar.gz"):
        verify_night(str(tmp_path), manifest, state)
    path.unlink()
    with pytest.raises(ArchiveVerificationError, match=r"set aside.* is missing"):
        verify_night(str(tmp_path), manifest, state)


def test_a_night_without_rejects_writes_no_rejects_file(kafka_bootstrap, unique, tmp_path, real_401):
    naming = TopicNaming(survey=f"thnone{unique}")
    publish_night(kafka_bootstrap, naming, NIGHT, {1: real_401[:3], 2: real_401[3:5]})
    stale = tmp_path / f"rejects/20231012/programid=2/{naming.survey}_partnership_20231012_rejects.tar.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's rejects")  # not of this archive: it must not stand beside it
    manifest = archive_night(kafka_bootstrap, naming, NIGHT, str(tmp_path))
    assert all(a.set_aside is None for a in manifest.programmes.values())
    assert not [p for p in (tmp_path / "rejects").rglob("*") if p.is_file()]


def test_the_dawn_task_does_not_retry_an_aborted_night():
    """An aborted night stays aborted: the archive task's retry policy (which retries a night not closed yet)
    takes NightAbortedError as final, so the dawn run fails at once with the hint instead of retrying."""
    from prefect.states import Failed

    from alertdist.archive import NightNotClosedError
    from tasks.archive import archive_night as archive_task

    retry = archive_task.retry_condition_fn
    assert retry(None, None, Failed(data=NightNotClosedError("not closed yet")))
    assert not retry(None, None, Failed(data=NightAbortedError("night 20231012 was aborted")))
