"""A real Prometheus (the project's launcher, Debian's binary) on free ports scraping the lag monitor process it
discovers through the targets folder: series with data through the HTTP API, and a filter-lag alert that fires
after its ``for:`` and resolves once the group has caught up."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from alertdist.infra import prometheus_local
from alertdist.kafka.clients import admin_client, consumer, producer
from tests.metrics_support import lag_monitor, prometheus  # noqa: F401 - the fixture


def _wait_for(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"{what} within {timeout:.0f} s")


def commit(reader, topic: str, offset: int) -> None:
    """Commit like a reader that consumed up to ``offset``; a fresh broker's group coordinator answers
    NOT_COORDINATOR while its offsets topic loads."""
    deadline = time.monotonic() + 60
    while True:
        try:
            reader.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _alerts(server, name: str, **labels) -> list[dict]:
    return [
        a
        for a in prometheus_local.alerts(server.url)
        if a["labels"]["alertname"] == name and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def test_prometheus_scrapes_the_monitor_and_a_stopped_filters_lag_alert_fires_then_resolves(
    prometheus,  # noqa: F811
    kafka_bootstrap,
    unique,
    tmp_path,
):
    survey = f"p{unique}"
    topic, group = f"{survey}_20240101_programid1", f"filter_bright.{survey}_20240101"  # TopicNaming.filter_group
    admin = admin_client(kafka_bootstrap)  # held until the answer is in: a collected client drops its requests
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    out = producer(kafka_bootstrap)
    stale_ms = int(time.time() * 1000) - 900_000  # alerts published 15 minutes ago that the filter never read
    for i in range(5):
        out.produce(topic, b"alert%d" % i, timestamp=stale_ms + i)
    out.flush(30)
    reader = consumer(kafka_bootstrap, group)
    commit(reader, topic, 1)  # the copy stopped after one alert

    env = {
        **os.environ,
        "ALERTDIST_HOME": str(tmp_path / "home"),
        "ALERTDIST_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ALERTDIST_SURVEY": survey,
    }
    monitor = lag_monitor(env, f".*{survey}_.*", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert monitor.stdout.readline().startswith("metrics at http://127.0.0.1:")
        assert list(prometheus.targets_dir.glob("monitor-*.json"))
        started = time.monotonic()

        def series(query: str):
            return prometheus_local.query(prometheus.url, query)

        lagging = _wait_for(
            "Prometheus has the group's lag",
            lambda: series(f'alertdist_consumer_lag_messages{{group="{group}"}}'),
            timeout=60,
        )
        assert lagging[0]["metric"]["job"] == "monitor" and lagging[0]["value"][1] == "4"
        seconds = float(series(f'alertdist_consumer_lag_seconds{{group="{group}"}}')[0]["value"][1])
        assert 890 < seconds < 1000  # the age of the oldest unconsumed alert, not of the newest
        _wait_for("a heartbeat age", lambda: series('alertdist_heartbeat_age_seconds{cluster="producing"}'), 30)

        pending = _wait_for("the alert pending", lambda: _alerts(prometheus, "AlertdistFilterLagging", group=group), 30)
        assert pending[0]["state"] == "pending"
        firing = _wait_for(
            "the alert firing",
            lambda: [a for a in _alerts(prometheus, "AlertdistFilterLagging", group=group) if a["state"] == "firing"],
            timeout=120,
        )
        assert time.monotonic() - started >= 55  # not before its for: 1m
        assert firing[0]["labels"]["severity"] == "warning"

        commit(reader, topic, 5)  # the copy is back and caught up
        _wait_for("the alert resolved", lambda: not _alerts(prometheus, "AlertdistFilterLagging", group=group), 60)
        assert series(f'alertdist_consumer_lag_messages{{group="{group}"}}')[0]["value"][1] == "0"
    finally:
        monitor.send_signal(signal.SIGTERM)
        try:
            monitor.wait(30)
        except subprocess.TimeoutExpired:
            monitor.kill()
        reader.close()
