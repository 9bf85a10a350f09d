"""The confluent producer pattern, once: back-pressure on a full queue, a delivery count, a checked flush.

A message is only as safe as Kafka's acknowledgement of it. So every delivery report is counted (delivered or
failed), a fatal producer error is kept for the caller's loop to see, and `finish` says whether anything is
still in flight or was refused, and whether a later run may succeed (no refusal a retry would meet again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message

from alertdist.kafka.clients import producer
from alertdist.kafka.errors import KafkaOperationError, is_transient

__all__ = ["CountingProducer"]

_log = logging.getLogger("alertdist.kafka")
_FULL_QUEUE_WAIT_S = 0.05
_FAILURES_KEPT = 20


class CountingProducer:
    """A project producer (`clients.producer`) that counts every delivery report.

    ``on_delivery(context, err, msg)``, if given, is called after the count for each message, with the
    ``context`` it was produced with (e.g. to settle a drop-folder file once Kafka has it).
    ``describe(context, msg)`` names a failed message in `failures` (default: its topic). Other keywords are
    librdkafka settings. The confluent producer itself is `producer`, for what this class does not wrap
    (transactions).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        on_delivery: Callable[[object, KafkaError | None, Message], None] | None = None,
        describe: Callable[[object, Message], str] | None = None,
        **overrides,
    ) -> None:
        self.delivered = 0
        self.bytes_delivered = 0
        self.failed = 0
        self.refused = 0  # failures a retry would meet again (e.g. a message too large)
        self.failures: list[str] = []  # the first few, "what: reason"
        self.fatal: KafkaError | None = None
        self._on_delivery = on_delivery
        self._describe = describe
        self._uncontexted = partial(self._report, None)
        self.producer = producer(bootstrap_servers, error_cb=self._on_error, **overrides)

    def __len__(self) -> int:
        """Messages produced and not yet acknowledged or failed."""
        return len(self.producer)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list | None = None,
        context: object = None,
        **kwargs,
    ) -> None:
        """Queue one message (waiting while the local queue is full) and serve delivery reports that are due."""
        report = self._uncontexted if context is None else partial(self._report, context)
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=report, **kwargs)
                break
            except BufferError:  # the local queue is full: let librdkafka drain it, then try this message again
                self.producer.poll(_FULL_QUEUE_WAIT_S)
        self.producer.poll(0)

    def poll(self, timeout: float) -> None:
        """Serve delivery reports, waiting up to ``timeout`` for one (an idle source's pause)."""
        self.producer.poll(timeout)

    def finish(self, timeout: float, unit: str = "message") -> None:
        """Wait up to ``timeout`` for every acknowledgement; raise `KafkaOperationError` if any is missing or a
        refusal, transient unless Kafka refused something a retry would meet again."""
        left = self.producer.flush(timeout)
        if left or self.failed:
            raise KafkaOperationError(
                f"{self.failed} {unit}(s) refused by Kafka and {left} unacknowledged after {timeout:.0f} s; "
                f"first failures: {self.failures[:3]}",
                transient=self.refused == 0,
            )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err
        else:
            _log.info("kafka: %s", err.str())

    def _report(self, context: object, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            self.bytes_delivered += len(msg)
        else:
            self.failed += 1
            if not is_transient(KafkaException(err)):
                self.refused += 1
            self._keep(msg.topic() if self._describe is None else self._describe(context, msg), err)
        if self._on_delivery is not None:
            self._on_delivery(context, err, msg)

    def _keep(self, what: str, err: KafkaError) -> None:
        if len(self.failures) < _FAILURES_KEPT:
            self.failures.append(f"{what}: {err.str()}")
        _log.error("Kafka did not take %s: %s", what, err.str())
