"""Metrics against real parts: names in Prometheus's conventions, each process's exposition and its discovery
file, the publisher's and a live filter's figures as scraped, and consumer lag measured on a real broker."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from alertdist.kafka.clients import admin_client, consumer, producer
from alertdist.metrics import catalog, heartbeat, lag, nights, registry
from alertdist.metrics.exposition import prune_targets
from alertdist.nights.dates import SITES
from alertdist.nights.topics import TopicNaming, TopicSettings, ensure_night_topics
from alertdist.publish.publisher import publish
from alertdist.publish.sources import SourcePacket, simulated_packets
from tests.conftest import REPO

NIGHT = dt.date(2023, 10, 12)


def test_every_metric_follows_prometheus_conventions():
    names = {f.name: f for f in registry.families()}
    assert len(names) >= 20
    for name, family in names.items():
        assert name.startswith("alertdist_") and name == name.lower(), name
        assert set(family.labels) <= registry.ALLOWED_LABELS, name
        assert not {"candid", "objectId", "objectid"} & set(family.labels), name
        if family.kind == "counter":
            assert name.endswith("_total"), name
        if family.kind == "histogram":
            assert name.endswith("_seconds"), name
            assert family.bounds[0] == 0.01 and family.bounds[-1] == 60.0, name
        if {"latency", "age"} & set(name.split("_")):
            assert name.endswith(("_seconds", "_seconds_total")), f"{name}: durations in seconds"
    with pytest.raises(ValueError, match="not bounded"):
        registry.Gauge("alertdist_test_bad", "x", ["candid"])
    with pytest.raises(ValueError, match="_total"):
        registry.Counter("alertdist_test_bad_count", "x")


def test_a_histogram_takes_a_batch_and_exposes_cumulative_buckets():
    h = registry.Histogram("alertdist_test_batch_seconds", "test", ["filter"])
    h.observe_many(("f",), [0.005, 0.01, 0.02, 0.7, 100.0])
    h.observe(("f",), 2.0)
    family = h.collect()
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("alertdist_test_batch_seconds_bucket", "0.01")] == 2  # le is inclusive
    assert samples[("alertdist_test_batch_seconds_bucket", "1.0")] == 4
    assert samples[("alertdist_test_batch_seconds_bucket", "2.5")] == 5
    assert samples[("alertdist_test_batch_seconds_bucket", "+Inf")] == 6
    assert samples[("alertdist_test_batch_seconds_count", None)] == 6
    assert samples[("alertdist_test_batch_seconds_sum", None)] == pytest.approx(102.735)


_SERVE = """
import sys, time
from pathlib import Path
from alertdist.metrics.exposition import expose
from alertdist.metrics.catalog import PUBLISHER_READ
PUBLISHER_READ.inc(("20231012",), 7)
e = expose("publisher", Path(sys.argv[1]))
print(e.url, flush=True)
time.sleep(120)
"""


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_process_serves_its_metrics_on_a_free_port_and_announces_it_for_prometheus(tmp_path):
    targets = tmp_path / "targets"
    targets.mkdir()
    stale = targets / "filter-999999999.json"  # a process that died without removing its file
    stale.write_text("[]")
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(targets)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        url = proc.stdout.readline().strip()
        announced = json.loads((targets / f"publisher-{proc.pid}.json").read_text())
        assert announced == [
            {"targets": [url.removeprefix("http://").removesuffix("/metrics")], "labels": {"job": "publisher"}}
        ]
        assert not stale.exists()
        samples = _scrape(url)
        assert samples[("alertdist_publisher_packets_read_total", (("night", "20231012"),))] == 7
        assert ("process_cpu_seconds_total", ()) in samples  # prometheus_client's process metrics too
    finally:
        proc.kill()
        proc.wait()
    assert prune_targets(targets) == 1 and not list(targets.glob("*.json"))


def test_the_publishers_figures_are_exported_without_a_per_packet_hook(kafka_bootstrap, unique):
    naming = TopicNaming(survey=f"m{unique}")
    ensure_night_topics(admin_client(kafka_bootstrap), naming, NIGHT, TopicSettings(partitions=2))
    night = f"{NIGHT:%Y%m%d}"
    before = dict(catalog._PublisherSource.totals(night).items()) if night in catalog._PublisherSource.runs else None
    catalog.refresh()
    read0 = catalog.PUBLISHER_READ.value((night,))
    latency0 = catalog.PUBLISHER_LATENCY.count((night,))
    malformed0 = catalog.PUBLISHER_REJECTED.value((night, "malformed"))
    delivered0 = {p: catalog.PUBLISHER_DELIVERED.value((night, p)) for p in ("1", "2", "3")}
    now_ms = time.time_ns() // 1_000_000
    good = [SourcePacket(p.name, p.packet, now_ms) for p in simulated_packets(30, night=NIGHT, seed=3)]
    stream = [*good[:10], SourcePacket("garbage.avro", os.urandom(3000), None), *good[10:]]
    del before

    result = publish(stream, bootstrap_servers=kafka_bootstrap, naming=naming, night=NIGHT)

    catalog.refresh()
    assert catalog.PUBLISHER_READ.value((night,)) - read0 == result.read == 31
    assert catalog.PUBLISHER_REJECTED.value((night, "malformed")) - malformed0 == 1
    delivered = {p: catalog.PUBLISHER_DELIVERED.value((night, p)) - delivered0[p] for p in delivered0}
    assert {int(p): n for p, n in delivered.items() if n} == result.delivered
    assert catalog.PUBLISHER_LATENCY.count((night,)) - latency0 == 30  # each delivered packet's produce latency
    assert catalog.PUBLISHER_QUEUE.value((night,)) == 0


def _make_topic(bootstrap: str, topic: str, partitions: int = 2) -> None:
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def _commit(reader, offsets: list[TopicPartition]) -> None:
    """Commit as a reader would; a fresh broker's coordinator answers NOT_COORDINATOR while it loads."""
    deadline = time.monotonic() + 60
    while True:
        try:
            reader.commit(offsets=offsets, asynchronous=False)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_lag_in_messages_and_in_seconds_of_an_outside_readers_group(kafka_bootstrap, unique):
    topic, group = f"lag_{unique}", f"reader_{unique}"
    _make_topic(kafka_bootstrap, topic)
    out = producer(kafka_bootstrap)
    old_ms = int(time.time() * 1000) - 600_000  # ten minutes ago: the records' own timestamps
    for i in range(20):
        out.produce(topic, b"x%d" % i, partition=i % 2, timestamp=old_ms + i * 1000)
    out.flush(30)
    reader = consumer(kafka_bootstrap, group)
    # the reader consumed 4 records of partition 0 (offsets 0..3) and none of partition 1
    _commit(reader, [TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 0)])

    monitor = lag.LagMonitor(kafka_bootstrap, groups=f"reader_{unique}")
    try:
        found = {(x.topic, x.partition): x for x in monitor.measure()}
        assert set(found) == {(topic, 0), (topic, 1)}
        p0, p1 = found[(topic, 0)], found[(topic, 1)]
        assert (p0.committed, p0.end, p0.messages) == (4, 10, 6)
        assert (p1.committed, p1.end, p1.messages) == (0, 10, 10)
        # partition 0's oldest unconsumed record is its 5th (sent 8 s after the first), partition 1's its first
        assert p0.oldest_ms == old_ms + 8000 and p1.oldest_ms == old_ms + 1000
        now = time.time()
        assert p0.seconds(now) == pytest.approx(now - (old_ms + 8000) / 1000, abs=0.01)
        lag.export(list(found.values()), now)
        assert lag.LAG_MESSAGES.value((group, topic, "1")) == 10
        assert 590 < lag.LAG_SECONDS.value((group, topic, "0")) < 700

        _commit(reader, [TopicPartition(topic, 0, 10), TopicPartition(topic, 1, 10)])
        caught_up = {(x.topic, x.partition): x for x in monitor.measure()}
        assert [x.messages for x in caught_up.values()] == [0, 0]
        assert [x.seconds() for x in caught_up.values()] == [0.0, 0.0]
    finally:
        monitor.close()
        reader.close()


