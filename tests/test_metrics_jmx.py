"""The brokers' own metrics through the Prometheus JMX exporter agent, read back through Prometheus's HTTP API."""

from __future__ import annotations

import os
import time

import pytest

from alertdist.infra import jmx_exporter, kafka_local, prometheus_local
from alertdist.kafka.clients import producer
from alertdist.settings import Settings
from tests.metrics_support import prometheus  # noqa: F401 - the fixture


def _series(server, query: str, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = prometheus_local.query(server.url, query)
        if found:
            return found
        time.sleep(1.0)
    pytest.fail(f"Prometheus has no {query} within {timeout:.0f} s")


def test_a_brokers_jmx_metrics_reach_prometheus_through_the_agent(prometheus, tmp_path):  # noqa: F811
    libs = (Settings.load().kafka_home / "libs").absolute()
    kafka_local.install(libs, log=lambda *_: None)
    home = tmp_path / "kafka"
    home.mkdir()
    (home / "libs").symlink_to(libs, target_is_directory=True)
    port = kafka_local.free_ports(1)
    cluster = kafka_local.KafkaCluster(
        home=home, port=port, controller_port=port + 10000, heap="384m", jmx_port=kafka_local.free_port()
    )
    kafka_local.start(cluster, log=lambda *_: None)
    try:
        labels = {"job": "kafka", "cluster": "producing", "node": "1"}
        jmx_exporter.announce(prometheus.jmx_targets_dir, "producing-1", cluster.jmx_port, labels)
        from confluent_kafka.admin import NewTopic

        from alertdist.kafka.clients import admin_client

        admin = admin_client(cluster.bootstrap_servers)
        admin.create_topics([NewTopic("jmx_probe", 1, 1)])["jmx_probe"].result(30)
        out = producer(cluster.bootstrap_servers)
        for _ in range(50):
            out.produce("jmx_probe", os.urandom(1000))  # incompressible: the producer compresses (lz4)
        out.flush(30)

        under = _series(prometheus, 'kafka_server_replicamanager_underreplicatedpartitions{cluster="producing"}')
        assert under[0]["metric"]["node"] == "1" and under[0]["value"][1] == "0"
        assert _series(prometheus, "kafka_controller_kafkacontroller_offlinepartitionscount")[0]["value"][1] == "0"
        bytes_in = _series(prometheus, "kafka_server_brokertopicmetrics_bytesin_total > 50000")
        assert float(bytes_in[0]["value"][1]) >= 50_000
        assert _series(prometheus, 'kafka_network_requestmetrics_totaltimems{request="Produce",quantile="0.99"}')
    finally:
        kafka_local.stop(cluster, log=lambda *_: None)
