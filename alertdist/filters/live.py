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

Here is the loop (`_LiveRun.run`); the transaction and the rebalance callbacks are in
`alertdist.filters.transaction`, the night's topics, its end and the group's lag in `alertdist.filters.night_end`.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from confluent_kafka import KafkaError, KafkaException

from alertdist.filters import ERROR, PASSED, REJECTED, AlertFilter, Verdict
from alertdist.filters.columnar import PacketBatches
from alertdist.filters.confined import ConfinedFilter
from alertdist.filters.night_end import NightEnd
from alertdist.filters.transaction import KafkaCall, LiveRunError, Transaction
from alertdist.kafka.clients import consumer
from alertdist.kafka.errors import is_transient
from alertdist.kafka.producer import CountingProducer
from alertdist.metrics.catalog import filter_batch_consumed
from alertdist.nights.dates import format_night
from alertdist.nights.topics import TopicNaming, TopicSettings

__all__ = [
    "FilterFailingError",
    "LiveOptions",
    "LiveReport",
    "LiveRunError",
    "confined_filter",
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


class FilterFailingError(RuntimeError):
    """The filter raised on too many consecutive alerts: it is broken, not the alerts. Not worth a retry."""


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

    def counts(self) -> dict[str, int | None]:
        """The copy's committed counts and its group's lag, as a summary row shows them."""
        return {k: getattr(self, k) for k in ("read", "passed", "rejected", "errors", "malformed", "lag")}

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
        filter_ = confined_filter(filter_, options, columnar=columnar, copy_index=copy_index)
    run = _LiveRun(
        filter_,
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


def confined_filter(spec: str, options: LiveOptions, *, columnar: bool, copy_index: int) -> ConfinedFilter:
    """Start the plug-in ``spec`` confined, with the copy's deadlines (`alertdist.filters.confined`)."""
    return ConfinedFilter(
        spec,
        columnar=columnar,
        copy_index=copy_index,
        deadline_s=options.batch_deadline_s,
        setup_s=options.setup_timeout_s,
    )


class _LiveRun:
    """One copy: its filter, its topics, and the loop; the transaction and the night's end are collaborators."""

    def __init__(
        self, alert_filter, night, bootstrap, naming, programmes, copy_index, stop, progress, options, group_id
    ):
        self.filter: AlertFilter | ConfinedFilter = alert_filter
        inline = isinstance(alert_filter, AlertFilter)
        self.batches = PacketBatches(alert_filter) if inline and alert_filter.columnar else None
        self.confined = None if inline else alert_filter
        self.failed_batches = 0  # in a row: past the deadline, or the plug-in's process died
        self.bootstrap = bootstrap
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
        self.kafka = KafkaCall(alert_filter.name, self.transactional_id, bootstrap)
        self.night_end = NightEnd(bootstrap, naming, night, self.topics, options, self.kafka)
        self.consecutive_errors = 0
        self.last_error = ""
        self.next_progress = 0.0
        self.consumer = None
        self.txn: Transaction | None = None

    # ------------------------------------------------------------------------------------------ the loop

    def run(self) -> LiveReport:
        """Consume a batch, judge it, produce its outputs; commit them with the input offsets every
        ``batch_size`` alerts or ``commit_interval_s``; stop at the night's end or on request."""
        if not self.night_end.wait_for_topics(self.outputs, self.errors_topic, self.stop, self._waiting):
            return self._finish("stopped before the night's topics existed")
        opts = self.options
        self.consumer = self._consumer()
        self.txn = txn = Transaction(self.consumer, self.report, self.kafka, opts.kafka_timeout_s, self.started)
        try:
            txn.start(self._producer())
            self.consumer.subscribe(self.topics, on_assign=txn.on_assign, on_revoke=txn.on_revoke, on_lost=txn.on_lost)
            self.report.status = "running"
            while not self.stop.is_set():
                messages = self.kafka("consuming", self.consumer.consume, opts.batch_size, opts.poll_s)
                flowing = self._process(messages)
                if txn.open and (
                    not flowing
                    or txn.messages >= opts.batch_size
                    or time.monotonic() - txn.started >= opts.commit_interval_s
                ):
                    txn.commit()
                if not flowing and not txn.open and self._night_done():
                    return self._finish("finished")
                self._tick()
            if txn.open:
                txn.commit()  # every message in it was fully handled: keep the work
            self.report.lag = self.night_end.measure_lag(self.consumer)
            return self._finish("stopped")
        except BaseException:
            txn.abort_quietly()
            raise
        finally:
            self.report.elapsed_s = time.monotonic() - self.started
            self._close_consumer()
            if self.batches is not None:
                self.batches.close()
            if self.confined is not None:
                self.confined.close()

    def _consumer(self):
        """A static member of the group (``group.instance.id`` = the transactional id): a restarted copy takes its
        partitions back without waiting for the killed one's session to time out."""
        return consumer(
            self.bootstrap,
            self.group_id,
            **{
                "group.instance.id": self.transactional_id,
                "session.timeout.ms": self.options.session_timeout_ms,
                "partition.assignment.strategy": "roundrobin",
                **self.options.consumer_overrides,
            },
        )

    def _producer(self) -> CountingProducer:
        return CountingProducer(
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

    def _verdicts(self, values: list[bytes]) -> tuple[Iterator[Verdict], int]:
        """The batch's verdicts, and how many the plug-in gave (after them, ERROR for its missed deadline)."""
        if self.confined is not None and values:
            given, judged = self.confined.judge(values)
            self._count_failed_batch(judged < len(values))
            return iter(given), judged
        if self.batches is not None:
            return iter(self.batches.judge(values)), len(values)
        return map(self.filter.judge, values), len(values)

    def _process(self, messages) -> bool:
        """Judge and route a batch; True if it held any alert (False: idle, only end-of-partition events)."""
        filter_batch_consumed(self.filter.name, messages)
        verdicts, judged = self._verdicts([msg.value() for msg in messages if msg.error() is None])
        txn = self.txn
        index = 0
        produce = txn.out.produce
        counts, by_topic, pending, positions = txn.counts, txn.by_topic, txn.pending, txn.positions
        name = self.filter.name.encode()
        flowing = False
        for msg in messages:
            if msg.error() is not None:
                self._event(msg)
                continue
            if not txn.open:
                txn.begin()
            if not flowing and self.report.first_alert_s is None:
                self.report.first_alert_s = time.monotonic() - self.started
            flowing = True
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            verdict = next(verdicts)
            outcome = verdict.outcome
            index += 1
            counts[outcome] += 1
            by_topic[topic, outcome] = by_topic.get((topic, outcome), 0) + 1
            txn.messages += 1
            if outcome == PASSED:
                headers = list(msg.headers() or ())
                headers.append((HEADER_FILTER, name))
                headers.append((HEADER_ANNOTATIONS, verdict.annotations))
                produce(self.outputs[topic], msg.value(), msg.key(), headers, partition=partition)
                self.consecutive_errors = 0
            elif outcome == REJECTED:
                self.consecutive_errors = 0
            else:
                self._set_aside(msg, verdict, name, counted=outcome == ERROR and index <= judged)
            pending[(topic, partition)] = positions[(topic, partition)] = offset + 1
        return flowing

    def _set_aside(self, msg, verdict: Verdict, name: bytes, counted: bool) -> None:
        """An alert the filter failed on (or could not decode) goes to the errors topic, with where it came
        from; ``counted``: an error of the filter itself (a missed deadline counts once, as a failed batch)."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        self.txn.out.produce(
            self.errors_topic,
            msg.value(),
            msg.key(),
            [
                (HEADER_FILTER, name),
                (HEADER_ERROR, verdict.reason.encode()),
                (HEADER_SOURCE_TOPIC, topic.encode()),
                (HEADER_SOURCE_PARTITION, str(partition).encode()),
                (HEADER_SOURCE_OFFSET, str(offset).encode()),
            ],
        )
        if not counted:
            return
        self.consecutive_errors += 1
        self.last_error = verdict.reason
        if self.consecutive_errors >= self.options.error_threshold:
            raise FilterFailingError(
                f"filter {self.filter.name!r} raised on {self.consecutive_errors} consecutive alerts "
                f"(last, at {topic}[{partition}]@{offset}: {self.last_error}); stopped it and rolled "
                f"back its open batch. Fix the filter and run it again: it resumes from the last "
                f"committed offsets; the alerts it failed on so far are in {self.errors_topic}"
            )

    def _count_failed_batch(self, failed: bool) -> None:
        """A plug-in that misses its deadline (or whose process dies) batch after batch is broken: stop the copy."""
        self.failed_batches = self.failed_batches + 1 if failed else 0
        if self.failed_batches >= self.options.failed_batches:
            raise FilterFailingError(
                f"filter {self.filter.name!r} failed {self.failed_batches} batches in a row "
                f"({self.confined.last_failure})"
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
            known = self.txn.positions.get(where)
            if end >= 0 and (known is None or end > known):
                if not self.txn.open:
                    self.txn.begin()
                self.txn.pending[where] = self.txn.positions[where] = end
            return
        if error.fatal() or not error.retriable():
            raise LiveRunError(
                f"consuming {msg.topic()}[{msg.partition()}] for filter {self.filter.name!r} failed: {error.str()}",
                transient=is_transient(KafkaException(error)),
            )

    def _night_done(self) -> bool:
        done = self.night_end.done(self.consumer)
        self.report.lag = self.night_end.lag
        return done

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
            while not self.txn.settled and time.monotonic() < deadline:
                self.consumer.consume(self.options.batch_size, 0.1)
        except KafkaException:
            pass  # the group is gone (the broker is): close() has no rebalance left to serve
        self.consumer.close()

    # ---------------------------------------------------------------------------------------- progress

    def _waiting(self, missing: list[str]) -> None:
        self.report.status = f"waiting for {', '.join(missing)}"
        self._tick(force=True)

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
