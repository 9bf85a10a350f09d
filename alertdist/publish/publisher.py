"""The publisher: every packet the alert pipeline emits reaches its night's Kafka topic once, or is set aside.

For each packet: a cheap check (`codec.peek`: container header and the leading fields, never the history or
the cutouts), then either its programme's topic (value unchanged, key objectId, latency headers) or the
night's rejected topic (the raw bytes, a readable reason). Nothing is decided by silence: a drop-folder file
is settled only after Kafka acknowledged it, and the night is closed only when every packet read is
accounted for (read = delivered + rejected) and the closing offsets are known.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaException

from alertdist.avro import codec
from alertdist.kafka.clients import MAX_MESSAGE_BYTES
from alertdist.kafka.errors import KafkaOperationError, retry_call
from alertdist.kafka.producer import CountingProducer
from alertdist.metrics.catalog import track_publisher
from alertdist.nights.dates import SITES, Site, format_night, night_of_jd
from alertdist.nights.state import NightState, end_offsets, mark_night, read_night_state
from alertdist.nights.topics import TopicNaming
from alertdist.publish.packets import DEFAULT_MAX_PACKET_BYTES, PacketSource, SourcePacket, as_source, safe_text

__all__ = [
    "DEFAULT_MAX_PACKET_BYTES",
    "HEADER_CANDID",
    "HEADER_PRODUCED_MS",
    "HEADER_PUBLISHED_MS",
    "HEADER_REASON",
    "HEADER_SOURCE",
    "REJECT_KINDS",
    "PublishError",
    "PublishProgress",
    "PublishResult",
    "Rated",
    "RunError",
    "publish",
]

HEADER_PRODUCED_MS = "alertdist.produced_ms"
HEADER_PUBLISHED_MS = "alertdist.published_ms"
HEADER_CANDID = "alertdist.candid"
HEADER_REASON = "alertdist.reason"
HEADER_SOURCE = "alertdist.source"
HEADER_ORIGINAL_SIZE = "alertdist.original_size"

#: Why a packet is set aside; the first word of its ``alertdist.reason`` header. ``implausible``: it decodes, but
#: a field the system computes with is not usable (`codec.info_problem`); ``not-a-packet`` and
#: ``outside-folder``: the source found something that is not a packet file (see `alertdist.publish.sources`).
REJECT_KINDS = (
    "malformed",
    "oversize",
    "implausible",
    "unknown-programid",
    "wrong-night",
    "not-a-packet",
    "outside-folder",
)

_IDLE_POLL_S = 0.05
_log = logging.getLogger("alertdist.publisher")


class RunError(KafkaOperationError):
    """A run (publishing, a replay) could not finish with everything accounted for; ``result`` holds its counts so
    far."""

    def __init__(self, message: str, result: object | None = None, transient: bool = False):
        super().__init__(message, transient=transient)
        self.result = result


class PublishError(RunError):
    """Publishing could not finish with every packet accounted for; ``result`` holds the counts so far."""


@dataclass(frozen=True)
class PublishProgress:
    """A snapshot for progress bars and artifacts."""

    read: int
    delivered: int
    rejected: int
    failed: int
    in_flight: int
    elapsed_s: float
    total: int | None  # packets expected, when the source knows

    @property
    def rate(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Rated:
    """A run's rates: what it delivered (`rated`: alerts, bytes, seconds) per second of its run."""

    def rated(self) -> tuple[int, int, float]:
        raise NotImplementedError

    @property
    def rate_alerts_s(self) -> float:
        alerts, _, seconds = self.rated()
        return alerts / seconds if seconds > 0 else 0.0

    @property
    def rate_mb_s(self) -> float:
        _, size, seconds = self.rated()
        return size / 1e6 / seconds if seconds > 0 else 0.0


