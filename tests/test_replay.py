"""Replays on a real Kafka broker: archived nights back into topics, byte for byte, at their cadence, and offline
filtering that agrees with the live filter.

Two archived nights are built once per module: the real 2018 UW tarball replayed as night 20180819 and archived
by the archiver, and a simulated night published by the publisher and archived. Everything else replays them.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import tarfile
import uuid
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from alertdist.access.readers import ArchiveReadError, ReadCounts, open_sources, tarball_alerts
from alertdist.access.replay import ensure_topic, replay_to_topic
from alertdist.archive import ArchiveOptions, archive_night
from alertdist.archive.tarball import TarballWriter, read_members
from alertdist.avro import codec
from alertdist.cli.main import main as cli
from alertdist.filters.live import LiveOptions, run_live
from alertdist.jobs.replay import replay_into_night
from alertdist.kafka.clients import admin_client
from alertdist.nights.dates import jd_to_unix
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import publish
from alertdist.publish.sources import SourcePacket, simulated_alerts
from alertdist.settings import Settings
from tests.kafka_support import read_to_end

NIGHT_2018 = dt.date(2018, 8, 19)
NIGHT = dt.date(2023, 10, 12)
SMALL = TopicSettings(partitions=3)


def read_topic(bootstrap: str, topic: str) -> list:
    """Every message of a topic, from the start of each partition to its end."""
    return read_to_end(bootstrap, [topic], timeout=60)


def tar_members(path: Path) -> dict[str, bytes]:
    with open(path, "rb") as f:
        return {m.name: m.data for m in read_members(f)}


@pytest.fixture(scope="module")
def survey_prefix() -> str:
    return f"r{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def archived_2018(kafka_bootstrap, survey_prefix, uw_tarball, tmp_path_factory):
    """UW's 2018 tarball (or its made twin) replayed as its own night (publisher routing, then closed), archived."""
    naming = TopicNaming(survey=f"{survey_prefix}uw", programmes={1: "public"})
    alerts, counts, names = open_sources([str(uw_tarball)])
    settings = Settings(bootstrap_servers=kafka_bootstrap, survey=naming.survey, programmes=naming.programmes)
    result = replay_into_night(settings, NIGHT_2018, alerts, sources=names, counts=counts, partitions=SMALL.partitions)
    dest = tmp_path_factory.mktemp("archive2018")
    manifest = archive_night(kafka_bootstrap, naming, NIGHT_2018, str(dest))
    return naming, result, dest, manifest


@pytest.fixture(scope="module")
def simulated(kafka_bootstrap, survey_prefix, tmp_path_factory):
    """A simulated night of 240 alerts in three programmes, published, closed and archived."""
    naming = TopicNaming(survey=f"{survey_prefix}sim")
    alerts = list(simulated_alerts(240, night=NIGHT, seed=11))
    ensure_night_topics(admin_client(kafka_bootstrap), naming, NIGHT, SMALL)
    published = publish(
        (SourcePacket(f"{a.candid}.avro", a.packet, None) for a in alerts),
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        night=NIGHT,
    )
    assert published.closed and published.delivered_total == 240
    dest = tmp_path_factory.mktemp("archivesim")
    manifest = archive_night(kafka_bootstrap, naming, NIGHT, str(dest), ArchiveOptions(row_group_rows=64))
    return naming, alerts, dest, manifest


# ------------------------------------------------------------------------------------- the real 2018 night


def test_replaying_uws_2018_tarball_into_a_topic_gives_its_members_byte_for_byte(
    kafka_bootstrap, unique, uw_tarball, uw_tarball_members
):
    topic = f"replay_{unique}"
    assert ensure_topic(kafka_bootstrap, topic, SMALL) == "created"
    alerts, counts, names = open_sources([str(uw_tarball)])
    result = replay_to_topic(alerts, bootstrap_servers=kafka_bootstrap, topic=topic, sources=names, counts=counts)
    assert (result.read, result.delivered, result.bad, result.failed) == (30, 30, 0, 0)
    assert result.rate_alerts_s > 0 and result.bytes_delivered == sum(len(b) for _, b in uw_tarball_members)

    messages = read_topic(kafka_bootstrap, topic)
    assert len(messages) == len(uw_tarball_members) == 30
    assert sorted(m.value() for m in messages) == sorted(b for _, b in uw_tarball_members)
    members = dict(uw_tarball_members)
    for m in messages:
        headers = dict(m.headers())
        candid = int(headers["alertdist.candid"])
        assert members[f"{candid}.avro"] == m.value()
        assert m.key() == codec.peek(m.value()).objectId.encode()
        assert int(headers["alertdist.published_ms"]) >= int(headers["alertdist.produced_ms"]) > 0


