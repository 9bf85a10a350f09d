"""The publisher against a real broker: byte-identical delivery, routing, rejection, crash safety, night closing."""

from __future__ import annotations

import datetime as dt
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import fastavro
import pytest
from confluent_kafka import TopicPartition

from alertdist.avro import codec
from alertdist.kafka.clients import admin_client, consumer
from alertdist.nights.state import end_offsets, read_night_state
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import (
    HEADER_CANDID,
    HEADER_PRODUCED_MS,
    HEADER_PUBLISHED_MS,
    HEADER_REASON,
    HEADER_SOURCE,
    PublishError,
    publish,
)
from alertdist.publish.sources import NIGHT_DONE, SourcePacket, simulated_packets
from tests.conftest import REPO

NIGHT = dt.date(2023, 10, 12)


def _night_topics(bootstrap, naming, partitions=3):
    ensure_night_topics(admin_client(bootstrap), naming, NIGHT, TopicSettings(partitions=partitions))
    return [*naming.programme_topics(NIGHT).values(), naming.rejected_topic(NIGHT)]


def _consume_all(bootstrap, topics, timeout=30.0):
    """Every message of ``topics`` as dicts, read up to the end offsets known now."""
    ends = end_offsets(bootstrap, topics)
    c = consumer(bootstrap)
    try:
        wanted = {(t, p): high for t, parts in ends.items() for p, high in parts.items() if high > 0}
        c.assign([TopicPartition(t, p, 0) for t, p in wanted])
        messages, deadline = [], time.monotonic() + timeout
        while len(messages) < sum(wanted.values()) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            messages.append(
                {
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "key": msg.key(),
                    "value": msg.value(),
                    "headers": dict(msg.headers() or []),
                }
            )
        assert len(messages) == sum(wanted.values()), "could not read every message back"
        return messages
    finally:
        c.close()


def _assert_closed_at_end_offsets(bootstrap, naming, topics, read):
    state = read_night_state(bootstrap, naming, NIGHT)
    assert state is not None and state.closed
    assert state.end_offsets == end_offsets(bootstrap, topics)
    assert state.counts["read"] == read
    return state


def test_real_packets_arrive_byte_identical_in_their_programme_topic(
    kafka_bootstrap, unique, packet_files, uw_tarball_members
):
    """ZTF's 59 public packets in CI (the project's own of every version in a fresh clone), files and tarball."""
    naming = TopicNaming(survey=f"r{unique}")
    topics = _night_topics(kafka_bootstrap, naming)
    items = [SourcePacket(p.name, p.read_bytes(), None) for p in packet_files]
    items += [SourcePacket(name, data, None) for name, data in uw_tarball_members]
    # three nights' packets replayed into one: the night check is off, as for a test replay
    result = publish(items, bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT, check_night=False)

    n = len(items)  # 59 with ../shared
    assert result.read == n and result.delivered == {1: n} and result.rejected == {} and result.closed
    messages = _consume_all(kafka_bootstrap, topics)
    assert Counter(m["value"] for m in messages) == Counter(i.packet for i in items)
    for m in messages:
        info = codec.peek(m["value"])
        assert m["topic"] == naming.programme_topic(NIGHT, info.programid)
        assert m["key"] == info.objectId.encode()
        assert int(m["headers"][HEADER_CANDID]) == info.candid
        assert int(m["headers"][HEADER_PRODUCED_MS]) <= int(m["headers"][HEADER_PUBLISHED_MS])
    _assert_closed_at_end_offsets(kafka_bootstrap, naming, topics, read=n)