@dataclass
class PublishResult(Rated):
    """What one run of the publisher did. Delivered and rejected count Kafka acknowledgements only."""

    night: str
    read: int = 0
    delivered: dict[int, int] = field(default_factory=dict)  # programid -> acknowledged packets
    rejected: dict[str, int] = field(default_factory=dict)  # reject kind -> acknowledged packets
    failed: int = 0  # deliveries Kafka refused after its retries (the packets are NOT in Kafka)
    failures: list[str] = field(default_factory=list)  # the first few, "name: reason"
    bytes_delivered: int = 0
    elapsed_s: float = 0.0  # the whole run, including opening and closing the night
    streaming_s: float = 0.0  # first packet read to last acknowledgement: what the rates divide by
    latency_ms: dict[str, float] = field(default_factory=dict)  # produced -> acknowledged: p50, p95, p99, max
    stopped: bool = False  # stopped by a signal or event: a pause, the night stays open
    closed: bool = False
    end_offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    settle_errors: int = 0

    @property
    def delivered_total(self) -> int:
        return sum(self.delivered.values())

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def missing(self) -> int:
        return self.read - self.delivered_total - self.rejected_total

    def rated(self) -> tuple[int, int, float]:
        return self.delivered_total, self.bytes_delivered, self.streaming_s

    def counts(self) -> dict:
        return {
            "read": self.read,
            "delivered": {str(p): n for p, n in sorted(self.delivered.items())},
            "rejected": dict(sorted(self.rejected.items())),
            "failed": self.failed,
        }

    def summary_rows(self) -> list[dict]:
        """One row per outcome, for a table artifact or a report."""
        rows = [{"outcome": f"delivered programid {p}", "packets": n} for p, n in sorted(self.delivered.items())]
        rows += [{"outcome": f"rejected {kind}", "packets": n} for kind, n in sorted(self.rejected.items())]
        rows += [{"outcome": "failed", "packets": self.failed}, {"outcome": "read", "packets": self.read}]
        rows += [
            {"outcome": "elapsed (s)", "packets": round(self.elapsed_s, 1)},
            {"outcome": "streaming (s)", "packets": round(self.streaming_s, 1)},
            {"outcome": "rate (alerts/s)", "packets": round(self.rate_alerts_s, 1)},
            {"outcome": "rate (MB/s)", "packets": round(self.rate_mb_s, 1)},
        ]
        rows += [{"outcome": f"latency {k} (ms)", "packets": round(v, 1)} for k, v in self.latency_ms.items()]
        return rows


@dataclass(frozen=True)
class _Checks:
    """What is checked in every packet before it is published."""

    max_packet_bytes: int
    night: bool  # its jd lies in the night published
    full: bool  # decoded whole, not only through ``candidate``


