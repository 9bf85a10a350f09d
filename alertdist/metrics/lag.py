"""Lag of any consumer group, ours or an outside reader's, from the AdminClient: in messages and in seconds.

Lag in messages is the last stable offset (what a ``read_committed`` reader can reach) less the group's committed
offset, per topic and partition. Lag in seconds is the age of the oldest record the group has not consumed: the
record at its committed offset, read once (its timestamp is cached by offset), so a group that stopped shows a
lag growing with the clock even when nothing new arrives. No Burrow, no Go exporter: confluent-kafka only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, KafkaError, TopicPartition
from confluent_kafka.admin import OffsetSpec

from alertdist.kafka.clients import UNASSIGNED_GROUP, admin_client, consumer
from alertdist.metrics.registry import Counter, Gauge

__all__ = ["LAG_MESSAGES", "LAG_SECONDS", "LagMonitor", "PartitionLag", "export"]

LAG_MESSAGES = Gauge(
    "alertdist_consumer_lag_messages",
    "Records a consumer group has not committed yet (last stable offset less committed offset).",
    ["group", "topic", "partition"],
)
LAG_SECONDS = Gauge(
    "alertdist_consumer_lag_seconds",
    "Age of the oldest record a consumer group has not consumed (0 when it is caught up).",
    ["group", "topic", "partition"],
)
MEASURE_ERRORS = Counter(
    "alertdist_lag_measure_errors_total", "Lag measurements that failed (the cluster did not answer)."
)
LAST_MEASURE = Gauge("alertdist_lag_last_measure_timestamp_seconds", "When the lag was last measured.")


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int  # the last stable offset
    oldest_ms: int | None  # timestamp of the oldest unconsumed record; None when caught up or unknown

    @property
    def messages(self) -> int:
        return max(self.end - self.committed, 0)

    def seconds(self, now: float | None = None) -> float:
        if self.messages == 0 or self.oldest_ms is None:
            return 0.0
        return max((now if now is not None else time.time()) - self.oldest_ms / 1000.0, 0.0)


class LagMonitor:
    """Measures the groups whose id matches ``groups`` (a regular expression; default every group).

    Holds one AdminClient and one group-less consumer (for the timestamps); `close` releases them."""

    def __init__(self, bootstrap_servers: str, *, groups: str = ".*", timeout: float = 10.0):
        self.pattern = re.compile(groups)
        self.timeout = timeout
        self.admin = admin_client(bootstrap_servers)
        self.reader = consumer(bootstrap_servers, **{"fetch.wait.max.ms": 50, "enable.partition.eof": True})
        self._stamps: dict[tuple[str, int, int], int | None] = {}

    def close(self) -> None:
        self.reader.close()

    def group_ids(self) -> list[str]:
        listed = self.admin.list_consumer_groups(request_timeout=self.timeout).result()
        return sorted(
            g.group_id for g in listed.valid if g.group_id != UNASSIGNED_GROUP and self.pattern.fullmatch(g.group_id)
        )

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        """The group's committed offsets (partitions it never committed are left out)."""
        request = [ConsumerGroupTopicPartitions(group)]
        futures = self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
        answer = futures[group].result()
        return {(tp.topic, tp.partition): tp.offset for tp in answer.topic_partitions or [] if tp.offset >= 0}

    def ends(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        if not partitions:
            return {}
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
        futures = self.admin.list_offsets(
            request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=self.timeout
        )
        ends = {}
        for tp, future in futures.items():
            try:
                ends[(tp.topic, tp.partition)] = future.result().offset
            except Exception:  # a deleted topic (last night's) still in a group's offsets: no lag to report
                continue
        return ends

    def oldest_timestamps(self, wanted: dict[tuple[str, int], int]) -> None:
        """Read the timestamp (ms) of the first record at or after each offset into the cache (kept per offset:
        it never changes). A partition with only transaction markers there, or not answering, stays unknown."""
        todo = {where: offset for where, offset in wanted.items() if (*where, offset) not in self._stamps}
        if not todo:
            return
        self.reader.assign([TopicPartition(t, p, o) for (t, p), o in todo.items()])
        try:
            deadline = time.monotonic() + self.timeout
            while todo and time.monotonic() < deadline:
                msg = self.reader.poll(0.2)
                if msg is None or (msg.topic(), msg.partition()) not in todo:
                    continue
                where = (msg.topic(), msg.partition())
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.pop(where)
                    continue
                self._stamps[(*where, todo.pop(where))] = msg.timestamp()[1]
        finally:
            self.reader.unassign()

    def measure(self) -> list[PartitionLag]:
        """One reading of every matching group's lag per topic and partition."""
        if len(self._stamps) > 100_000:  # offsets passed long ago
            self._stamps.clear()
        return self.lags({group: self.committed(group) for group in self.group_ids()})

    def lags(self, positions: dict[str, dict[tuple[str, int], int]]) -> list[PartitionLag]:
        """The lag of each reader's ``positions`` (name -> (topic, partition) -> the next offset it will read: a
        group's committed offsets, or where the mirror has got to upstream)."""
        ends = self.ends(sorted({where for offsets in positions.values() for where in offsets}))
        behind = {
            (t, p, offset)
            for offsets in positions.values()
            for (t, p), offset in offsets.items()
            if (t, p) in ends and ends[(t, p)] > offset
        }
        for _ in range(3):  # one offset per partition per read: groups at different offsets of one take rounds
            missing: dict[tuple[str, int], int] = {}
            for t, p, offset in sorted(behind):
                if (t, p, offset) not in self._stamps:
                    missing.setdefault((t, p), offset)
            if not missing:
                break
            self.oldest_timestamps(missing)
        return [
            PartitionLag(name, t, p, offset, ends[(t, p)], self._stamps.get((t, p, offset)))
            for name, offsets in positions.items()
            for (t, p), offset in offsets.items()
            if (t, p) in ends
        ]


def export(lags: list[PartitionLag], now: float | None = None) -> None:
    """Set the lag gauges to exactly this reading (groups and partitions gone disappear)."""
    now = time.time() if now is None else now
    LAG_MESSAGES.replace_all({(x.group, x.topic, str(x.partition)): x.messages for x in lags})
    LAG_SECONDS.replace_all({(x.group, x.topic, str(x.partition)): x.seconds(now) for x in lags})
    LAST_MEASURE.set((), now)
