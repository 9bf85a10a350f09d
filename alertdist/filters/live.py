"""Run one filter on a night's stream, exactly once: read, judge, write the passing alerts, commit it all together.

Each running copy is a member of the consumer group named after the filter and the night, so N copies share
the partitions. A copy reads a batch, produces each passing alert (original bytes, input key and headers plus
``alertdist.filter`` and ``alertdist.annotations``) to the output topic of its source, in the same partition
number, and each failing one to the filter's errors topic; then it commits the input offsets and those outputs
in one Kafka transaction (KIP-447: `send_offsets_to_transaction` with the group's metadata). A copy killed at
any moment leaves an open transaction that its restart aborts (same ``transactional.id``) and resumes from the
committed offsets: no output skipped, none duplicated for a ``read_committed`` reader.

When it stops: once the night is closed (its closing record names the end offset of every partition) and the
*group's committed offsets* have reached those end offsets on every partition of the input topics. Every copy
waits for the whole group, not only its own partitions: after a rebalance a copy may own partitions that
another copy had, so "my partitions are done" is not knowable, while the committed offsets are. A copy with no
partitions (more copies than partitions) simply waits for the others and stops with them.

Rebalances (eager ``roundrobin`` assignment): when partitions are revoked, the open transaction is committed
first (the group generation is still valid then), so the next owner starts exactly after it. Copies use static
membership (``group.instance.id`` = the transactional id), so a restarted copy takes its partitions back
without waiting for the killed one's session to time out.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from alertdist.filters import ERROR, MALFORMED, PASSED, REJECTED, AlertFilter
from alertdist.filters.columnar import PacketBatches
from alertdist.filters.confined import ConfinedFilter
from alertdist.kafka.clients import admin_client, consumer
from alertdist.kafka.errors import KafkaOperationError, is_transient, retry_call
from alertdist.kafka.producer import CountingProducer
from alertdist.kafka.reading import watermarks
from alertdist.metrics.catalog import filter_batch_consumed, filter_transaction_committed
from alertdist.nights.dates import format_night
from alertdist.nights.state import read_night_state
from alertdist.nights.topics import TopicNaming, TopicSettings, create_topics, replication_for

__all__ = [
    "FilterFailingError",
    "LiveOptions",
    "LiveReport",
    "LiveRunError",
    "group_id_for",
    "run_live",
    "transactional_id_for",
]

HEADER_FILTER = "alertdist.filter"
HEADER_ANNOTATIONS = "alertdist.annotations"
HEADER_ERROR = "alertdist.error"
HEADER_SOURCE_TOPIC = "alertdist.source_topic"
HEADER_SOURCE_PARTITION = "alertdist.source_partition"
HEADER_SOURCE_OFFSET = "alertdist.source_offset"
_REPORT_FIELD = {PASSED: "passed", REJECTED: "rejected", ERROR: "errors", MALFORMED: "malformed"}


class FilterFailingError(RuntimeError):
    """The filter raised on too many consecutive alerts: it is broken, not the alerts. Not worth a retry."""


class LiveRunError(KafkaOperationError):
    """Kafka failed under the runner. ``transient`` says whether running the copy again may succeed."""

    def __init__(self, message: str, transient: bool = True):
        super().__init__(message, transient=transient)


@dataclass(frozen=True)
class LiveOptions:
    """How a copy batches and polls; the defaults suit ZTF nights (~1,000 alerts per exposure)."""

    batch_size: int = 500  # messages per transaction at most
    commit_interval_s: float = 0.2  # and at most this long between commits while alerts flow (the output's
    # latency to a read_committed reader: ~0.3 s at 40,000 alerts/min, where 500 alerts take 0.75 s to arrive)
    poll_s: float = 0.05  # how long one read waits for alerts
    error_threshold: int = 100  # consecutive filter errors (no pass, no reject in between) that stop the copy
    batch_deadline_s: float = 10.0  # a confined plug-in's time to judge one batch; the rest of it is then ERROR
    failed_batches: int = 3  # batches in a row past their deadline (or whose plug-in process died) that stop it
    setup_timeout_s: float = 120.0  # a confined plug-in's time to import and set up (a model, a catalogue)
    state_poll_s: float = 2.0  # how often an idle copy asks whether the night is closed
    done_check_s: float = 0.5  # how often an idle copy of a closed night compares committed and end offsets
    session_timeout_ms: int = 10_000  # a copy that vanished loses its partitions after this
    kafka_timeout_s: float = 30.0
    output_settings: TopicSettings = TopicSettings()
    consumer_overrides: dict = field(default_factory=dict)


@dataclass
class LiveReport:
    """What a copy did. Counts cover committed work only, so read == passed + rejected + errors + malformed.

    ``lag`` is how many input messages of the night the *group* had not committed when the copy stopped
    (against the closing offsets, or the current end while the night is open); None if it could not be asked.
    """

    filter_name: str
    night: str
    copy_index: int
    group_id: str
    topics: list[str]
    read: int = 0
    passed: int = 0
    rejected: int = 0
    errors: int = 0
    malformed: int = 0
    lag: int | None = None
    transactions: int = 0
    partitions: set[tuple[str, int]] = field(default_factory=set)  # every partition this copy ever owned
    by_topic: dict[str, dict[str, int]] = field(default_factory=dict)  # source topic -> committed counts
    status: str = "starting"
    elapsed_s: float = 0.0
    first_alert_s: float | None = None  # since the start: when the first alert arrived
    last_commit_s: float | None = None  # since the start: when the last transaction holding alerts committed

    @property
    def processing_rate(self) -> float:
        """Alerts/s while alerts flowed: start-up, group join and end-of-night detection left out."""
        if self.first_alert_s is None or self.last_commit_s is None or self.last_commit_s <= self.first_alert_s:
            return 0.0
        return self.read / (self.last_commit_s - self.first_alert_s)

    @property
    def rate(self) -> float:
        return self.read / self.elapsed_s if self.elapsed_s > 0 else 0.0


def group_id_for(naming: TopicNaming, night: dt.date, filter_name: str) -> str:
    """The consumer group of a filter for a night (`TopicNaming.filter_group`)."""
    return naming.filter_group(night, filter_name)


def transactional_id_for(group_id: str, copy_index: int) -> str:
    """Unique per running copy, stable across its restarts: the restart fences and aborts the killed one."""
    return f"{group_id}-{copy_index}"


def run_live(
    filter_: str | AlertFilter | ConfinedFilter,
    night: dt.date,
    *,
    bootstrap_servers: str,
    naming: TopicNaming,
    programmes: list[int] | None = None,
    copy_index: int = 0,
    stop: threading.Event | None = None,
    progress: Callable[[LiveReport], None] | None = None,
    options: LiveOptions = LiveOptions(),
    group_id: str | None = None,
    columnar: bool = False,
) -> LiveReport:
    """Run one copy of a filter on a night until the night is closed and fully consumed, or `stop` is set.

    Parameters
    ----------
    filter_ : str or AlertFilter
        A name for `load_filter` (bundled, or ``module:function``): its code runs confined, in a child process
        with no login, no network and no access to the home (`alertdist.filters.confined`), each batch within
        ``options.batch_deadline_s``; or one started so (`ConfinedFilter`, closed at the end). Or a filter
        already loaded in this process (trusted, run inline).
    night : str or date
        The night (``YYYYMMDD``); its programme topics are waited for if they do not exist yet.
    programmes : list of int, optional
        The programmes this filter may see (default: all of `naming`).
    copy_index : int
        Which copy this is (0..N-1); picks the stable transactional id.
    progress : callable, optional
        Called about once a second with a snapshot of the report.
    columnar : bool
        For a bundled filter given by name, take its columnar version (a columnar ``module:function`` is run so
        anyway): each batch read (up to ``options.batch_size`` alerts) is decoded to one Arrow table and judged in
        one call; outputs, the errors topic, commits and the stop are unchanged.

    Raises
    ------
    FilterFailingError
        The filter raised on `options.error_threshold` consecutive alerts, or missed its deadline (or its process
        died) on `options.failed_batches` batches in a row; that batch was rolled back.
    LiveRunError
        Kafka failed; ``.transient`` tells whether a retry may help. Committed work is never lost.
    """
    if isinstance(filter_, str):
        alert_filter = ConfinedFilter(
            filter_,
            columnar=columnar,
            copy_index=copy_index,
            deadline_s=options.batch_deadline_s,
            setup_s=options.setup_timeout_s,
        )
    else:
        alert_filter = filter_
    run = _LiveRun(
        alert_filter,
        night,
        bootstrap_servers,
        naming,
        programmes,
        copy_index,
        stop or threading.Event(),
        progress,
        options,
        group_id,
    )
    return run.run()


class _LiveRun:
    """One copy's state; the public surface is `run_live`."""

    def __init__(
        self, alert_filter, night, bootstrap, naming, programmes, copy_index, stop, progress, options, group_id
    ):
        self.filter: AlertFilter | ConfinedFilter = alert_filter
        inline = isinstance(alert_filter, AlertFilter)
        self.batches = PacketBatches(alert_filter) if inline and alert_filter.columnar else None
        self.confined = None if inline else alert_filter
        self.failed_batches = 0  # in a row: past the deadline, or the plug-in's process died
        self.night = night
        self.bootstrap = bootstrap
        self.naming = naming
        self.stop = stop
        self.progress = progress
        self.options = options
        self.group_id = group_id or group_id_for(naming, night, alert_filter.name)
        self.transactional_id = transactional_id_for(self.group_id, copy_index)
        self.topics = sorted(naming.programme_topics(night, programmes).values())
        self.outputs = {t: naming.filter_output_topic(t, alert_filter.name) for t in self.topics}
        self.errors_topic = naming.filter_errors_topic(night, alert_filter.name)
        self.report = LiveReport(alert_filter.name, format_night(night), copy_index, self.group_id, self.topics)
        self.started = time.monotonic()
        # the open transaction: offsets to commit, counts to add once committed
        self.txn_open = False
        self.txn_started = 0.0
        self.pending: dict[tuple[str, int], int] = {}
        self.txn_counts = dict.fromkeys((PASSED, REJECTED, ERROR, MALFORMED), 0)
        self.txn_by_topic: dict[tuple[str, str], int] = {}  # (source topic, outcome) -> alerts
        self.txn_messages = 0
        self.positions: dict[tuple[str, int], int] = {}  # next offset to read, where known
        self.consecutive_errors = 0
        self.last_error = ""
        self.failed_before = 0  # the producer's failed deliveries when the open transaction began
        self.closing: dict[tuple[str, int], int] | None = None
        self.next_state_check = 0.0
        self.next_done_check = 0.0
        self.next_progress = 0.0
        self.consumer = None
        self.settled = False  # the group gave this copy its partitions after its last revoke (or its join)
        self.out: CountingProducer | None = None
        self.producer = None  # the transactional producer under `out`

    # ------------------------------------------------------------------------------------------ the loop

    def run(self) -> LiveReport:
        if not self._wait_for_topics():
            return self._finish("stopped before the night's topics existed")
        opts = self.options
        self.consumer = consumer(
            self.bootstrap,
            self.group_id,
            **{
                "group.instance.id": self.transactional_id,
                "session.timeout.ms": opts.session_timeout_ms,
                "partition.assignment.strategy": "roundrobin",
                **opts.consumer_overrides,
            },
        )
        try:
            self.out = CountingProducer(
                self.bootstrap,
                **{
                    "transactional.id": self.transactional_id,
                    "linger.ms": 5,
                    "transaction.timeout.ms": 60_000,
                    # A transaction's first write to a partition waits while the previous commit's markers are
                    # still being written (CONCURRENT_TRANSACTIONS) and is retried: after 100 ms doubling to 1 s
                    # by default, which put whole seconds on the outputs' tail latency; 10 ms up to 100 ms here.
                    "retry.backoff.ms": 10,
                    "retry.backoff.max.ms": 100,
                },
            )
            self.producer = self.out.producer
            self._kafka("initialising transactions", self.producer.init_transactions, opts.kafka_timeout_s)
            self.consumer.subscribe(
                self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            self.report.status = "running"
            while not self.stop.is_set():
                messages = self._kafka("consuming", self.consumer.consume, opts.batch_size, opts.poll_s)
                flowing = self._process(messages)
                if self.txn_open and (
                    not flowing
                    or self.txn_messages >= opts.batch_size
                    or time.monotonic() - self.txn_started >= opts.commit_interval_s
                ):
                    self._commit()
                if not flowing and not self.txn_open and self._night_done():
                    return self._finish("finished")
                self._tick()
            if self.txn_open:
                self._commit()  # every message in it was fully handled: keep the work
            self._measure_lag()
            return self._finish("stopped")
        except BaseException:
            self._abort_quietly()
            raise
        finally:
            self.report.elapsed_s = time.monotonic() - self.started
            self._close_consumer()
            if self.batches is not None:
                self.batches.close()
            if self.confined is not None:
                self.confined.close()

    def _process(self, messages) -> bool:
        """Judge and route a batch; True if it held any alert (False: idle, only end-of-partition events)."""
        filter_batch_consumed(self.filter.name, messages)
        values = [msg.value() for msg in messages if msg.error() is None]
        judged = len(values)  # the verdicts the plug-in gave; after them, ERROR for its missed deadline
        if self.confined is not None and values:
            given, judged = self.confined.judge(values)
            verdicts = iter(given)
            self._count_failed_batch(judged < len(values))
        elif self.batches is not None:
            verdicts = iter(self.batches.judge(values))
        else:
            verdicts = map(self.filter.judge, values)
        index = 0
        produce = self.out.produce
        counts = self.txn_counts
        pending = self.pending
        positions = self.positions
        name = self.filter.name.encode()
        flowing = False
        for msg in messages:
            if msg.error() is not None:
                self._event(msg)
                continue
            if not self.txn_open:
                self._begin()
            if not flowing and self.report.first_alert_s is None:
                self.report.first_alert_s = time.monotonic() - self.started
            flowing = True
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            value = msg.value()
            verdict = next(verdicts)
            outcome = verdict.outcome
            index += 1
            counts[outcome] += 1
            self.txn_by_topic[topic, outcome] = self.txn_by_topic.get((topic, outcome), 0) + 1
            self.txn_messages += 1
            if outcome == PASSED:
                headers = list(msg.headers() or ())
                headers.append((HEADER_FILTER, name))
                headers.append((HEADER_ANNOTATIONS, verdict.annotations))
                produce(self.outputs[topic], value, msg.key(), headers, partition=partition)
                self.consecutive_errors = 0
            elif outcome == REJECTED:
                self.consecutive_errors = 0
            else:
                produce(
                    self.errors_topic,
                    value,
                    msg.key(),
                    [
                        (HEADER_FILTER, name),
                        (HEADER_ERROR, verdict.reason.encode()),
                        (HEADER_SOURCE_TOPIC, topic.encode()),
                        (HEADER_SOURCE_PARTITION, str(partition).encode()),
                        (HEADER_SOURCE_OFFSET, str(offset).encode()),
                    ],
                )
                if outcome == ERROR and index <= judged:  # a missed deadline counts once, as a failed batch
                    self.consecutive_errors += 1
                    self.last_error = verdict.reason
                    if self.consecutive_errors >= self.options.error_threshold:
                        raise FilterFailingError(
                            f"filter {self.filter.name!r} raised on {self.consecutive_errors} consecutive alerts "
                            f"(last, at {topic}[{partition}]@{offset}: {self.last_error}); stopped it and rolled "
                            f"back its open batch. Fix the filter and run it again: it resumes from the last "
                            f"committed offsets; the alerts it failed on so far are in {self.errors_topic}"
                        )
            pending[(topic, partition)] = positions[(topic, partition)] = offset + 1
        return flowing

    def _count_failed_batch(self, failed: bool) -> None:
        """A plug-in that misses its deadline (or whose process dies) batch after batch is broken: stop the copy."""
        self.failed_batches = self.failed_batches + 1 if failed else 0
        if self.failed_batches >= self.options.failed_batches:
            raise FilterFailingError(
                f"filter {self.filter.name!r} failed {self.failed_batches} batches in a row ({self.confined.last_failure})"
                f"; stopped it and rolled back its open batch. Fix the filter (or raise its deadline, now "
                f"{self.options.batch_deadline_s:g} s a batch) and run it again: it resumes from the last committed "
                f"offsets; the alerts it failed on so far are in {self.errors_topic}"
            )

    def _event(self, msg) -> None:
        error = msg.error()
        if error.code() == KafkaError._PARTITION_EOF:
            # Past the last alert there may be transaction markers: commit the end offset itself, or the group
            # would never be seen to reach the closing offsets of a transactionally written topic.
            where, end = (msg.topic(), msg.partition()), msg.offset()
            known = self.positions.get(where)
            if end >= 0 and (known is None or end > known):
                if not self.txn_open:
                    self._begin()
                self.pending[where] = self.positions[where] = end
            return
        if error.fatal() or not error.retriable():
            raise LiveRunError(
                f"consuming {msg.topic()}[{msg.partition()}] for filter {self.filter.name!r} failed: {error.str()}",
                transient=is_transient(KafkaException(error)),
            )

    # -------------------------------------------------------------------------------------- transactions

    def _begin(self) -> None:
        self._kafka("beginning a transaction", self.producer.begin_transaction)
        self.txn_open = True
        self.txn_started = time.monotonic()

    def _commit(self, rewind: bool = True) -> bool:
        """Commit outputs and input offsets together; on an abortable error roll back and re-read. True if kept."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.pending.items()]
        timeout = self.options.kafka_timeout_s
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
                    f"committing a transaction of filter {self.filter.name!r} "
                    f"({self.transactional_id}) failed: {error.str()}",
                    transient=is_transient(e),
                ) from e
            self._abort(rewind)
            return False
        failed = self.out.failed - self.failed_before
        if failed:  # cannot happen after a successful commit; refuse to count it as done
            raise LiveRunError(f"transaction committed but {failed} output(s) failed: {self.out.failures[-1]}")
        if self.txn_messages:
            self.report.last_commit_s = time.monotonic() - self.started
        for outcome, n in self.txn_counts.items():
            counter = _REPORT_FIELD[outcome]
            setattr(self.report, counter, getattr(self.report, counter) + n)
            self.report.read += n
        for (topic, outcome), n in self.txn_by_topic.items():
            per_topic = self.report.by_topic.setdefault(topic, {})
            per_topic[_REPORT_FIELD[outcome]] = per_topic.get(_REPORT_FIELD[outcome], 0) + n
        self.report.transactions += 1
        filter_transaction_committed(self.report.night, self.filter.name, self.txn_counts, self.txn_started)
        self._reset_transaction()
        return True

    def _abort(self, rewind: bool) -> None:
        self._settle()
        self._kafka("aborting a transaction", self.producer.abort_transaction, self.options.kafka_timeout_s)
        self._reset_transaction()
        self.positions.clear()
        if rewind:
            self._rewind()

    def _reset_transaction(self) -> None:
        self.txn_open = False
        self.pending.clear()
        self.failed_before = self.out.failed
        self.txn_messages = 0
        for outcome in self.txn_counts:
            self.txn_counts[outcome] = 0
        self.txn_by_topic.clear()

    def _rewind(self) -> None:
        """After a rollback, read again from the committed offsets, or the rolled-back alerts would be skipped."""
        assigned = self.consumer.assignment()
        if not assigned:
            return
        for tp in self._kafka(
            "reading committed offsets", self.consumer.committed, assigned, self.options.kafka_timeout_s
        ):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._kafka(
                "seeking back after a rollback", self.consumer.seek, TopicPartition(tp.topic, tp.partition, offset)
            )

    def _settle(self) -> None:
        """Let in-flight outputs land before an abort: librdkafka can send the abort while the output partitions
        are still being added to the transaction, which the broker answers with a fatal INVALID_TXN_STATE."""
        self._kafka("flushing before an abort", self.producer.flush, self.options.kafka_timeout_s)

    def _close_consumer(self) -> None:
        """Close in a settled group generation: closing mid-rebalance (a copy that finds its night done while
        it is still joining, or that a rebalance caught at its end) leaves a rebalance event that close() serves
        after the group's thread ended, and its assign waits for good with the GIL held, freezing the process
        (librdkafka#4041; one run in eight of a rerun copy hung in a stress test). So the rebalance is served
        to its end first, in polls whose alerts are not processed; nothing is open by then, nothing is lost.
        Not unsubscribing first: a static member closing sends no LeaveGroup, so the copies still running are
        not sent into a rebalance of their own at the end of every night."""
        deadline = time.monotonic() + self.options.session_timeout_ms / 1000 + 5.0
        try:
            while not self.settled and time.monotonic() < deadline:
                self.consumer.consume(self.options.batch_size, 0.1)
        except KafkaException:
            pass  # the group is gone (the broker is): close() has no rebalance left to serve
        self.consumer.close()

    def _abort_quietly(self) -> None:
        if self.txn_open and self.producer is not None:
            try:
                self._settle()
                self.producer.abort_transaction(self.options.kafka_timeout_s)
            except (KafkaException, LiveRunError):
                pass  # a restart with the same transactional id aborts it anyway
            self._reset_transaction()

    # ---------------------------------------------------------------------------------------- rebalances

    def _on_assign(self, _consumer, partitions) -> None:
        self.report.partitions.update((tp.topic, tp.partition) for tp in partitions)
        self.settled = True

    def _on_revoke(self, _consumer, partitions) -> None:
        self.settled = False
        if self.txn_open:
            self._commit(rewind=False)  # still the owner here: hand over exactly where the work stopped
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)

    def _on_lost(self, _consumer, partitions) -> None:
        self.settled = False
        if self.txn_open:  # no longer the owner: the next one redoes this batch
            self._abort(rewind=False)
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)

    # ---------------------------------------------------------------------------------------- the night

    def _wait_for_topics(self) -> bool:
        admin = admin_client(self.bootstrap)
        while True:
            metadata = self._kafka("listing topics", lambda: admin.list_topics(timeout=self.options.kafka_timeout_s))
            missing = [t for t in self.topics if t not in metadata.topics or metadata.topics[t].error is not None]
            if not missing:
                break
            self.report.status = f"waiting for {', '.join(missing)}"
            self._tick(force=True)
            if self.stop.wait(self.options.state_poll_s):
                return False
        settings = self.options.output_settings
        replication = replication_for(admin, settings.replication_factor)
        configs = settings.configs(replication)
        specs = {self.outputs[t]: (len(metadata.topics[t].partitions), replication, configs) for t in self.topics}
        specs[self.errors_topic] = (1, replication, configs)
        create_topics(admin, specs)
        return True

    def _night_done(self) -> bool:
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
            closing.update(self._high_watermarks(missing))  # closed without a record of them: nothing will come
            self.closing = closing
        if now < self.next_done_check:
            return False
        self.next_done_check = now + self.options.done_check_s
        self.report.lag = self._group_lag(self.closing)
        return self.report.lag == 0

    def _group_lag(self, ends: dict[tuple[str, int], int]) -> int:
        asked = [TopicPartition(t, p) for t, p in ends]
        committed = self._kafka(
            "reading the group's committed offsets", self.consumer.committed, asked, self.options.kafka_timeout_s
        )
        done = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}
        return sum(max(0, end - done.get(where, 0)) for where, end in ends.items())

    def _high_watermarks(self, topics: list[str]) -> dict[tuple[str, int], int]:
        if not topics:
            return {}
        metadata = self.consumer.list_topics(timeout=self.options.kafka_timeout_s)
        found = {}
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                found[(topic, partition)] = watermarks(
                    self.consumer, topic, partition, timeout=self.options.kafka_timeout_s
                )[1]
        return found

    def _measure_lag(self) -> None:
        """Best effort at a stop on request: the group's lag against the closing (or current) end offsets."""
        try:
            ends = self.closing or self._high_watermarks(self.topics)
            self.report.lag = self._group_lag(ends)
        except (KafkaException, KafkaOperationError):
            self.report.lag = None

    # ---------------------------------------------------------------------------------------- plumbing

    def _kafka(self, doing: str, call, *args):
        try:
            return call(*args)
        except KafkaException as e:
            error = e.args[0]
            raise LiveRunError(
                f"{doing} for filter {self.filter.name!r} ({self.transactional_id}) on {self.bootstrap} failed: "
                f"{error.str()}",
                transient=is_transient(e),
            ) from e

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (force or now >= self.next_progress):
            self.next_progress = now + 1.0
            self.report.elapsed_s = now - self.started
            self.progress(replace(self.report, partitions=set(self.report.partitions)))

    def _finish(self, status: str) -> LiveReport:
        self.report.status = status
        self.report.elapsed_s = time.monotonic() - self.started
        if self.progress is not None:
            self.progress(replace(self.report, partitions=set(self.report.partitions)))
        return self.report