def test_the_replayed_2018_night_is_closed_and_archives_to_the_same_members(archived_2018, uw_tarball_members):
    naming, result, dest, manifest = archived_2018
    assert result.closed and (result.read, result.delivered, result.rejected, result.bad) == (30, 30, 0, 0)
    ours = tar_members(dest / f"{naming.survey}_public_20180819.tar.gz")
    assert ours == dict(uw_tarball_members)
    assert list(ours) == sorted(ours, key=lambda n: int(n.removesuffix(".avro")))  # candid order
    assert manifest.programmes[1].counts["written"] == 30


def test_replaying_from_parquet_rebuilds_packets_that_decode_to_the_same_records(
    kafka_bootstrap, unique, archived_2018, uw_tarball_members, simulated
):
    """Schema 3.0 (the real night) and 4.02 (the simulated one), each row re-encoded with its own version."""
    _, _, dest_2018, _ = archived_2018
    _, alerts, dest_sim, _ = simulated
    originals = {codec.peek(b).candid: b for _, b in uw_tarball_members} | {a.candid: a.packet for a in alerts}
    topic = f"fromparquet_{unique}"
    ensure_topic(kafka_bootstrap, topic, SMALL)
    for dest, night in ((dest_2018, NIGHT_2018), (dest_sim, NIGHT)):
        stream, counts, names = open_sources([str(dest)], archived_night=night, prefer="parquet")
        result = replay_to_topic(stream, bootstrap_servers=kafka_bootstrap, topic=topic, sources=names, counts=counts)
        assert result.bad == 0 and names == sorted(
            str(p) for p in dest.glob(f"parquet/night={night:%Y%m%d}/*/*.parquet")
        )
    messages = read_topic(kafka_bootstrap, topic)
    assert len(messages) == len(originals) == 270
    versions = defaultdict(int)
    for m in messages:
        rebuilt = codec.decode(m.value())
        original = codec.decode(originals[rebuilt["candid"]])
        versions[rebuilt["schemavsn"]] += 1
        for name in original:  # field by field, so a failure names the field
            assert rebuilt[name] == original[name], f"candid {rebuilt['candid']}: field {name} differs"
        assert rebuilt.keys() == original.keys()
        assert codec.schema_version_of(m.value()) == codec.schema_version_of(originals[rebuilt["candid"]])
    assert versions == {"3.0": 30, "4.02": 240}


# ------------------------------------------------------------------------------------- a simulated night


def test_a_replayed_archive_archives_again_to_the_same_tarball_checksums(
    kafka_bootstrap, simulated, survey_prefix, tmp_path, prefect_server
):
    """Through the Prefect flow: the archive root and the night in, the programme topics out, then archived."""
    from alertdist.flows.replay import replay_night

    _naming, _alerts, dest, manifest = simulated
    again = TopicNaming(survey=f"{survey_prefix}again")
    outcome = replay_night(
        sources=[str(dest)], night="20231012", partitions=2, bootstrap_servers=kafka_bootstrap, survey=again.survey
    )
    assert outcome["closed"] and outcome["delivered"] == outcome["read"] == 240
    second = archive_night(kafka_bootstrap, again, NIGHT, str(tmp_path), ArchiveOptions(row_group_rows=64))
    for programid, first in manifest.programmes.items():
        assert second.programmes[programid].files["tarball"]["md5"] == first.files["tarball"]["md5"]
        assert second.programmes[programid].files["tarball"]["sha256"] == first.files["tarball"]["sha256"]


def _tarball_of(alerts, path: Path) -> Path:
    with open(path, "wb") as f:
        writer = TarballWriter(f)
        for a in sorted(alerts, key=lambda a: a.candid):
            writer.add(f"{a.candid}.avro", a.packet, jd_to_unix(a.jd))
        writer.close()
    return path


