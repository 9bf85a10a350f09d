"""Whether a night is open or closed, and where its stream ends, kept in the compacted ``<survey>_nights`` topic.

The publisher writes ``open`` at dusk and, after its last packet is acknowledged, ``closed`` with the end
offset of every partition. Filters and the archiver stop when they have read up to those offsets: a night
ends when the system *knows* it ended, never after a guessed quiet period.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import asdict, dataclass, field

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from alertdist.kafka.clients import consumer, producer
from alertdist.nights.topics import TopicNaming

__all__ = ["NightState", "NightStateError", "end_offsets", "mark_night", "read_night_state", "wait_until_closed"]

OPEN = "open"
CLOSED = "closed"


class NightStateError(RuntimeError):
    """The nights topic could not be written or read."""


@dataclass(frozen=True)
class NightState:
    """One night's state. ``end_offsets[topic][partition]`` is the offset *after* the night's last message."""

    night: str  # YYYYMMDD
    state: str  # "open" | "closed"
    end_offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    updated_at: str = ""

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    def to_json(self) -> bytes:
        body = asdict(self)
        body["end_offsets"] = {t: {str(p): o for p, o in parts.items()} for t, parts in self.end_offsets.items()}
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "NightState":
        body = json.loads(raw)
        body["end_offsets"] = {t: {int(p): o for p, o in parts.items()} for t, parts in body["end_offsets"].items()}
        return cls(**body)

    def total_messages(self, topics=None) -> int:
        return sum(sum(parts.values()) for t, parts in self.end_offsets.items() if topics is None or t in topics)


def end_offsets(bootstrap_servers: str, topics: list[str], *, timeout: float = 30.0) -> dict[str, dict[int, int]]:
    """The high watermark (next offset to be written) of every partition of ``topics``."""
    c = consumer(bootstrap_servers)
    try:
        metadata = c.list_topics(timeout=timeout)
        result: dict[str, dict[int, int]] = {}
        for topic in topics:
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise NightStateError(f"topic {topic} does not exist; create the night's topics first")
            result[topic] = {}
            for partition in sorted(metadata.topics[topic].partitions):
                result[topic][partition] = _watermarks(c, TopicPartition(topic, partition), timeout)[1]
        return result
    finally:
        c.close()


_PASSING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError._TIMED_OUT, KafkaError._TRANSPORT}


def _passing(error: KafkaError) -> bool:
    return error.retriable() or error.code() in _PASSING


def _watermarks(c, partition: TopicPartition, timeout: float) -> tuple[int, int]:
    """The partition's low and high watermarks, riding out a leader still being elected (a new topic)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return c.get_watermark_offsets(partition, timeout=timeout)
        except KafkaException as e:
            if not _passing(e.args[0]) or time.monotonic() > deadline:
                raise NightStateError(f"reading the offsets of {partition.topic}[{partition.partition}] "
                                      f"failed: {e.args[0].str()}") from e
            time.sleep(0.2)


def mark_night(bootstrap_servers: str, naming: TopicNaming, state: NightState, *, timeout: float = 30.0) -> None:
    """Write a night's state to the nights topic and wait until Kafka has acknowledged it."""
    stamped = NightState(state.night, state.state, state.end_offsets, state.counts,
                         state.updated_at or dt.datetime.now(dt.timezone.utc).isoformat())
    errors: list[KafkaError] = []
    p = producer(bootstrap_servers, **{"linger.ms": 0})
    p.produce(naming.nights_topic, key=state.night.encode(), value=stamped.to_json(),
              on_delivery=lambda err, msg: err and errors.append(err))
    left = p.flush(timeout)
    if left or errors:
        raise NightStateError(
            f"marking night {state.night} {state.state} in {naming.nights_topic} failed: "
            f"{errors[0].str() if errors else f'{left} message(s) unacknowledged after {timeout:.0f} s'}"
        )


def read_night_state(
    bootstrap_servers: str, naming: TopicNaming, night: str | dt.date, *, timeout: float = 30.0
) -> NightState | None:
    """The latest state written for ``night``, or None if the night was never opened."""
    key = (night if isinstance(night, str) else f"{night:%Y%m%d}").encode()
    topic = naming.nights_topic
    # the end of a partition is its high watermark, known before reading: stop at the message just before it,
    # rather than wait for an end-of-partition event (which costs a fetch that idles fetch.wait.max.ms, 0.5 s,
    # at the broker); a short wait still covers a last offset that is a transaction marker
    c = consumer(bootstrap_servers, **{"fetch.wait.max.ms": 20})
    try:
        metadata = c.list_topics(topic, timeout=timeout)
        if metadata.topics[topic].error is not None:
            return None
        latest = None
        partitions = sorted(metadata.topics[topic].partitions)
        remaining, last_offsets = set(), {}
        assignment = []
        for partition in partitions:
            low, high = _watermarks(c, TopicPartition(topic, partition), timeout)
            if high > low:
                assignment.append(TopicPartition(topic, partition, low))
                remaining.add(partition)
                last_offsets[partition] = high - 1
        if not assignment:
            return None
        c.assign(assignment)
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    remaining.discard(msg.partition())
                    continue
                raise NightStateError(f"reading {topic}: {msg.error().str()}")
            if msg.key() == key and msg.value() is not None:
                latest = NightState.from_json(msg.value())
            if msg.offset() >= last_offsets[msg.partition()]:
                remaining.discard(msg.partition())
        if remaining:
            raise NightStateError(f"reading {topic} did not reach its end within {timeout:.0f} s")
        return latest
    finally:
        c.close()


def wait_until_closed(
    bootstrap_servers: str,
    naming: TopicNaming,
    night: str | dt.date,
    *,
    stop: threading.Event | None = None,
    poll_interval: float = 2.0,
    timeout: float | None = None,
) -> NightState | None:
    """Block until the night is closed (its state is returned), ``stop`` is set or ``timeout`` passes (None)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = read_night_state(bootstrap_servers, naming, night)
        if state is not None and state.closed:
            return state
        if (stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() >= deadline):
            return None
        time.sleep(poll_interval)
