"""The project's Prometheus on free ports for the metrics tests (Debian's binary; CI installs it)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from alertdist.infra import kafka_local, prometheus_local
from alertdist.kafka.clients import admin_client, consumer, producer
from tests.conftest import REPO


@pytest.fixture
def prometheus(tmp_path):
    """A fresh Prometheus scraping and evaluating every second, its home in ``tmp_path/home/prometheus``."""
    try:
        prometheus_local.binary()
    except prometheus_local.PrometheusInfraError as e:
        pytest.fail(f"{e} (CI installs it: .ci/run)")
    server = prometheus_local.PrometheusServer(
        home=tmp_path / "home" / "prometheus",
        port=kafka_local.free_port(),
        scrape_interval_s=1,
        evaluation_interval_s=1,
    )
    prometheus_local.start(server, log=lambda *_: None)
    try:
        yield server
    finally:
        prometheus_local.stop(server, log=lambda *_: None)


def lagging_group(bootstrap: str, survey: str, produced: int, committed: int) -> tuple[str, str]:
    """A one-partition programme topic of 2024-01-01 holding ``produced`` records and a filter-like group that
    committed ``committed`` of them: a known lag for the monitor to find. Returns (topic, group)."""
    topic, group = f"{survey}_20240101_programid1", f"{survey}_filter_bright_20240101"
    admin = admin_client(bootstrap)  # kept until the topic exists: a dropped client cancels its requests
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    out = producer(bootstrap)
    for i in range(produced):
        out.produce(topic, b"alert%d" % i)
    out.flush(30)
    reader = consumer(bootstrap, group)
    deadline = time.monotonic() + 60
    while True:  # a fresh broker's coordinator may still be loading
        try:
            reader.commit(offsets=[TopicPartition(topic, 0, committed)], asynchronous=False)
            break
        except KafkaException:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    reader.close()
    return topic, group


def lag_monitor(env: dict, groups: str, **output) -> subprocess.Popen:
    """``alertdist lag serve`` every second for the consumer groups matching ``groups``, in its own process."""
    command = [sys.executable, "-m", "alertdist.cli.main", "lag", "serve", "--interval", "1", "--groups", groups]
    return subprocess.Popen(command, env=env, cwd=REPO, **output)