def test_heartbeat_age_is_read_back_from_the_cluster(kafka_bootstrap, unique):
    topic = f"hb_{unique}"
    assert heartbeat.heartbeat_age(kafka_bootstrap, topic) is None  # no topic yet
    sender = heartbeat.Heartbeat(kafka_bootstrap, topic)
    sender.beat()
    time.sleep(1.0)
    age = heartbeat.heartbeat_age(kafka_bootstrap, topic)
    assert age is not None and 0.9 <= age < 10


def test_dawn_ends_each_sites_night_on_the_right_morning():
    palomar = nights.dawn_of(dt.date(2024, 1, 2), SITES["palomar"])  # UTC-labelled: evening of Jan 1 local
    assert palomar.isoformat() == "2024-01-02T07:00:00-08:00"
    chile = nights.dawn_of(dt.date(2024, 1, 1), SITES["cerro-pachon"])  # dayobs: evening of Jan 1
    assert chile.isoformat() == "2024-01-02T07:00:00-03:00"


def test_night_open_and_closed_are_exported_from_the_nights_topic(kafka_bootstrap, unique):
    from alertdist.nights.state import NightState, mark_night

    naming = TopicNaming(survey=f"n{unique}")
    ensure_night_topics(admin_client(kafka_bootstrap), naming, NIGHT, TopicSettings(partitions=1))
    today = dt.date.today()
    mark_night(kafka_bootstrap, naming, NightState(f"{today:%Y%m%d}", "open"))
    mark_night(kafka_bootstrap, naming, NightState(f"{today - dt.timedelta(days=1):%Y%m%d}", "closed"))
    states = nights.export_nights(kafka_bootstrap, naming, SITES["palomar"])
    assert Counter(states.values()) == Counter({"open": 1, "closed": 1})
    assert nights.NIGHT_OPEN.value((f"{today:%Y%m%d}",)) == 1.0
    assert nights.NIGHT_OPEN.value((f"{today - dt.timedelta(days=1):%Y%m%d}",)) == 0.0
    assert nights.NIGHT_OPEN.value((f"{NIGHT:%Y%m%d}",)) is None  # an old night is not exported


