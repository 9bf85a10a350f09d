"""Reading topics to their end in tests: what a consumer downstream would see, every message, nothing assumed."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import OffsetSpec

from alertdist.kafka.clients import admin_client, consumer
from alertdist.kafka.reading import read_to_end as read_partitions

__all__ = ["committed_offsets", "read_as", "read_to_end", "wait_until_settled"]


def wait_until_settled(admin, partitions: list[TopicPartition], timeout: float = 30.0) -> None:
    """Until no transaction is open on these partitions: a committed transaction's markers are written
    asynchronously, so right after a commit a read_committed reader may still stop short of it."""
    asked = {tp: OffsetSpec.latest() for tp in partitions}
    deadline = time.monotonic() + timeout
    while True:
        stable, high = (
            {
                (tp.topic, tp.partition): f.result().offset
                for tp, f in admin.list_offsets(asked, isolation_level=level).items()
            }
            for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED)
        )
        if stable == high:
            return
        assert time.monotonic() < deadline, f"a transaction stays open: {stable} != {high}"
        time.sleep(0.1)


def read_to_end(
    bootstrap: str, topics: list[str], *, committed_only: bool = True, settle: bool = False, timeout: float = 90.0
) -> list:
    """Every message of ``topics`` from offset 0 to the end of each partition (read_committed unless
    ``committed_only`` is False); ``settle``: first wait until no transaction is open on them."""
    isolation = "read_committed" if committed_only else "read_uncommitted"
    c = consumer(bootstrap, **{"isolation.level": isolation})
    try:
        metadata = c.list_topics(timeout=30).topics
        partitions = [TopicPartition(t, p, 0) for t in topics for p in metadata[t].partitions]
        if settle:
            wait_until_settled(admin_client(bootstrap), partitions)
        return list(read_partitions(c, partitions, timeout=timeout))
    finally:
        c.close()


def committed_offsets(bootstrap: str, group: str, topics: list[str], partitions: int) -> int:
    """How many messages of ``topics`` the consumer group has committed, summed over partitions 0..partitions-1.

    read_uncommitted: never waits for a transaction a killed copy left open (its restart aborts it)."""
    c = consumer(bootstrap, group, **{"isolation.level": "read_uncommitted"})
    try:
        offsets = c.committed([TopicPartition(t, p) for t in topics for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        c.close()


def read_as(bootstrap: str, topic: str, group: str | None, *, timeout: float = 20.0) -> tuple[list[bytes], set[str]]:
    """Subscribe to ``topic`` in ``group`` (None: assign its partitions, no group) as whoever ``bootstrap`` logs in
    as (a `Brokers`); return (values received, names of the errors) once every assigned partition reached its end,
    or at the first error (a refusal). Without a group, librdkafka still looks up the coordinator of its default
    group id, which a user with no group rights sees refused as well."""
    errors: list[KafkaError] = []
    c = consumer(bootstrap, group, error_cb=errors.append)
    values: list[bytes] = []
    try:
        if group is None:
            partitions = c.list_topics(topic, timeout=timeout).topics[topic].partitions
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        else:
            c.subscribe([topic])
        deadline = time.monotonic() + timeout
        eof = set()
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if errors and group is not None:  # without a group the refusal to read comes as a message error
                break
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                    assignment = {tp.partition for tp in c.assignment()}
                    if assignment and eof >= assignment:
                        break
                    continue
                errors.append(msg.error())
                break
            values.append(msg.value())
    finally:
        c.close()
    return values, {e.name() for e in errors}