class _Publisher:
    """One run's state: the counting producer, the counts by outcome, and the per-packet bookkeeping."""

    def __init__(self, bootstrap_servers, naming, night, site, checks: _Checks, settle, producer_overrides):
        self.naming, self.night, self.site, self.settle = naming, night, site, settle
        self.max_packet_bytes, self.check_night, self.full_check = checks.max_packet_bytes, checks.night, checks.full
        self.topics = naming.programme_topics(night)
        self.rejected_topic = naming.rejected_topic(night)
        self.result = PublishResult(night=format_night(night))
        self.delivered: Counter[int] = Counter()
        self.rejected: Counter[str] = Counter()
        self.wrong_nights: Counter[dt.date] = Counter()  # the nights wrong-night packets belong to
        self.latencies = array("q")
        self.first_read: float | None = None
        self.out = CountingProducer(
            bootstrap_servers,
            on_delivery=self._acknowledged,
            describe=lambda context, msg: context[0].name,
            **(producer_overrides or {}),
        )

    def check_topics(self, settle_s: float = 15.0) -> None:
        """The night's topics exist. A topic created a moment ago may not be in every broker's metadata yet (a
        cluster just restarted), so a missing one is asked again for ``settle_s`` before it counts as missing."""
        deadline = time.monotonic() + settle_s
        while True:
            try:
                existing = self.out.producer.list_topics(timeout=30).topics
            except KafkaException as e:
                raise PublishError(
                    f"listing topics to publish night {self.result.night} failed: {e}", transient=True
                ) from e
            missing = [t for t in [*self.topics.values(), self.rejected_topic] if t not in existing]
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if missing:
            raise PublishError(
                f"topic(s) {', '.join(missing)} do not exist; create the night's topics first "
                f"(`alertdist topics create --night {self.result.night}`)"
            )

    def classify(self, item: SourcePacket) -> tuple[str | None, str, codec.PacketInfo | None]:
        """(topic, reason, info): a programme topic and "", or None and why the packet is set aside."""
        if item.problem is not None:  # the source already knows (not a packet file, too big to read, ...)
            return None, item.problem, None
        if item.size > self.max_packet_bytes:
            return None, f"oversize: {item.size} bytes, over the limit of {self.max_packet_bytes}", None
        try:
            if self.full_check:  # the whole record, history and cutouts too: ~20x peek's cost
                codec.decode(item.packet)
            info = codec.peek(item.packet)
        except codec.AlertPacketError as e:
            return None, f"malformed: {e}", None
        except Exception as e:  # a codec bug must not stop the night; the packet is kept with the reason
            return None, f"malformed: unexpected {type(e).__name__} while checking: {e}", None
        # the programid is routed below, against this deployment's programmes (unknown-programid)
        problem = codec.alert_problem(objectId=info.objectId, candid=info.candid, jd=info.jd, pid=info.pid)
        if problem is not None:
            return None, f"implausible: {problem}", info
        topic = self.topics.get(info.programid)
        if topic is None:
            return (
                None,
                (
                    f"unknown-programid: candid {info.candid} has programid {info.programid}, "
                    f"not one of {sorted(self.topics)}"
                ),
                info,
            )
        if self.check_night:
            packet_night = night_of_jd(info.jd, self.site)  # cannot raise: the jd is plausible
            if packet_night != self.night:
                self.wrong_nights[packet_night] += 1
                return (
                    None,
                    (
                        f"wrong-night: candid {info.candid} (jd {info.jd}) belongs to night "
                        f"{format_night(packet_night)}, not {format_night(self.night)}"
                    ),
                    info,
                )
        return topic, "", info

    def send(self, item: SourcePacket) -> None:
        if self.first_read is None:
            self.first_read = time.monotonic()
        self.result.read += 1
        now = time.time_ns() // 1_000_000
        produced_ms = item.produced_ms if item.produced_ms is not None else now
        topic, reason, info = self.classify(item)
        if topic is not None:
            headers = [
                (HEADER_PRODUCED_MS, b"%d" % produced_ms),
                (HEADER_PUBLISHED_MS, b"%d" % now),
                (HEADER_CANDID, b"%d" % info.candid),
            ]
            self.out.produce(
                topic, item.packet, info.objectId.encode(), headers, (item, info.programid, item.produced_ms)
            )
            return
        kind = reason.split(":", 1)[0]
        name, reason = safe_text(item.name), safe_text(reason)  # a file name need not be UTF-8
        _log.warning("rejecting %s: %s", name, reason)
        headers = [
            (HEADER_REASON, reason.encode()),
            (HEADER_SOURCE, name.encode()),
            (HEADER_PRODUCED_MS, b"%d" % produced_ms),
        ]
        value = item.packet
        if len(value) > DEFAULT_MAX_PACKET_BYTES:  # the rejected topic cannot hold it whole: keep its head
            value = value[: MAX_MESSAGE_BYTES // 2]
        if item.size != len(value):  # only its head is kept (the source read no more, or it was cut here)
            headers.append((HEADER_ORIGINAL_SIZE, b"%d" % item.size))
        self.out.produce(self.rejected_topic, value, None, headers, (item, kind, produced_ms))

    def stream(
        self,
        source: PacketSource,
        stop: threading.Event,
        report: Callable[[], None],
        report_every_s: float,
        flush_timeout_s: float,
    ) -> KafkaOperationError | None:
        """Send every packet of ``source`` until it ends or ``stop`` is set, then flush: what Kafka acknowledged is
        settled even on an error. Returns the flush's failure (reported with the counts), if any."""
        last_report, undelivered = time.monotonic(), None
        try:
            for item in source:
                if self.out.fatal is not None:
                    raise PublishError(f"the Kafka producer failed fatally: {self.out.fatal.str()}", self.result)
                if item is None:
                    self.out.poll(_IDLE_POLL_S)
                else:
                    self.send(item)
                if time.monotonic() - last_report >= report_every_s:
                    last_report = time.monotonic()
                    report()
                if stop.is_set():
                    self.result.stopped = True
                    break
        finally:
            try:
                self.out.finish(flush_timeout_s, unit="packet")
            except KafkaOperationError as e:
                undelivered = e
        return undelivered

    def _acknowledged(self, context: tuple, err, msg) -> None:
        """Count an acknowledged packet by programme (or reject kind) and settle its source file."""
        if err is not None:
            return  # counted and named by the producer; the file stays for the next run
        item, outcome, produced_ms = context  # outcome: the programid, or the reject kind (text)
        rejected = isinstance(outcome, str)
        if rejected:
            self.rejected[outcome] += 1
        else:
            self.delivered[outcome] += 1
            self.result.bytes_delivered += len(item.packet)
            if produced_ms is not None:  # latency only where the production time is known
                self.latencies.append(time.time_ns() // 1_000_000 - produced_ms)
        if self.settle is not None:
            self.settle(item, rejected)

    def nothing_delivered(self) -> str | None:
        """Why a run that read packets but delivered none must fail, and what fixes it; None if it delivered."""
        r = self.result
        if not r.read or r.delivered_total or r.stopped or r.missing:
            return None
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(r.rejected.items()))
        message = f"night {r.night}: every one of the {r.read} packet(s) read was rejected ({kinds})"
        if self.wrong_nights:
            nights = ", ".join(format_night(n) for n, _ in self.wrong_nights.most_common(3))
            message += (
                f"; their jd lies in night {nights}: use --night "
                f"{format_night(self.wrong_nights.most_common(1)[0][0])} "
                "(the source's night), or --any-night to accept them as this night"
            )
        else:
            message += f"; their reasons are in the topic {self.rejected_topic}"
        return message + f". Nothing was published to the programme topics and night {r.night} stays open."

    def snapshot(self, started: float, total: int | None) -> PublishProgress:
        return PublishProgress(
            self.result.read,
            sum(self.delivered.values()),
            sum(self.rejected.values()),
            self.out.failed,
            len(self.out),
            time.monotonic() - started,
            total,
        )

    def finish_counts(self, started: float) -> PublishResult:
        r = self.result
        r.delivered, r.rejected = dict(self.delivered), dict(self.rejected)
        r.failed, r.failures = self.out.failed, self.out.failures
        r.elapsed_s = time.monotonic() - started
        r.streaming_s = time.monotonic() - self.first_read if self.first_read is not None else 0.0
        if self.latencies:
            import numpy as np

            values = np.frombuffer(self.latencies, dtype=np.int64)
            r.latency_ms = {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)}
            r.latency_ms["max"] = float(values.max())
        return r


