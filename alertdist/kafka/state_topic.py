"""A compacted topic of keyed JSON records: the cluster's own memory of small facts (nights, users).

Kafka keeps the last record per key; a reader takes the whole topic up to its end and keeps the last value of
each key. Writes wait for Kafka's acknowledgement, so a fact written is a fact the next reader sees.
"""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from alertdist.kafka.clients import consumer
from alertdist.kafka.errors import KafkaOperationError, is_transient
from alertdist.kafka.producer import CountingProducer
from alertdist.kafka.reading import read_to_end, watermarks

__all__ = ["KeyedStateTopic"]


class KeyedStateTopic:
    """The keyed records of one compacted ``topic``; values are JSON, None deletes a key."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic

    def put(self, key: str, value: Any, *, timeout: float = 30.0) -> None:
        """Write ``key``'s value (None: delete it) and wait for Kafka's acknowledgement.

        Raises `KafkaOperationError`, transient unless Kafka refused the record.
        """
        out = CountingProducer(self.bootstrap_servers, **{"linger.ms": 0})
        data = None if value is None else json.dumps(value, sort_keys=True).encode()
        out.produce(self.topic, data, key.encode())
        out.finish(timeout, unit="record")

    def latest(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """The last value of every key still set; {} if the topic does not exist.

        Raises `KafkaOperationError` if the topic cannot be read to its end within ``timeout`` or is refused.
        """
        # the end of each partition is its high watermark, known before reading: stop at the record before it
        # instead of waiting for the end-of-partition event, whose fetch idles fetch.wait.max.ms at the broker
        c = consumer(self.bootstrap_servers, **{"fetch.wait.max.ms": 20})
        try:
            metadata = c.list_topics(self.topic, timeout=timeout).topics[self.topic]
            if metadata.error is not None:
                if metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    return {}  # never written: nothing is set; any other error (a refusal) is not "empty"
                raise KafkaOperationError(
                    f"reading {self.topic} failed: {metadata.error.str()}; check the login's rights on it",
                    transient=is_transient(KafkaException(metadata.error)),
                )
            assignment, last = [], {}
            for partition in sorted(metadata.partitions):
                low, high = watermarks(c, self.topic, partition, timeout=timeout)
                if high > low:
                    assignment.append(TopicPartition(self.topic, partition, low))
                    last[(self.topic, partition)] = high - 1
            values: dict[str, Any] = {}
            for msg in read_to_end(c, assignment, timeout=timeout, last=last):
                key = msg.key().decode()
                if msg.value() is None:
                    values.pop(key, None)
                else:
                    values[key] = json.loads(msg.value())
            return values
        finally:
            c.close()
