"""Filters on a real Kafka broker: exactly-once outputs, copies sharing partitions, a killed copy, failing filters.

Each test publishes its own night (real packets and a simulated night) the way the publisher does: programme
topics, key = objectId, the agreed headers, then the closing record with the end offsets.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from alertdist.avro import codec
from alertdist.filters import alert_filter, load_filter
from alertdist.filters.batch import run_batch
from alertdist.filters.bundled import bright_transients
from alertdist.filters.live import FilterFailingError, LiveOptions, group_id_for, run_live
from alertdist.kafka.clients import admin_client, producer
from alertdist.nights.state import NightState, end_offsets, mark_night
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.simulate.night import simulate_night
from tests.conftest import have_real_data
from tests.kafka_support import committed_offsets, read_to_end
from tests.test_filters import EXPECTED, full_record

REPO = Path(__file__).resolve().parents[1]
NIGHT = dt.date(2023, 10, 12)
PARTITIONS = 4
FILTER_RUN = [str(Path(sys.executable).parent / "alertdist"), "filter", "run"]
FAST = LiveOptions(state_poll_s=0.5, done_check_s=0.2)


@pytest.fixture(scope="module")
def night_packets(packets) -> list[bytes]:
    """The packets of several versions (ZTF's 59 real ones in CI) and a simulated night of 300 in three programmes."""
    return packets + [a.packet for a in simulate_night(300, night=NIGHT, seed=7)]


_records: dict[bytes, dict] = {}


def record(packet: bytes) -> dict:
    """The full record by plain fastavro (decoded once per packet for the whole module)."""
    if packet not in _records:
        _records[packet] = full_record(packet)
    return _records[packet]


def publish_night(
    bootstrap: str,
    naming: TopicNaming,
    packets: list[bytes],
    *,
    transactional: bool = False,
    extra: list[tuple[int, bytes]] = (),
    close: bool = True,
) -> dict[int, tuple[str, bytes]]:
    """Publish packets as the publisher does, close the night; returns candid -> (topic, packet)."""
    ensure_night_topics(admin_client(bootstrap), naming, NIGHT, TopicSettings(partitions=PARTITIONS))
    overrides = {"transactional.id": f"publisher-{naming.survey}"} if transactional else {}
    p = producer(bootstrap, **overrides)
    failures = []
    if transactional:
        p.init_transactions(30)
        p.begin_transaction()
    published = {}
    for packet in packets:
        info = codec.peek(packet)
        topic = naming.programme_topic(NIGHT, info.programid)
        now = str(int(time.time() * 1000)).encode()
        p.produce(
            topic,
            packet,
            key=info.objectId.encode(),
            on_delivery=lambda e, m: e and failures.append(e),
            headers=[
                ("alertdist.produced_ms", now),
                ("alertdist.published_ms", now),
                ("alertdist.candid", str(info.candid).encode()),
            ],
        )
        p.poll(0)
        published[info.candid] = (topic, packet)
    for programid, raw in extra:  # bytes a publisher would reject; here they reach the filter
        p.produce(naming.programme_topic(NIGHT, programid), raw, key=b"bad")
    if transactional:
        p.commit_transaction(30)
    assert p.flush(30) == 0 and not failures
    if close:
        close_night(bootstrap, naming)
    return published


def close_night(bootstrap: str, naming: TopicNaming) -> None:
    topics = list(naming.programme_topics(NIGHT).values())
    mark_night(bootstrap, naming, NightState(f"{NIGHT:%Y%m%d}", "closed", end_offsets(bootstrap, topics)))


def read_topics(bootstrap: str, topics: list[str]) -> list:
    """Every message of the topics as a read_committed consumer sees them, once no transaction is open."""
    return read_to_end(bootstrap, topics, settle=True, timeout=60)


def read_topic(bootstrap: str, topic: str) -> list:
    return read_topics(bootstrap, [topic])


def outputs_of(bootstrap: str, naming: TopicNaming, filter_name: str) -> list:
    return read_topics(
        bootstrap, [naming.filter_output_topic(t, filter_name) for t in naming.programme_topics(NIGHT).values()]
    )


def candid_of(msg) -> int:
    return int(dict(msg.headers())["alertdist.candid"])


# ------------------------------------------------------------------------------------------ bundled, live


@pytest.fixture(scope="module")
def shared_night(kafka_bootstrap, night_packets) -> tuple[TopicNaming, dict]:
    """One published night for the tests whose filters differ (each filter has its own group and outputs)."""
    naming = TopicNaming(survey=f"s{uuid.uuid4().hex[:10]}")
    return naming, publish_night(kafka_bootstrap, naming, night_packets)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bundled_filter_live_outputs_exactly_the_passing_packets_and_equals_batch(name, kafka_bootstrap, shared_night):
    naming, published = shared_night
    expected = {c for c, (_, packet) in published.items() if EXPECTED[name](record(packet))}
    assert 0 < len(expected) < len(published)

    report = run_live(name, NIGHT, bootstrap_servers=kafka_bootstrap, naming=naming, options=FAST)
    assert report.status == "finished" and report.lag == 0
    assert report.read == len(published) and report.passed == len(expected) and report.errors == 0
    assert report.read == report.passed + report.rejected + report.errors + report.malformed

    outputs = outputs_of(kafka_bootstrap, naming, name)
    assert sorted(candid_of(m) for m in outputs) == sorted(expected)  # each passing alert exactly once
    for msg in outputs:
        topic, packet = published[candid_of(msg)]
        assert msg.value() == packet, "output must be the original packet, byte for byte"
        assert msg.topic() == naming.filter_output_topic(topic, name)
        assert msg.key() == record(packet)["objectId"].encode()
        headers = dict(msg.headers())
        assert {"alertdist.produced_ms", "alertdist.published_ms", "alertdist.candid"} <= set(headers)
        assert headers["alertdist.filter"] == name.encode()
        assert isinstance(json.loads(headers["alertdist.annotations"]), dict)
    assert not read_topic(kafka_bootstrap, naming.filter_errors_topic(NIGHT, name))

    # the same filter in batch mode over the same packets: the same alerts with the same annotations
    batch = run_batch(name, [packet for _, packet in published.values()])
    live_rows = {candid_of(m): json.loads(dict(m.headers())["alertdist.annotations"]) for m in outputs}
    annotation_columns = [c for c in batch.table.column_names if c not in ("candid", "objectId", "programid")]
    batch_rows = {
        row["candid"]: {k: row[k] for k in annotation_columns if row[k] is not None} for row in batch.table.to_pylist()
    }
    assert batch_rows == live_rows


def test_closed_and_consumed_night_is_a_no_op_on_rerun(kafka_bootstrap, unique, packets):
    naming = TopicNaming(survey=f"r{unique}")
    publish_night(kafka_bootstrap, naming, packets)
    first = run_live("solar_system", NIGHT, bootstrap_servers=kafka_bootstrap, naming=naming, options=FAST)
    again = run_live("solar_system", NIGHT, bootstrap_servers=kafka_bootstrap, naming=naming, options=FAST)
    expected = sum(EXPECTED["solar_system"](record(p)) for p in packets)
    assert first.passed == expected == (15 if have_real_data() else 2)  # ZTF's 59 real packets, or the made ones
    assert again.read == 0 and again.status == "finished" and again.lag == 0
    assert len(outputs_of(kafka_bootstrap, naming, "solar_system")) == first.passed


def _copies_that_end_while_joining(bootstrap: str, survey: str, copies: int, rounds_done) -> None:
    """Run in a child process: a close that hangs freezes its whole process (the GIL held), so only a parent
    can see it. Counts its rounds in ``rounds_done``."""
    naming = TopicNaming(survey=survey)

    def copy(i, reports):
        reports[i] = run_live(
            "solar_system", NIGHT, bootstrap_servers=bootstrap, naming=naming, options=FAST, copy_index=i
        )

    while True:
        reports = [None] * copies
        threads = [threading.Thread(target=copy, args=(i, reports)) for i in range(copies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r is not None and r.status == "finished" and r.read == 0 for r in reports), reports
        rounds_done.value += 1


def test_copies_that_find_the_night_done_while_still_joining_always_close(kafka_bootstrap, unique, night_packets):
    """Copies started on a consumed night see it done before their group has assigned them anything, and close
    mid-join. Closed so, one round in eight froze for good (librdkafka#4041) in a stress run; a copy now lets
    the rebalance end before it closes."""
    naming = TopicNaming(survey=f"j{unique}")
    publish_night(kafka_bootstrap, naming, night_packets)
    assert run_live("solar_system", NIGHT, bootstrap_servers=kafka_bootstrap, naming=naming, options=FAST).lag == 0
    spawn = multiprocessing.get_context("spawn")
    rounds_done = spawn.Value("i", 0)
    child = spawn.Process(target=_copies_that_end_while_joining, args=(kafka_bootstrap, naming.survey, 4, rounds_done))
    child.start()
    try:
        seen, progressed = 0, time.monotonic()
        while rounds_done.value < 25:
            assert child.is_alive(), f"the copies failed in round {rounds_done.value + 1} (exit {child.exitcode})"
            if rounds_done.value > seen:
                seen, progressed = rounds_done.value, time.monotonic()
            assert time.monotonic() - progressed < 60, f"round {seen + 1}: a copy's close hung, its process froze"
            time.sleep(0.2)
    finally:
        child.kill()


# ----------------------------------------------------------------------------------- copies and restarts


@alert_filter(name="slow_bright", fields=("objectId", "candidate"))
def slow_bright(alert):
    """bright_transients, slowed down so that copies overlap and a kill lands mid-night."""
    time.sleep(0.02)
    return bright_transients(alert)


def test_two_copies_split_the_partitions_and_produce_each_passing_alert_once(kafka_bootstrap, unique, night_packets):
    naming = TopicNaming(survey=f"c{unique}")
    # written in one transaction, so the partitions end with a commit marker the copies must step over
    published = publish_night(kafka_bootstrap, naming, night_packets, transactional=True)
    expected = sorted(c for c, (_, p) in published.items() if EXPECTED["bright_transients"](record(p)))
    reports = [None, None]
    first_batch_committed = threading.Event()

    def copy(i):
        def progress(r):
            if r.read > 0:
                first_batch_committed.set()

        reports[i] = run_live(
            load_filter("tests.test_filters_live:slow_bright"),
            NIGHT,
            bootstrap_servers=kafka_bootstrap,
            naming=naming,
            copy_index=i,
            progress=progress,
            options=LiveOptions(
                batch_size=20, state_poll_s=0.5, done_check_s=0.2, consumer_overrides={"heartbeat.interval.ms": 500}
            ),
        )

    threads = [threading.Thread(target=copy, args=(i,)) for i in range(2)]
    threads[0].start()
    # the second copy joins mid-night: the group rebalances and the first hands over half its partitions
    assert first_batch_committed.wait(60)
    threads[1].start()
    for t in threads:
        t.join(120)
    assert all(r is not None and r.status == "finished" and r.lag == 0 for r in reports), reports
    assert all(r.read > 0 for r in reports), f"both copies must have worked: {reports}"
    assert sum(r.read for r in reports) == len(published)  # a revoked copy hands over exactly where it stopped
    all_partitions = {(t, p) for t in naming.programme_topics(NIGHT).values() for p in range(PARTITIONS)}
    assert reports[0].partitions | reports[1].partitions == all_partitions
    outputs = outputs_of(kafka_bootstrap, naming, "slow_bright")
    assert sorted(candid_of(m) for m in outputs) == expected


def _committed(bootstrap: str, group: str, topics: list[str]) -> int:
    return committed_offsets(bootstrap, group, topics, PARTITIONS)


def test_a_killed_copy_restarted_neither_skips_nor_duplicates(kafka_bootstrap, unique, night_packets, tmp_path):
    naming = TopicNaming(survey=f"k{unique}")
    published = publish_night(kafka_bootstrap, naming, night_packets)
    expected = sorted(c for c, (_, p) in published.items() if EXPECTED["bright_transients"](record(p)))
    topics = list(naming.programme_topics(NIGHT).values())
    group = group_id_for(naming, NIGHT, "slow_bright")
    env = {
        **os.environ,
        "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ALERTDIST_SURVEY": naming.survey,
        "PYTHONPATH": str(REPO),
    }
    command = [*FILTER_RUN, "tests.test_filters_live:slow_bright", "--night", f"{NIGHT:%Y%m%d}", "--batch-size", "20"]

    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while _committed(kafka_bootstrap, group, topics) < 60:
            assert first.poll() is None and time.monotonic() < deadline, "the copy ended or stalled before the kill"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(10)
        log.close()
    done_at_kill = _committed(kafka_bootstrap, group, topics)
    assert 0 < done_at_kill < len(published), "the kill must land mid-night"

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "finished" in second.stdout and "group lag 0" in second.stdout
    outputs = outputs_of(kafka_bootstrap, naming, "slow_bright")
    assert sorted(candid_of(m) for m in outputs) == expected  # read_committed: each passing alert exactly once
    assert _committed(kafka_bootstrap, group, topics) == len(published)


def test_an_open_night_keeps_the_copy_running_until_sigterm_or_the_close(kafka_bootstrap, unique, packets):
    naming = TopicNaming(survey=f"o{unique}")
    published = publish_night(kafka_bootstrap, naming, packets, close=False)
    mark_night(kafka_bootstrap, naming, NightState(f"{NIGHT:%Y%m%d}", "open"))
    topics = list(naming.programme_topics(NIGHT).values())
    group = group_id_for(naming, NIGHT, "solar_system")
    env = {**os.environ, "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap, "ALERTDIST_SURVEY": naming.survey}
    command = [*FILTER_RUN, "solar_system", "--night", f"{NIGHT:%Y%m%d}"]

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while _committed(kafka_bootstrap, group, topics) < len(published):
            assert first.poll() is None and time.monotonic() < deadline, "the copy ended before reading the night"
            time.sleep(0.1)
        time.sleep(3)  # idle, all read: an open night is not over, however quiet
        assert first.poll() is None, "a copy must not stop on an idle stream while the night is open"
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=30)
    finally:
        first.kill()
    assert first.returncode == 0, out
    assert "stopped" in out and f"read {len(published)}" in out and "group lag 0" in out

    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        close_night(kafka_bootstrap, naming)
        out, _ = second.communicate(timeout=60)  # stops by itself once it sees the close
    finally:
        second.kill()
    assert second.returncode == 0 and "finished" in out and "read 0," in out, out
    expected = {c for c, (_, p) in published.items() if EXPECTED["solar_system"](record(p))}
    assert sorted(candid_of(m) for m in outputs_of(kafka_bootstrap, naming, "solar_system")) == sorted(expected)


# ------------------------------------------------------------------------------------------ failing filters


@alert_filter(name="flaky", fields=("candid", "candidate"))
def flaky(alert):
    """Raises on about one alert in five; otherwise the Solar System cut."""
    if alert["candid"] % 5 == 0:
        raise ValueError(f"no ephemeris for candid {alert['candid']}")
    return alert["candidate"]["ssnamenr"] not in (None, "null")


def test_alerts_a_filter_raises_on_go_to_the_errors_topic_and_the_rest_are_filtered(
    kafka_bootstrap, unique, night_packets
):
    naming = TopicNaming(survey=f"e{unique}")
    garbage = b"Obj\x01 this is not an alert"
    published = publish_night(kafka_bootstrap, naming, night_packets, extra=[(2, garbage)])
    raising = {c for c in published if c % 5 == 0}
    passing = {
        c for c, (_, p) in published.items() if c % 5 != 0 and record(p)["candidate"]["ssnamenr"] not in (None, "null")
    }
    assert raising and passing

    report = run_live(
        "tests.test_filters_live:flaky", NIGHT, bootstrap_servers=kafka_bootstrap, naming=naming, options=FAST
    )
    assert report.status == "finished"
    assert (report.errors, report.malformed, report.passed) == (len(raising), 1, len(passing))
    assert report.read == len(published) + 1 == report.passed + report.rejected + report.errors + report.malformed

    assert sorted(candid_of(m) for m in outputs_of(kafka_bootstrap, naming, "flaky")) == sorted(passing)
    errors = read_topic(kafka_bootstrap, naming.filter_errors_topic(NIGHT, "flaky"))
    assert len(errors) == len(raising) + 1
    by_value = {m.value(): dict(m.headers()) for m in errors}
    for candid in raising:
        topic, packet = published[candid]
        headers = by_value[packet]
        assert headers["alertdist.error"].decode() == f"ValueError: no ephemeris for candid {candid}"
        assert headers["alertdist.filter"] == b"flaky" and headers["alertdist.source_topic"] == topic.encode()
        assert {"alertdist.source_partition", "alertdist.source_offset"} <= set(headers)
    assert by_value[garbage]["alertdist.error"].startswith(b"undecodable packet")


@alert_filter(name="broken", fields=("candidate",))
def broken(alert):
    raise FileNotFoundError("model weights not found at /models/rf.pkl")


def test_a_filter_failing_on_every_alert_is_stopped_with_a_clear_message(kafka_bootstrap, shared_night):
    naming, _ = shared_night
    with pytest.raises(FilterFailingError) as info:
        run_live(
            "tests.test_filters_live:broken",
            NIGHT,
            bootstrap_servers=kafka_bootstrap,
            naming=naming,
            options=LiveOptions(error_threshold=25, batch_size=10, state_poll_s=0.5),
        )
    message = str(info.value)
    assert "25 consecutive alerts" in message and "model weights not found" in message and "resumes" in message
    # what was committed before the stop is consistent: every input offset committed has its error recorded
    group = group_id_for(naming, NIGHT, "broken")
    committed = _committed(kafka_bootstrap, group, list(naming.programme_topics(NIGHT).values()))
    assert committed < 25
    assert len(read_topic(kafka_bootstrap, naming.filter_errors_topic(NIGHT, "broken"))) == committed


# --------------------------------------------------------------------------------------------------- flow


def test_filter_night_flow_runs_copies_and_summarizes(kafka_bootstrap, unique, packets, prefect_server):
    from alertdist.flows.filter_night import filter_night

    naming = TopicNaming(survey=f"p{unique}")
    published = publish_night(kafka_bootstrap, naming, packets)
    rows = filter_night(
        filter_name="variable_stars",
        night=f"{NIGHT:%Y%m%d}",
        parallelism=2,
        bootstrap_servers=kafka_bootstrap,
        survey=naming.survey,
    )
    assert sorted(r["copy"] for r in rows) == [0, 1]
    expected = sum(EXPECTED["variable_stars"](full_record(p)) for _, p in published.values())
    assert sum(r["read"] for r in rows) == len(published) and sum(r["passed"] for r in rows) == expected
    assert all(r["status"] == "finished" and r["lag"] == 0 for r in rows)
    assert len(outputs_of(kafka_bootstrap, naming, "variable_stars")) == expected
    # each finished copy's progress artifact reads 100 % in the UI (it stayed at 0 %: a live night has no total)
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from alertdist.tasks.progress import artifact_key

    keys = [artifact_key("filter", naming.survey, f"{NIGHT:%Y%m%d}", "variable_stars", copy) for copy in (0, 1)]
    with get_client(sync_client=True) as client:
        shown = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    assert sorted((a.key, a.type, a.data) for a in shown) == [(key, "progress", 100.0) for key in keys]