def publish(
    source: PacketSource | Iterable[SourcePacket | None],
    *,
    bootstrap_servers: str,
    naming: TopicNaming,
    night: dt.date,
    site: Site = SITES["palomar"],
    stop: threading.Event | None = None,
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    check_night: bool = True,
    full_check: bool = False,
    close_night: bool = True,
    reopen: bool = False,
    progress: Callable[[PublishProgress], None] | None = None,
    progress_every_s: float = 1.0,
    total: int | None = None,
    flush_timeout_s: float = 120.0,
    producer_overrides: dict | None = None,
) -> PublishResult:
    """Publish every packet of ``source`` for ``night``, then (unless stopped) close the night.

    Each packet is checked with `codec.peek` (framing and the fields through ``candidate``): a packet broken
    only further on (history, cutouts) passes. ``full_check`` decodes every packet whole instead, for sources
    not trusted to be well-formed, at ~20x the CPU.

    Bad packets never raise: each goes to the rejected topic with its reason, and is counted. What does raise
    (`PublishError`) is what must not pass quietly: missing topics, a night already closed (unless
    ``reopen``), a delivery Kafka refused, or counts that do not reconcile; the night then stays open.

    Each packet is settled with its source (`PacketSource.settle`: the drop folder removes its file) after Kafka
    acknowledged it. ``stop`` (see `stop_on_signals`) ends the run early: what was sent is flushed and
    settled, and the night stays open for the next run.
    """
    source = as_source(source)
    stop = stop or threading.Event()
    started = time.monotonic()
    checks = _Checks(max_packet_bytes, check_night, full_check)
    run = _Publisher(bootstrap_servers, naming, night, site, checks, source.settle, producer_overrides)
    track_publisher(run.result.night, run)  # read at scrape time: nothing added per packet
    run.check_topics()
    _mark_open(bootstrap_servers, naming, night, reopen)

    def report() -> None:
        if progress is not None:
            progress(run.snapshot(started, total))

    undelivered = run.stream(source, stop, report, progress_every_s, flush_timeout_s)
    if stop.is_set():  # a source that ended because it was stopped (e.g. while pacing) is a pause, not the end
        run.result.stopped = True
    result = run.finish_counts(started)
    result.settle_errors = source.settle_errors
    report()
    _raise_unless_accounted(run, undelivered)
    if close_night and not result.stopped:
        _close(run, bootstrap_servers, naming)
        source.night_closed(night)
    return result


