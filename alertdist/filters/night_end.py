"""A live filter copy's view of its night: the topics it waits for, when the night is over for it, and the lag.

The rule for the end: the night is closed (its closing record names the end offset of every partition) and the
*group's committed offsets* have reached those end offsets on every partition of the input topics. The whole
group, not this copy's partitions: after a rebalance a copy may own partitions another copy had, so "my
partitions are done" is not knowable, while the committed offsets are.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from confluent_kafka import KafkaException, TopicPartition

from alertdist.kafka.clients import admin_client
from alertdist.kafka.errors import KafkaOperationError
from alertdist.kafka.reading import watermarks
from alertdist.nights.state import read_night_state
from alertdist.nights.topics import TopicNaming, create_topics, replication_for

if TYPE_CHECKING:
    from alertdist.filters.live import LiveOptions
    from alertdist.filters.transaction import KafkaCall

__all__ = ["NightEnd"]


class NightEnd:
    """Asks, at most every ``options.state_poll_s``, whether the night is closed; then, at most every
    ``options.done_check_s``, how far the group is from its closing offsets."""

    def __init__(
        self,
        bootstrap: str,
        naming: TopicNaming,
        night: dt.date,
        topics: list[str],
        options: LiveOptions,
        kafka: KafkaCall,
    ):
        self.bootstrap = bootstrap
        self.naming = naming
        self.night = night
        self.topics = topics
        self.options = options
        self.kafka = kafka
        self.closing: dict[tuple[str, int], int] | None = None
        self.next_state_check = 0.0
        self.next_done_check = 0.0
        self.lag: int | None = None  # the group's lag at the last look; None if it could not be asked

    def wait_for_topics(
        self, outputs: dict[str, str], errors_topic: str, stop: threading.Event, waiting: Callable[[list[str]], None]
    ) -> bool:
        """Wait until the night's input topics exist (calling ``waiting`` with the missing ones), then create the
        outputs, partition for partition, and the errors topic. False if `stop` was set first."""
        admin = admin_client(self.bootstrap)
        timeout = self.options.kafka_timeout_s
        while True:
            metadata = self.kafka("listing topics", lambda: admin.list_topics(timeout=timeout))
            missing = [t for t in self.topics if t not in metadata.topics or metadata.topics[t].error is not None]
            if not missing:
                break
            waiting(missing)
            if stop.wait(self.options.state_poll_s):
                return False
        settings = self.options.output_settings
        replication = replication_for(admin, settings.replication_factor)
        configs = settings.configs(replication)
        specs = {outputs[t]: (len(metadata.topics[t].partitions), replication, configs) for t in self.topics}
        specs[errors_topic] = (1, replication, configs)
        create_topics(admin, specs)
        return True

    def done(self, consumer) -> bool:
        """True once the night is closed and the group has committed up to every closing offset."""
        now = time.monotonic()
        if self.closing is None:
            if now < self.next_state_check:
                return False
            self.next_state_check = now + self.options.state_poll_s
            state = read_night_state(self.bootstrap, self.naming, self.night, timeout=self.options.kafka_timeout_s)
            if state is None or not state.ended:  # closed, or aborted: nothing more will come
                return False
            missing = [t for t in self.topics if t not in state.end_offsets]
            closing = {
                (t, p): end for t in self.topics if t in state.end_offsets for p, end in state.end_offsets[t].items()
            }
            closing.update(self._high_watermarks(consumer, missing))  # closed without a record: nothing will come
            self.closing = closing
        if now < self.next_done_check:
            return False
        self.next_done_check = now + self.options.done_check_s
        self.lag = self._group_lag(consumer, self.closing)
        return self.lag == 0

    def measure_lag(self, consumer) -> int | None:
        """Best effort at a stop on request: the group's lag against the closing (or current) end offsets."""
        try:
            ends = self.closing or self._high_watermarks(consumer, self.topics)
            self.lag = self._group_lag(consumer, ends)
        except (KafkaException, KafkaOperationError):
            self.lag = None
        return self.lag

    def _group_lag(self, consumer, ends: dict[tuple[str, int], int]) -> int:
        asked = [TopicPartition(t, p) for t, p in ends]
        committed = self.kafka(
            "reading the group's committed offsets", consumer.committed, asked, self.options.kafka_timeout_s
        )
        done = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
        return sum(max(0, end - done.get(where, 0)) for where, end in ends.items())

    def _high_watermarks(self, consumer, topics: list[str]) -> dict[tuple[str, int], int]:
        if not topics:
            return {}
        timeout = self.options.kafka_timeout_s
        metadata = consumer.list_topics(timeout=timeout)
        found = {}
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                found[(topic, partition)] = watermarks(consumer, topic, partition, timeout=timeout)[1]
        return found
