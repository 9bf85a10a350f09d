"""The Kafka transaction of one live filter copy: its outputs and its input offsets are committed together, or neither.

The lifecycle is confluent-kafka-python's ``examples/eos_transactions.py`` (begin, produce, send the input offsets
to the transaction, commit; on an abortable error abort and read again from the committed offsets), plus what a
group of copies needs: when partitions are revoked the open transaction is committed while this copy still owns
them, so the next owner starts exactly after it; when they are lost it is aborted and the next owner redoes it.
Counts reach the report only once their transaction committed, so a report never counts work that was rolled back.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from alertdist.filters import ERROR, MALFORMED, PASSED, REJECTED
from alertdist.kafka.errors import KafkaOperationError, is_transient, retry_call
from alertdist.metrics.catalog import filter_transaction_committed

if TYPE_CHECKING:
    from alertdist.filters.live import LiveReport
    from alertdist.kafka.producer import CountingProducer

__all__ = ["KafkaCall", "LiveRunError", "Transaction"]

_REPORT_FIELD = {PASSED: "passed", REJECTED: "rejected", ERROR: "errors", MALFORMED: "malformed"}


class LiveRunError(KafkaOperationError):
    """Kafka failed under the runner. ``transient`` says whether running the copy again may succeed."""

    def __init__(self, message: str, transient: bool = True):
        super().__init__(message, transient=transient)


class KafkaCall:
    """One copy's Kafka calls: a failure becomes a `LiveRunError` naming the filter, the copy and the brokers."""

    def __init__(self, filter_name: str, transactional_id: str, bootstrap: str):
        self.filter_name = filter_name
        self.transactional_id = transactional_id
        self.bootstrap = bootstrap

    def __call__(self, doing: str, call, *args):
        try:
            return call(*args)
        except KafkaException as e:
            error = e.args[0]
            raise LiveRunError(
                f"{doing} for filter {self.filter_name!r} ({self.transactional_id}) on {self.bootstrap} failed: "
                f"{error.str()}",
                transient=is_transient(e),
            ) from e


class Transaction:
    """The open transaction of a copy: input offsets to commit, the counts to add once committed, and where each
    owned partition is to be read next. Its rebalance callbacks go to the consumer's `subscribe`."""

    def __init__(self, consumer, report: LiveReport, kafka: KafkaCall, timeout_s: float, run_started: float):
        self.consumer = consumer
        self.report = report
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.run_started = run_started  # the copy's start, for the report's last_commit_s
        self.out: CountingProducer | None = None
        self.producer = None  # the transactional producer under `out`
        self.open = False
        self.started = 0.0
        self.pending: dict[tuple[str, int], int] = {}  # input offsets to commit with the outputs
        self.counts = dict.fromkeys((PASSED, REJECTED, ERROR, MALFORMED), 0)
        self.by_topic: dict[tuple[str, str], int] = {}  # (source topic, outcome) -> alerts
        self.messages = 0
        self.positions: dict[tuple[str, int], int] = {}  # next offset to read, where known
        self.failed_before = 0  # the producer's failed deliveries when the open transaction began
        self.settled = False  # the group gave this copy its partitions after its last revoke (or its join)

    def start(self, out: CountingProducer) -> None:
        """Take the transactional producer and fence any earlier copy with the same id (its open work aborts)."""
        self.out, self.producer = out, out.producer
        self.failed_before = out.failed
        self.kafka("initialising transactions", self.producer.init_transactions, self.timeout_s)

    def begin(self) -> None:
        self.kafka("beginning a transaction", self.producer.begin_transaction)
        self.open = True
        self.started = time.monotonic()

    def commit(self, rewind: bool = True) -> bool:
        """Commit outputs and input offsets together; on an abortable error roll back and re-read. True if kept."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.pending.items()]
        timeout = self.timeout_s
        try:
            if offsets:  # librdkafka asks to simply call again on a retriable transaction error
                retry_call(
                    "sending offsets to the transaction",
                    self.producer.send_offsets_to_transaction,
                    offsets,
                    self.consumer.consumer_group_metadata(),
                    timeout,
                    attempts=5,
                )
            retry_call("committing the transaction", self.producer.commit_transaction, timeout, attempts=5)
        except KafkaException as e:
            error = e.args[0]
            if not error.txn_requires_abort():
                raise LiveRunError(
                    f"committing a transaction of filter {self.kafka.filter_name!r} "
                    f"({self.kafka.transactional_id}) failed: {error.str()}",
                    transient=is_transient(e),
                ) from e
            self.abort(rewind)
            return False
        failed = self.out.failed - self.failed_before
        if failed:  # cannot happen after a successful commit; refuse to count it as done
            raise LiveRunError(f"transaction committed but {failed} output(s) failed: {self.out.failures[-1]}")
        self._count_committed()
        self._reset()
        return True

    def _count_committed(self) -> None:
        report = self.report
        if self.messages:
            report.last_commit_s = time.monotonic() - self.run_started
        for outcome, n in self.counts.items():
            counter = _REPORT_FIELD[outcome]
            setattr(report, counter, getattr(report, counter) + n)
            report.read += n
        for (topic, outcome), n in self.by_topic.items():
            per_topic = report.by_topic.setdefault(topic, {})
            per_topic[_REPORT_FIELD[outcome]] = per_topic.get(_REPORT_FIELD[outcome], 0) + n
        report.transactions += 1
        filter_transaction_committed(report.night, report.filter_name, self.counts, self.started)

    def abort(self, rewind: bool) -> None:
        self._settle()
        self.kafka("aborting a transaction", self.producer.abort_transaction, self.timeout_s)
        self._reset()
        self.positions.clear()
        if rewind:
            self._rewind()

    def abort_quietly(self) -> None:
        """On the way out after an error: a restart with the same transactional id aborts it anyway."""
        if self.open and self.producer is not None:
            try:
                self._settle()
                self.producer.abort_transaction(self.timeout_s)
            except (KafkaException, LiveRunError):
                pass
            self._reset()

    def _reset(self) -> None:
        """Empty in place: the loop holds these dicts while it judges a batch."""
        self.open = False
        self.pending.clear()
        self.failed_before = self.out.failed
        self.messages = 0
        for outcome in self.counts:
            self.counts[outcome] = 0
        self.by_topic.clear()

    def _rewind(self) -> None:
        """After a rollback, read again from the committed offsets, or the rolled-back alerts would be skipped."""
        assigned = self.consumer.assignment()
        if not assigned:
            return
        for tp in self.kafka("reading committed offsets", self.consumer.committed, assigned, self.timeout_s):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.kafka(
                "seeking back after a rollback", self.consumer.seek, TopicPartition(tp.topic, tp.partition, offset)
            )

    def _settle(self) -> None:
        """Let in-flight outputs land before an abort: librdkafka can send the abort while the output partitions
        are still being added to the transaction, which the broker answers with a fatal INVALID_TXN_STATE."""
        self.kafka("flushing before an abort", self.producer.flush, self.timeout_s)

    # ---------------------------------------------------------------------------------------- rebalances

    def on_assign(self, _consumer, partitions) -> None:
        self.report.partitions.update((tp.topic, tp.partition) for tp in partitions)
        self.settled = True

    def on_revoke(self, _consumer, partitions) -> None:
        self.settled = False
        if self.open:
            self.commit(rewind=False)  # still the owner here: hand over exactly where the work stopped
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)

    def on_lost(self, _consumer, partitions) -> None:
        self.settled = False
        if self.open:  # no longer the owner: the next one redoes this batch
            self.abort(rewind=False)
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)