def test_replaying_at_the_original_cadence_spaces_exposures_by_their_jd(kafka_bootstrap, unique, simulated, tmp_path):
    _, alerts, _, _ = simulated
    speed = 60.0
    tarball = _tarball_of(alerts, tmp_path / "night.tar.gz")
    topic = f"cadence_{unique}"
    ensure_topic(kafka_bootstrap, topic, SMALL)
    stream, counts, names = open_sources([str(tarball)])
    result = replay_to_topic(
        stream, bootstrap_servers=kafka_bootstrap, topic=topic, sources=names, counts=counts, speed=speed
    )
    assert result.delivered == 240 and result.speed == speed

    first_sent: dict[float, int] = {}  # exposure (jd) -> earliest producer timestamp (ms)
    jd_of = {a.candid: a.jd for a in alerts}
    for m in read_topic(kafka_bootstrap, topic):
        jd = jd_of[int(dict(m.headers())["alertdist.candid"])]
        first_sent[jd] = min(first_sent.get(jd, m.timestamp()[1]), m.timestamp()[1])
    jds = sorted(first_sent)
    assert len(jds) >= 6, "the simulated night should have several exposures"
    expected = [(b - a) * 86400.0 / speed for a, b in itertools.pairwise(jds)]
    measured = [(first_sent[b] - first_sent[a]) / 1000.0 for a, b in itertools.pairwise(jds)]
    assert min(expected) > 0.5  # so an unpaced replay (gaps ~0) could not pass
    # generous for a late wake-up on a loaded 2-core machine: errors seen were < 1 ms, 14 ms at load average 18
    for want, got in zip(expected, measured):
        assert abs(got - want) < 0.25, f"gap {got:.3f} s, expected {want:.3f} s (jd spacing / {speed})"
    span = (jds[-1] - jds[0]) * 86400.0 / speed
    assert abs((first_sent[jds[-1]] - first_sent[jds[0]]) / 1000.0 - span) < 0.25


def test_a_corrupt_member_is_reported_by_name_and_skipped(kafka_bootstrap, unique, uw_tarball_members, tmp_path):
    good = uw_tarball_members[:4]
    truncated = ("900000000000000001.avro", good[0][1][:5000])
    garbage = ("900000000000000002.avro", b"this is not an Avro packet" * 100)
    path = tmp_path / "damaged.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [good[0], truncated, good[1], garbage, *good[2:]]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    counts = ReadCounts(str(path))
    names = [a.name for a in tarball_alerts(str(path), counts=counts)]
    assert names == [n for n, _ in good]
    assert (counts.good, counts.bad, counts.read) == (4, 2, 6)
    assert [n for n, _ in counts.bad_members] == [truncated[0], garbage[0]]
    assert all("not a valid alert packet" in reason for _, reason in counts.bad_members)

    topic = f"damaged_{unique}"
    ensure_topic(kafka_bootstrap, topic, SMALL)
    stream, counts, sources = open_sources([str(path)])
    result = replay_to_topic(stream, bootstrap_servers=kafka_bootstrap, topic=topic, sources=sources, counts=counts)
    assert (result.read, result.delivered, result.bad) == (6, 4, 2)
    assert [n for n, _ in result.bad_members] == [truncated[0], garbage[0]]
    assert sorted(m.value() for m in read_topic(kafka_bootstrap, topic)) == sorted(b for _, b in good)


def test_a_truncated_tarball_stops_with_the_counts_so_far(uw_tarball, tmp_path):
    whole = uw_tarball.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    counts = ReadCounts(str(cut))
    seen = []
    with pytest.raises(ArchiveReadError, match="damaged or incomplete") as failure:
        for alert in tarball_alerts(str(cut), counts=counts):
            seen.append(alert.name)
    assert 0 < len(seen) < 30 and failure.value.counts.good == len(seen)
    assert seen[-1] in str(failure.value)


# ------------------------------------------------------------------------------------------ offline filtering


def test_offline_filter_on_the_archived_night_equals_the_live_filters_output(
    kafka_bootstrap, simulated, tmp_path, prefect_server
):
    from alertdist.flows.offline_filter import offline_filter

    naming, _, dest, _ = simulated
    report = run_live(
        "bright_transients",
        NIGHT,
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        options=LiveOptions(state_poll_s=0.5, done_check_s=0.2),
    )
    assert (report.read, report.passed) == (240, 14)  # seed 11: 14 bright transients, as the batch filter finds
    live = {}
    for topic in naming.programme_topics(NIGHT).values():
        for m in read_topic(kafka_bootstrap, naming.filter_output_topic(topic, "bright_transients")):
            headers = dict(m.headers())
            live[int(headers["alertdist.candid"])] = json.loads(headers["alertdist.annotations"])
    assert len(live) == report.passed

    for prefer_parquet, out in ((False, tmp_path / "from_tarballs.parquet"), (True, tmp_path / "from_parquet.csv")):
        summary = offline_filter(
            filter_name="bright_transients",
            sources=[str(dest)],
            out=str(out),
            archived_night="20231012",
            from_parquet=prefer_parquet,
        )
        assert (summary["read"], summary["passed"], summary["bad_members"]) == (240, report.passed, 0)
        if out.suffix == ".parquet":
            rows = pq.read_table(out).to_pylist()
        else:
            import pyarrow.csv as pacsv

            rows = pacsv.read_csv(out).to_pylist()
        offline = {
            r["candid"]: {k: v for k, v in r.items() if k not in ("candid", "objectId", "programid")} for r in rows
        }
        assert offline.keys() == live.keys()
        for candid, annotated in live.items():
            assert offline[candid] == pytest.approx(annotated), candid