def _mark_open(bootstrap_servers: str, naming: TopicNaming, night: dt.date, reopen: bool) -> None:
    """Mark the night open, refusing one already ended (closed, or aborted after a failure) unless ``reopen``."""
    night_text = format_night(night)
    state = retry_call("reading the night's state", read_night_state, bootstrap_servers, naming, night)
    if state is not None and state.ended and not reopen:
        raise PublishError(
            f"night {night_text} is already {state.state} ({state.total_messages()} messages at "
            f"{state.updated_at}); to publish more into it, run the command again with --reopen"
        )
    retry_call("marking the night open", mark_night, bootstrap_servers, naming, NightState(night_text, "open"))


def _raise_unless_accounted(run: _Publisher, undelivered: KafkaOperationError | None) -> None:
    """Fail the run, with its counts, if a delivery failed, the counts do not reconcile, or nothing was delivered."""
    result, night_text = run.result, run.result.night
    if undelivered is not None:
        raise PublishError(
            f"night {night_text}: {undelivered}. Nothing was lost from a drop folder (unacknowledged files stay); "
            "rerun the publisher once Kafka is healthy.",
            result,
            transient=undelivered.transient,
        ) from undelivered
    if result.missing:
        raise PublishError(
            f"night {night_text} does not reconcile: read {result.read} but delivered "
            f"{result.delivered_total} + rejected {result.rejected_total}; "
            f"{result.missing} packet(s) unaccounted for",
            result,
        )
    empty = run.nothing_delivered()
    if empty is not None:
        raise PublishError(empty, result)


def _close(run: _Publisher, bootstrap_servers: str, naming: TopicNaming) -> None:
    """Mark the night closed with its topics' end offsets and the run's counts."""
    result = run.result
    topics = [*run.topics.values(), run.rejected_topic]
    result.end_offsets = retry_call("reading end offsets", end_offsets, bootstrap_servers, topics)
    counts = {**result.counts(), "messages": {t: sum(p.values()) for t, p in result.end_offsets.items()}}
    closing = NightState(result.night, "closed", result.end_offsets, counts)
    retry_call("marking the night closed", mark_night, bootstrap_servers, naming, closing)
    result.closed = True
