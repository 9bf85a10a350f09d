"""Reading partitions to where they end now: the end is the high watermark, known before reading starts.

Both helpers ride out the moments after a topic is created or a leader moves, when no broker answers for a
partition yet; anything else that fails is a `KafkaOperationError` naming the partition.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from alertdist.kafka.clients import consumer
from alertdist.kafka.errors import KafkaOperationError, is_transient, retry_until

__all__ = ["latest_by_key", "read_to_end", "watermarks"]


def watermarks(c: Consumer, topic: str, partition: int, *, timeout: float = 30.0) -> tuple[int, int]:
    """The partition's (low, high) watermarks: its earliest offset and the next one to be written."""
    where = TopicPartition(topic, partition)
    try:
        return retry_until(
            f"reading the offsets of {topic}[{partition}]",
            c.get_watermark_offsets,
            where,
            timeout_s=timeout,
            timeout=timeout,
        )
    except KafkaException as e:
        raise KafkaOperationError(f"reading the offsets of {topic}[{partition}] failed: {e.args[0].str()}") from e


def read_to_end(
    c: Consumer,
    partitions: list[TopicPartition],
    *,
    timeout: float = 30.0,
    last: dict[tuple[str, int], int] | None = None,
) -> Iterator[Message]:
    """Every message of ``partitions`` (assigned to ``c`` from their offsets), until each has reported its end.

    ``last`` (``(topic, partition) -> offset``) ends a partition at that offset's message instead, without the
    end-of-partition event's wait at the broker; the event still ends one whose last offset is a transaction
    marker. The consumer must have ``enable.partition.eof`` (the project's does).
    """
    remaining = {(tp.topic, tp.partition) for tp in partitions}
    if not remaining:
        return
    c.assign(partitions)
    deadline = time.monotonic() + timeout
    while remaining:
        if time.monotonic() > deadline:
            raise KafkaOperationError(
                f"reading {', '.join(sorted({t for t, _ in remaining}))} did not reach its end within {timeout:.0f} s",
                transient=True,
            )
        msg = c.poll(0.5)
        if msg is None:
            continue
        where = (msg.topic(), msg.partition())
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                error = KafkaException(msg.error())
                raise KafkaOperationError(f"reading {msg.topic()}: {msg.error().str()}", transient=is_transient(error))
            remaining.discard(where)
            continue
        if last and where in last and msg.offset() >= last[where]:
            remaining.discard(where)
        yield msg


def latest_by_key(bootstrap_servers: str, topic: str, *, timeout: float = 30.0) -> dict[bytes, bytes | None]:
    """Each key's last value in ``topic`` (None: a tombstone), as the topic reads once compacted: the state that
    MirrorMaker and Connect keep in their internal topics. Empty when the topic does not exist (yet)."""
    c = consumer(bootstrap_servers)
    try:
        metadata = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        partitions = [TopicPartition(topic, p, 0) for p in metadata.partitions]
        return {m.key(): m.value() for m in read_to_end(c, partitions, timeout=timeout) if m.key() is not None}
    finally:
        c.close()