def test_the_replay_command_line(kafka_bootstrap, unique, uw_tarball, capsys):
    topic = f"cli_{unique}"
    code = cli(
        [
            "--bootstrap-servers",
            kafka_bootstrap,
            "replay",
            str(uw_tarball),
            "--topic",
            topic,
            "--partitions",
            "2",
            "--allow-unverified",  # UW's 2018 tarball, copied without its MD5SUMS line
            "--quiet",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err  # --quiet hides progress, never the error
    assert "read 30, delivered 30, bad 0" in out and "30 good, 0 bad of 30 read" in out
    assert len(read_topic(kafka_bootstrap, topic)) == 30


def test_a_nights_parquet_is_queried_with_projection_and_row_filters(simulated):
    """The README's example: alerts brighter than 18 mag with a high real-bogus score, by pyarrow and by DuckDB."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from alertdist.access.readers import read_table

    _, alerts, dest, _ = simulated
    records = [codec.decode(a.packet, ["candid", "candidate"]) for a in alerts]
    expected = sorted(
        r["candid"]
        for r in records
        if r["candidate"]["magpsf"] < 18
        and (r["candidate"]["drb"] if r["candidate"]["drb"] is not None else r["candidate"]["rb"]) > 0.9
    )
    assert len(expected) == 70  # of 240 (seed 11): the query selects, it does not take all or nothing
    table = read_table(
        str(dest),
        ["objectId", "candid", "programid", "magpsf", "drb", "rb"],
        (ds.field("night") == "20231012")
        & (ds.field("magpsf") < 18)
        & (pc.coalesce(ds.field("drb"), ds.field("rb")) > 0.9),
    )
    assert table.column_names == ["objectId", "candid", "programid", "magpsf", "drb", "rb"]
    assert sorted(table.column("candid").to_pylist()) == expected

    duckdb = pytest.importorskip("duckdb", reason="DuckDB is optional: pip install duckdb to check its example")
    rows = duckdb.sql(f"""
        SELECT objectId, candid, programid, jd, fid, magpsf, sigmapsf, drb, rb
        FROM read_parquet('{dest}/parquet/*/*/*.parquet', hive_partitioning = true,
                          hive_types = {{'night': VARCHAR, 'programid': INTEGER}})
        WHERE night = '20231012' AND magpsf < 18 AND coalesce(drb, rb) > 0.9
        ORDER BY magpsf
    """).fetchall()
    assert sorted(r[1] for r in rows) == expected


def test_a_stop_while_waiting_for_an_exposure_leaves_the_replayed_night_open(kafka_bootstrap, simulated, survey_prefix):
    import threading

    from alertdist.nights.state import read_night_state

    _, alerts, dest, _ = simulated
    naming = TopicNaming(survey=f"{survey_prefix}stop")
    first_exposure = sum(1 for a in alerts if a.jd == min(x.jd for x in alerts))
    stream, counts, names = open_sources([str(dest)], archived_night=dt.date(2023, 10, 12))
    stop = threading.Event()
    threading.Timer(2.0, stop.set).start()  # well inside the ~40 s / 5 = 8 s before the second exposure
    result = replay_into_night(
        Settings(bootstrap_servers=kafka_bootstrap, survey=naming.survey),
        NIGHT,
        stream,
        sources=names,
        counts=counts,
        partitions=SMALL.partitions,
        speed=5.0,
        stop=stop,
    )
    assert result.stopped and not result.closed
    assert result.delivered == first_exposure < len(alerts)
    assert read_night_state(kafka_bootstrap, naming, NIGHT).state == "open"
