"""A heartbeat through the clusters, so a dead path is seen between nights too.

`Heartbeat.beat` writes a small record (``{"sent_ms": ...}``, key the sender) to ``<survey>_heartbeat`` on the
producing cluster every few seconds; in the two-tier mode MirrorMaker 2 copies it to the public cluster like
the night's topics. `heartbeat_age` reads the newest record on a cluster: its age is the heartbeat's lag there
(``alertdist_heartbeat_age_seconds{cluster=...}``), small on the producing cluster, plus the mirror's delay on
the public one.
"""

from __future__ import annotations

import json
import socket
import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from alertdist.kafka.clients import admin_client, consumer
from alertdist.kafka.producer import CountingProducer
from alertdist.metrics.registry import Counter, Gauge
from alertdist.nights.topics import replication_for

__all__ = ["HEARTBEAT_AGE", "Heartbeat", "heartbeat_age", "heartbeat_topic"]

HEARTBEAT_AGE = Gauge(
    "alertdist_heartbeat_age_seconds", "Age of the newest heartbeat record read back from a cluster.", ["cluster"]
)
HEARTBEATS_SENT = Counter("alertdist_heartbeats_sent_total", "Heartbeat records Kafka acknowledged.")


def heartbeat_topic(survey: str) -> str:
    return f"{survey}_heartbeat"


class Heartbeat:
    """Writes heartbeats to one cluster; the topic (one partition, 1 day retention, replicated as the cluster
    allows: up to 3) is created when missing."""

    def __init__(self, bootstrap_servers: str, topic: str):
        self.bootstrap_servers, self.topic = bootstrap_servers, topic
        self.sender = socket.gethostname()[:64]
        admin = admin_client(bootstrap_servers)
        if topic not in admin.list_topics(timeout=30).topics:
            config = {"retention.ms": str(24 * 3600 * 1000)}
            futures = admin.create_topics([NewTopic(topic, 1, replication_for(admin, None), config=config)])
            try:
                futures[topic].result(30)
            except Exception as e:  # created meanwhile by another sender
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise
        self.out = CountingProducer(bootstrap_servers, **{"linger.ms": 0})

    def beat(self, timeout: float = 10.0) -> None:
        body = json.dumps({"sent_ms": time.time_ns() // 1_000_000, "sender": self.sender}).encode()
        self.out.produce(self.topic, body, self.sender.encode())
        self.out.finish(timeout, unit="heartbeat")
        HEARTBEATS_SENT.inc()


def heartbeat_age(bootstrap_servers: str, topic: str, *, timeout: float = 10.0) -> float | None:
    """Seconds since the newest heartbeat on this cluster was sent; None if it has none (or no such topic)."""
    c = consumer(bootstrap_servers, **{"fetch.wait.max.ms": 20})
    try:
        metadata = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return None
        newest = None
        for partition in metadata.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            if high <= low:
                continue
            c.assign([TopicPartition(topic, partition, high - 1)])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = c.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
                try:
                    sent = json.loads(msg.value())["sent_ms"] / 1000.0
                except (ValueError, KeyError, TypeError):  # not ours: the record's own time
                    sent = msg.timestamp()[1] / 1000.0
                newest = sent if newest is None else max(newest, sent)
                break
        return None if newest is None else max(time.time() - newest, 0.0)
    finally:
        c.close()