def test_a_simulated_night_is_routed_by_programme_and_keeps_each_object_in_order(kafka_bootstrap, unique):
    naming = TopicNaming(survey=f"s{unique}")
    topics = _night_topics(kafka_bootstrap, naming, partitions=4)
    items = list(simulated_packets(300, night=NIGHT, seed=11))
    infos = {codec.peek(i.packet).candid: codec.peek(i.packet) for i in items}
    result = publish(items, bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT)

    expected = Counter(info.programid for info in infos.values())
    assert len(expected) == 3 and result.delivered == dict(expected)
    assert result.rejected == {} and result.failed == 0 and result.missing == 0
    assert result.latency_ms["p99"] >= result.latency_ms["p50"] >= 0
    messages = _consume_all(kafka_bootstrap, topics)
    assert [m["value"] for m in sorted(messages, key=lambda m: codec.peek(m["value"]).candid)] == [
        i.packet for i in sorted(items, key=lambda i: codec.peek(i.packet).candid)
    ]
    where = defaultdict(set)
    for m in messages:
        info = infos[int(m["headers"][HEADER_CANDID])]
        assert m["topic"] == naming.programme_topic(NIGHT, info.programid) and m["key"] == info.objectId.encode()
        where[info.objectId, m["topic"]].add(m["partition"])
    # within a programme's topic, one object's alerts share a partition, so they stay in order
    assert all(len(partitions) == 1 for partitions in where.values())
    sent = defaultdict(list)
    for item in items:
        info = codec.peek(item.packet)
        sent[info.objectId, naming.programme_topic(NIGHT, info.programid)].append(info.candid)
    repeated = [k for k, candids in sent.items() if len(candids) > 1]
    assert repeated, "the simulated night should revisit some objects"
    for obj, topic in repeated:
        own = sorted(
            (m for m in messages if m["key"] == obj.encode() and m["topic"] == topic), key=lambda m: m["offset"]
        )
        assert [int(m["headers"][HEADER_CANDID]) for m in own] == sent[obj, topic]
    state = _assert_closed_at_end_offsets(kafka_bootstrap, naming, topics, read=300)
    assert state.total_messages() == 300


def _other_record_packet() -> bytes:
    schema = {
        "type": "record",
        "name": "weather",
        "namespace": "palomar",
        "fields": [{"name": "humidity", "type": "float"}],
    }
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), [{"humidity": 0.4}])
    return out.getvalue()


def _programid_4_packet(packet: bytes) -> bytes:
    record = codec.decode(packet)
    record["candidate"]["programid"] = 4
    return codec.encode(record, record["schemavsn"])