_SHORT_RUN = """
import sys, time
from pathlib import Path
from alertdist.metrics.exposition import expose
from alertdist.metrics.catalog import PUBLISHER_READ
e = expose("publisher", Path(sys.argv[1]), linger_s=20)
print(e.url, flush=True)
sys.stdin.readline()  # scraped once by the test, then told to finish
PUBLISHER_READ.inc(("20231012",), 42)  # the run's last figure, counted just before it ends
print("ending", flush=True)
"""


def test_a_short_run_waits_at_exit_for_the_scrape_of_its_final_counts(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _SHORT_RUN, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        url = proc.stdout.readline().strip()
        assert ("alertdist_publisher_packets_read_total", (("night", "20231012"),)) not in _scrape(url)
        proc.stdin.write("done\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ending"
        time.sleep(2.0)  # well into its exit
        assert proc.poll() is None  # finished its work, waiting for Prometheus's next look
        assert _scrape(url)[("alertdist_publisher_packets_read_total", (("night", "20231012"),))] == 42
        assert proc.wait(10) == 0
        assert not list(tmp_path.glob("*.json"))  # and withdrew its announcement
    finally:
        proc.kill()


def test_a_run_nobody_scraped_exits_at_once(tmp_path):
    script = _SHORT_RUN.replace("sys.stdin.readline()", "pass")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 15  # not the 20 s linger: no Prometheus was looking
    assert not list(tmp_path.glob("*.json"))


_TAKEN_PORT = """
import socket, sys
from alertdist.jobs.metrics import serve_metrics
from alertdist.settings import Settings
held = socket.socket()
held.bind(("127.0.0.1", 0))
held.listen()
settings = Settings.load(home=sys.argv[1], metrics_port=held.getsockname()[1])
print(serve_metrics(settings, "publisher"))
"""


def test_a_taken_metrics_port_leaves_the_stage_running_and_says_what_to_set(tmp_path):
    done = subprocess.run([sys.executable, "-c", _TAKEN_PORT, str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    assert "ALERTDIST_METRICS_PORT=0" in done.stderr


_SWITCHED = """
import sys
from alertdist.jobs.metrics import serve_metrics
from alertdist.metrics import catalog
from alertdist.settings import Settings
exposition = serve_metrics(Settings.load(home=sys.argv[1]), "filter")
print(exposition is not None and exposition.target_file.exists())  # served, and announced for Prometheus
catalog.filter_transaction_committed("20240101", "bright", {"passed": 3, "rejected": 0}, 0.0)
catalog.archive_started("20240101")
catalog.archive_finished("20240101", ok=True)
print(catalog.FILTER_ALERTS.value(("20240101", "bright", "passed")), len(catalog.ARCHIVE_RUNS.values))
"""


@pytest.mark.parametrize(("switch", "expected"), [("0", ["False", "0 0"]), ("1", ["True", "3 2"])])
def test_metrics_off_for_a_benchmark_count_nothing_and_serve_nothing(tmp_path, switch, expected):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTDIST_")}
    done = subprocess.run(
        [sys.executable, "-c", _SWITCHED, str(tmp_path)],
        env={**env, "ALERTDIST_METRICS": switch},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == expected


def test_a_bound_series_counts_into_its_family():
    c = registry.Counter("alertdist_test_bound_total", "test", ["filter"])
    h = registry.Histogram("alertdist_test_bound_seconds", "test", ["filter"])
    c.child(("f",)).inc(2)
    c.inc(("f",))
    bound = h.child(("f",))
    for value in (0.01, 0.011, 61.0):
        bound.observe(value)
    assert c.value(("f",)) == 3
    samples = {(s.name, s.labels.get("le")): s.value for s in h.collect().samples}
    assert samples[("alertdist_test_bound_seconds_bucket", "0.01")] == 1  # le is inclusive
    assert samples[("alertdist_test_bound_seconds_bucket", "0.025")] == 2
    assert samples[("alertdist_test_bound_seconds_bucket", "+Inf")] == 3
    assert samples[("alertdist_test_bound_seconds_sum", None)] == pytest.approx(61.021)


def test_the_mirrors_lag_from_where_it_has_got_to_upstream(kafka_bootstrap, unique):
    from alertdist.metrics.mirror_lag import MIRROR_LAG_MESSAGES, MIRROR_LAG_SECONDS, export_mirror_lag

    topic = f"mirrored_{unique}"
    _make_topic(kafka_bootstrap, topic)
    out = producer(kafka_bootstrap)
    old_ms = int(time.time() * 1000) - 600_000
    for i in range(10):
        out.produce(topic, b"x%d" % i, partition=0, timestamp=old_ms + i * 1000)
    for i in range(5):
        out.produce(topic, b"y%d" % i, partition=1)
    out.flush(30)
    monitor = lag.LagMonitor(kafka_bootstrap, groups="none")
    try:
        # mirrored up to offset 4 of partition 0 (its record 4, stamped 4 s after the first, is the oldest left);
        # partition 1 wholly mirrored
        export_mirror_lag(monitor, {(topic, 0): 4, (topic, 1): 5})
        assert MIRROR_LAG_MESSAGES.value((topic,)) == 6
        assert 590 < MIRROR_LAG_SECONDS.value((topic,)) < 600
        export_mirror_lag(monitor, {(topic, 0): 10, (topic, 1): 5})  # caught up
        assert (MIRROR_LAG_MESSAGES.value((topic,)), MIRROR_LAG_SECONDS.value((topic,))) == (0, 0.0)
    finally:
        monitor.close()