def test_bad_packets_are_set_aside_with_a_reason_and_the_good_ones_around_them_published(kafka_bootstrap, unique):
    naming = TopicNaming(survey=f"b{unique}")
    topics = _night_topics(kafka_bootstrap, naming)
    good = list(simulated_packets(40, night=NIGHT, seed=5))
    template = good[0].packet
    bad = {
        "garbage.avro": (os.urandom(4000), "malformed"),
        "truncated.avro": (template[: len(template) // 2], "malformed"),
        "empty.avro": (b"", "malformed"),
        "weather.avro": (_other_record_packet(), "malformed"),
        "huge.avro": (template + os.urandom(200_000), "oversize"),
        "programme4.avro": (_programid_4_packet(template), "unknown-programid"),
        "tomorrow.avro": (next(iter(simulated_packets(1, night=NIGHT + dt.timedelta(days=1)))).packet, "wrong-night"),
    }
    stream = list(good)
    for i, (name, (data, _)) in enumerate(bad.items()):
        stream.insert(3 + 5 * i, SourcePacket(name, data, None))

    result = publish(stream, bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT, max_packet_bytes=150_000)

    assert result.read == 47 and result.delivered_total == 40 and result.closed
    assert result.rejected == dict(Counter(kind for _, kind in bad.values()))
    messages = _consume_all(kafka_bootstrap, topics)
    published = [m for m in messages if m["topic"] != naming.rejected_topic(NIGHT)]
    assert sorted(m["value"] for m in published) == sorted(i.packet for i in good)
    rejected = {m["headers"][HEADER_SOURCE].decode(): m for m in messages if m["topic"] == naming.rejected_topic(NIGHT)}
    assert set(rejected) == set(bad)
    for name, (data, kind) in bad.items():
        reason = rejected[name]["headers"][HEADER_REASON].decode()
        assert reason.startswith(f"{kind}: ") and len(reason) > len(kind) + 10, reason
        assert rejected[name]["value"] == data and HEADER_PRODUCED_MS in rejected[name]["headers"]
    assert "ztf.alert" in rejected["weather.avro"]["headers"][HEADER_REASON].decode()
    _assert_closed_at_end_offsets(kafka_bootstrap, naming, topics, read=47)


def test_missing_topics_and_closed_nights_fail_loudly_before_anything_is_sent(kafka_bootstrap, unique):
    naming = TopicNaming(survey=f"m{unique}")
    with pytest.raises(PublishError, match=r"do not exist.*alertdist topics create"):
        publish([], bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT)
    _night_topics(kafka_bootstrap, naming)
    assert publish([], bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT).closed
    with pytest.raises(PublishError, match="already closed"):
        publish([], bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT)


def _cli(*args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "alertdist.cli.main", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _write_atomically(folder, item):
    tmp = folder / f".{item.name}.tmp"
    tmp.write_bytes(item.packet)
    os.replace(tmp, folder / item.name)


def test_killing_the_publisher_mid_night_loses_no_packet_from_the_drop_folder(kafka_bootstrap, unique, tmp_path):
    naming = TopicNaming(survey=f"k{unique}")
    topics = _night_topics(kafka_bootstrap, naming)
    env = {**os.environ, "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap, "ALERTDIST_SURVEY": naming.survey}
    drop = tmp_path / "drop"
    drop.mkdir()
    items = list(simulated_packets(300, night=NIGHT, seed=7))
    for item in items[:100]:
        _write_atomically(drop, item)
    writing = threading.Thread(target=lambda: [(_write_atomically(drop, i), time.sleep(0.01)) for i in items[100:]])
    command = ("publish", "--night", f"{NIGHT:%Y%m%d}", "--drop-folder", str(drop), "--no-create-topics")

    first = _cli(*command, env=env)
    deadline = time.monotonic() + 60
    while len(list(drop.glob("*.avro"))) == 100 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    writing.start()  # the pipeline goes on writing while the publisher works
    while len(list(drop.glob("*.avro"))) >= 40 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert writing.is_alive(), "the publisher should have been killed while the pipeline was still writing"
    writing.join()
    left_after_kill = len(list(drop.glob("*.avro")))
    assert 0 < left_after_kill < 300
    (drop / NIGHT_DONE).touch()

    second = _cli(*command, env=env)
    out, err = second.communicate(timeout=90)
    assert second.returncode == 0, err
    assert "closed" in out

    messages = _consume_all(kafka_bootstrap, topics)
    candids = Counter(int(m["headers"][HEADER_CANDID]) for m in messages)
    assert set(candids) == {codec.peek(i.packet).candid for i in items}  # every packet is in Kafka
    duplicates = sum(candids.values()) - len(items)
    print(
        f"\nkilled with {left_after_kill} files left; {duplicates} duplicate(s) from acknowledgements lost in the kill"
    )
    assert duplicates <= 300 - left_after_kill  # at most what was in flight when it died
    assert list(drop.glob("*.avro")) == [] and (drop / f"{NIGHT_DONE}.{NIGHT:%Y%m%d}").exists()
    state = read_night_state(kafka_bootstrap, naming, NIGHT)
    assert state.closed and state.end_offsets == end_offsets(kafka_bootstrap, topics)


def test_sigterm_pauses_the_publisher_cleanly_and_the_night_stays_open(kafka_bootstrap, unique, tmp_path):
    naming = TopicNaming(survey=f"t{unique}")
    topics = _night_topics(kafka_bootstrap, naming)
    env = {**os.environ, "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap, "ALERTDIST_SURVEY": naming.survey}
    items = list(simulated_packets(20, night=NIGHT, seed=2))
    for item in items:
        _write_atomically(tmp_path, item)
    proc = _cli("publish", "--night", f"{NIGHT:%Y%m%d}", "--drop-folder", str(tmp_path), env=env)
    deadline = time.monotonic() + 60
    while list(tmp_path.glob("*.avro")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out and "stays open" in out
    assert len(_consume_all(kafka_bootstrap, topics)) == 20
    assert read_night_state(kafka_bootstrap, naming, NIGHT).state == "open"


def test_the_publish_flow_publishes_closes_and_leaves_artifacts(kafka_bootstrap, unique, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from alertdist.flows.publish import publish_night

    survey = f"f{unique}"
    summary = publish_night(
        source="simulate:30", night=f"{NIGHT:%Y%m%d}", partitions=2, bootstrap_servers=kafka_bootstrap, survey=survey
    )
    assert summary["closed"] and summary["read"] == 30 and sum(summary["delivered"].values()) == 30
    naming = TopicNaming(survey=survey)
    assert read_night_state(kafka_bootstrap, naming, NIGHT).closed
    with get_client(sync_client=True) as client:
        keys = [f"publish-{survey}-20231012", f"publish-summary-{survey}-20231012"]
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    by_key = {a.key: a for a in artifacts}
    assert set(by_key) == set(keys)
    assert by_key[keys[0]].type == "progress" and float(by_key[keys[0]].data) == 100.0
    assert by_key[keys[1]].type == "table" and "delivered programid" in str(by_key[keys[1]].data)


def test_only_transient_kafka_errors_are_retried():
    from confluent_kafka import KafkaError, KafkaException

    from alertdist.kafka.errors import is_transient
    from alertdist.nights.state import NightStateError
    from alertdist.nights.topics import TopicsError

    def wrapped(outer, inner):
        try:
            raise outer from inner
        except Exception as e:
            return e

    timeout = KafkaException(KafkaError(KafkaError._TIMED_OUT))
    denied = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert is_transient(timeout)
    assert is_transient(KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)))
    assert is_transient(wrapped(TopicsError("creating topic x failed"), timeout))
    assert not is_transient(denied)
    assert not is_transient(wrapped(TopicsError("creating topic x failed"), denied))
    assert is_transient(NightStateError("marking night 20231012 closed failed: timed out"))
    assert is_transient(PublishError("3 unacknowledged", transient=True))
    assert not is_transient(PublishError("night 20231012 is already closed"))
    assert not is_transient(ValueError("programid 4 is not one of [1, 2, 3]"))


def test_a_packet_too_big_even_for_the_rejected_topic_keeps_its_head_and_size(kafka_bootstrap, unique):
    naming = TopicNaming(survey=f"o{unique}")
    topics = _night_topics(kafka_bootstrap, naming, partitions=1)
    good = next(iter(simulated_packets(1, night=NIGHT, seed=4)))
    giant = good.packet + bytes(11 * 1024 * 1024)
    result = publish(
        [SourcePacket("giant.avro", giant, None), good], bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT
    )
    assert result.rejected == {"oversize": 1} and result.delivered_total == 1 and result.closed
    [kept] = [m for m in _consume_all(kafka_bootstrap, topics) if m["topic"] == naming.rejected_topic(NIGHT)]
    assert int(kept["headers"]["alertdist.original_size"]) == len(giant)
    assert giant.startswith(kept["value"]) and len(kept["value"]) > 1024 * 1024


@pytest.mark.parametrize(
    "site, local, expected",
    [
        ("palomar", (2023, 7, 11, 16, 30), (2023, 7, 12)),  # summer dusk: still 23:30 UTC on the 11th
        ("palomar", (2023, 7, 12, 2, 0), (2023, 7, 12)),  # the same night after midnight
        ("palomar", (2023, 12, 11, 16, 0), (2023, 12, 12)),  # winter dusk: already the 12th in UTC
        ("cerro-pachon", (2024, 3, 5, 19, 0), (2024, 3, 5)),  # a Chilean night keeps its evening's date
        ("cerro-pachon", (2024, 3, 6, 4, 0), (2024, 3, 5)),
    ],
)
def test_tonight_is_the_night_starting_this_evening_or_under_way(site, local, expected):
    from zoneinfo import ZoneInfo

    from alertdist.nights.dates import SITES, tonight

    now = dt.datetime(*local, tzinfo=ZoneInfo(SITES[site].timezone))
    assert tonight(SITES[site], now) == dt.date(*expected)


def _broken_after_candidate(packet: bytes) -> bytes:
    """The same packet with its record cut off halfway (in the history), reframed so the container is sound."""
    from alertdist.avro.container import build_container, parse_container

    c = parse_container(packet)
    body = packet[c.body_start : c.body_end]
    return build_container(
        packet[c.schema_start : c.schema_end], body[: len(body) // 2], c.sync_marker, c.metadata_keys
    )


def test_full_check_sets_aside_a_packet_broken_after_its_candidate(kafka_bootstrap, unique):
    naming = TopicNaming(survey=f"c{unique}")
    topics = _night_topics(kafka_bootstrap, naming, partitions=1)
    good = next(iter(simulated_packets(1, night=NIGHT, seed=9)))
    broken = _broken_after_candidate(good.packet)
    codec.peek(broken)  # the cheap check cannot see it...
    with pytest.raises(codec.AlertPacketError):
        codec.decode(broken)  # ...but no consumer could read it
    result = publish(
        [SourcePacket("broken.avro", broken, None), good],
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        night=NIGHT,
        full_check=True,
    )
    assert result.rejected == {"malformed": 1} and result.delivered_total == 1
    [rejected] = [m for m in _consume_all(kafka_bootstrap, topics) if m["topic"] == naming.rejected_topic(NIGHT)]
    assert rejected["value"] == broken and rejected["headers"][HEADER_SOURCE] == b"broken.avro"


# --------------------------------------------------------------------------- hostile input (issue 23, item 2)


def test_a_drop_folder_with_nan_and_huge_jd_or_a_negative_candid_publishes_the_rest_and_closes(
    kafka_bootstrap, unique, tmp_path
):
    from alertdist.publish.sources import DropFolder
    from tests.test_plausible import mutated

    naming = TopicNaming(survey=f"h{unique}")
    topics = _night_topics(kafka_bootstrap, naming, partitions=1)
    good = list(simulated_packets(20, night=NIGHT, seed=31))
    hostile = {
        "0nan.avro": mutated(good[0].packet, jd=float("nan")),
        "0huge.avro": mutated(good[1].packet, jd=1e300),
        "0negative.avro": mutated(good[2].packet, candid=-5),
        "0objectid.avro": mutated(good[3].packet, objectId="ZTF\n" + "x" * 300),
    }
    for item in good:
        _write_atomically(tmp_path, item)
    for name, data in hostile.items():
        _write_atomically(tmp_path, SourcePacket(name, data, None))
    (tmp_path / NIGHT_DONE).touch()

    result = publish(DropFolder(tmp_path), bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT)

    assert result.closed and result.read == 24 and result.delivered_total == 20
    assert result.rejected == {"implausible": 4}
    assert list(tmp_path.glob("*.avro")) == [] and sorted(p.name for p in (tmp_path / "rejected").iterdir()) == sorted(
        hostile
    )
    rejected = [m for m in _consume_all(kafka_bootstrap, topics) if m["topic"] == naming.rejected_topic(NIGHT)]
    reasons = {m["headers"][HEADER_SOURCE].decode(): m["headers"][HEADER_REASON].decode() for m in rejected}
    assert "candidate.jd" in reasons["0nan.avro"] and "candidate.jd" in reasons["0huge.avro"]
    assert "candid is int -5" in reasons["0negative.avro"] and "objectId" in reasons["0objectid.avro"]
    assert {m["value"] for m in rejected} == set(hostile.values())  # kept whole, for a look


def test_hostile_files_in_a_drop_folder_are_set_aside_with_a_reason_and_the_night_closes(
    kafka_bootstrap, unique, tmp_path
):
    from alertdist.publish.sources import DropFolder

    naming = TopicNaming(survey=f"y{unique}")
    topics = _night_topics(kafka_bootstrap, naming, partitions=1)
    drop, outside = tmp_path / "drop", tmp_path / "outside"
    drop.mkdir()
    outside.mkdir()
    good = list(simulated_packets(5, night=NIGHT, seed=32))
    for item in good:
        _write_atomically(drop, item)
    stranger = next(iter(simulated_packets(1, night=NIGHT, seed=33)))
    (outside / "stranger.avro").write_bytes(stranger.packet)  # a valid packet, but not the folder's
    os.symlink(outside / "stranger.avro", drop / "escape.avro")
    with open(os.path.join(os.fsencode(drop), b"\xffbad\xfe.avro"), "wb") as f:
        f.write(b"not a packet")
    (drop / "huge.avro").write_bytes(good[0].packet + bytes(200_000))
    (drop / NIGHT_DONE).touch()

    result = publish(
        DropFolder(drop, max_bytes=150_000),
        bootstrap_servers=kafka_bootstrap,
        naming=naming,
        night=NIGHT,
        max_packet_bytes=150_000,
    )

    assert result.closed and result.read == 8 and result.delivered_total == 5
    assert result.rejected == {"outside-folder": 1, "malformed": 1, "oversize": 1}
    messages = _consume_all(kafka_bootstrap, topics)
    assert stranger.packet not in {m["value"] for m in messages}  # nothing read through the link
    rejected = {m["headers"][HEADER_SOURCE]: m for m in messages if m["topic"] == naming.rejected_topic(NIGHT)}
    assert set(rejected) == {b"escape.avro", b"\\udcffbad\\udcfe.avro", b"huge.avro"}
    assert int(rejected[b"huge.avro"]["headers"]["alertdist.original_size"]) == len(good[0].packet) + 200_000
    assert sorted(os.listdir(os.fsencode(drop / "rejected"))) == [b"escape.avro", b"huge.avro", b"\xffbad\xfe.avro"]


def test_a_tarball_of_no_packets_fails_and_leaves_the_night_open(kafka_bootstrap, unique, tmp_path):
    from alertdist.publish.sources import SourceError, SourceSpec
    from tests.test_sources import _tarball

    naming = TopicNaming(survey=f"n{unique}")
    _night_topics(kafka_bootstrap, naming, partitions=1)
    packet = next(iter(simulated_packets(1, night=NIGHT, seed=34))).packet
    tarball = _tarball(tmp_path / "night.tar.gz", [("README", b"hello"), ("123", packet)])
    with pytest.raises(PublishError, match=r"every one of the 2 packet.*rejected.*not-a-packet") as raised:
        publish(
            SourceSpec.parse(str(tarball)).open(NIGHT), bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT
        )
    assert raised.value.result.rejected == {"not-a-packet": 2}
    assert read_night_state(kafka_bootstrap, naming, NIGHT).state == "open"
    empty = _tarball(tmp_path / "empty.tar.gz", [])
    with pytest.raises(SourceError, match="no member"):
        publish(SourceSpec.parse(str(empty)).open(NIGHT), bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT)
    assert read_night_state(kafka_bootstrap, naming, NIGHT).state == "open"


def test_the_publish_command_sets_aside_a_nan_jd_packet_and_closes_the_night(kafka_bootstrap, unique, tmp_path):
    """The reproduction of issue 23: `alertdist publish` exited 1 on a NaN jd and every file after it stayed."""
    from tests.test_plausible import mutated

    naming = TopicNaming(survey=f"q{unique}")
    _night_topics(kafka_bootstrap, naming, partitions=1)
    env = {**os.environ, "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap, "ALERTDIST_SURVEY": naming.survey}
    good = list(simulated_packets(6, night=NIGHT, seed=35))
    _write_atomically(tmp_path, SourcePacket("0000-nan.avro", mutated(good[0].packet, jd=float("nan")), None))
    for item in good[1:]:
        _write_atomically(tmp_path, item)
    (tmp_path / NIGHT_DONE).touch()
    command = _cli(
        "publish", "--night", f"{NIGHT:%Y%m%d}", "--drop-folder", str(tmp_path), "--no-create-topics", env=env
    )
    out, err = command.communicate(timeout=120)
    assert command.returncode == 0, err
    assert "delivered 5" in out and "implausible: 1" in out and "closed" in out
    assert list(tmp_path.glob("*.avro")) == [] and [p.name for p in (tmp_path / "rejected").iterdir()] == [
        "0000-nan.avro"
    ]


def test_any_packet_source_is_settled_packet_by_packet_and_told_when_its_night_closed(kafka_bootstrap, unique):
    """The one seam: a source of its own (not the drop folder) gets every acknowledgement and the night's close."""
    from alertdist.publish.packets import PacketSource

    class Recording(PacketSource):
        def __init__(self, items):
            self.items, self.settled, self.closed = items, [], []

        def __iter__(self):
            return iter(self.items)

        def settle(self, item, rejected):
            self.settled.append((item.name, rejected))

        def night_closed(self, night):
            self.closed.append(night)

    naming = TopicNaming(survey=f"p{unique}")
    _night_topics(kafka_bootstrap, naming, partitions=1)
    items = [*list(simulated_packets(20, night=NIGHT, seed=3)), SourcePacket("junk.avro", b"not avro", None)]
    source = Recording(items)
    result = publish(source, bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT)
    assert result.closed and (result.read, result.delivered_total, result.rejected_total) == (21, 20, 1)
    assert sorted(source.settled) == sorted([(i.name, False) for i in items[:20]] + [("junk.avro", True)])
    assert source.closed == [NIGHT] and result.settle_errors == 0
