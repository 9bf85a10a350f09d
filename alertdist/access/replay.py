"""Replay an archived night into Kafka: as fast as it goes, or at the night's own cadence sped up.

Two destinations. Into one topic (`replay_to_topic`): each alert's packet unchanged (from a tarball the
archive member's bytes; from Parquet a packet rebuilt with the row's schema version), key objectId, the
programme-topic headers. Into a night: the alerts become a packet source (`ArchivedPackets`) that the publish
job (`alertdist.jobs.publish.publish_night`) publishes like any other, so each alert goes to its programme topic of
that night, what would be rejected live is rejected, and the night is closed with its end offsets: the replayed
night can be filtered and archived like a live one; archiving it again gives the same tarballs, byte for byte
(the archive is candid-ordered and deterministic). `night_replayed` turns what the publisher did into the
replay's counts.

Cadence: ZTF releases an exposure's alerts together, exposures ~40 s apart. With ``speed`` each alert is held
until its exposure's time (its ``jd`` after the first alert's) divided by ``speed``. Archives are in candid
order, and a ZTF candid begins with the exposure's pid, whose digits after the night number are the time of
the exposure, so this is time order and the replay streams without sorting the night; an alert that comes
later than its time (out of order) simply goes at once.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import Message

from alertdist.access.readers import ArchivedAlert, ArchiveReadError, ReadCounts
from alertdist.kafka.clients import admin_client
from alertdist.kafka.errors import KafkaOperationError
from alertdist.kafka.producer import CountingProducer
from alertdist.metrics.catalog import track_replay
from alertdist.nights.dates import format_night
from alertdist.nights.pacing import pace_by_jd
from alertdist.nights.topics import TopicNaming, TopicSettings, create_topics, replication_for
from alertdist.publish.packets import PacketSource, SourcePacket
from alertdist.publish.publisher import (
    HEADER_CANDID,
    HEADER_PRODUCED_MS,
    HEADER_PUBLISHED_MS,
    PublishResult,
    Rated,
    RunError,
)

__all__ = [
    "ArchivedPackets",
    "ReplayError",
    "ReplayProgress",
    "ReplayResult",
    "ensure_topic",
    "night_replayed",
    "replay_to_topic",
]


class ReplayError(RunError):
    """The replay could not deliver every alert it read; ``result`` holds the counts so far."""


@dataclass(frozen=True)
class ReplayProgress:
    read: int
    delivered: int
    bad: int
    failed: int
    in_flight: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class ReplayResult(Rated):
    """What a replay did: ``read == delivered + bad + failed`` (+ rejected, for a night) once it has finished."""

    sources: list[str]
    destination: str  # the topic, or "night YYYYMMDD of <survey>"
    read: int = 0  # members or rows read from the sources
    delivered: int = 0  # acknowledged by Kafka
    bad: int = 0  # members/rows that are not valid alerts: reported and skipped (see bad_members)
    rejected: int = 0  # night replays: packets the publisher set aside in the rejected topic
    failed: int = 0  # refused by Kafka after its retries
    bytes_delivered: int = 0
    elapsed_s: float = 0.0
    speed: float | None = None
    stopped: bool = False
    closed: bool = False  # night replays: the night was marked closed with its end offsets
    bad_members: list[tuple[str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def rated(self) -> tuple[int, int, float]:
        return self.delivered, self.bytes_delivered, self.elapsed_s

    def summary(self) -> str:
        pace = "as fast as possible" if not self.speed else f"at {self.speed:g}x the night's cadence"
        return (
            f"replayed {', '.join(self.sources)} into {self.destination} {pace}: read {self.read}, "
            f"delivered {self.delivered}, bad {self.bad}, rejected {self.rejected}, failed {self.failed}; "
            f"{self.elapsed_s:.1f} s, {self.rate_alerts_s:,.0f} alerts/s, {self.rate_mb_s:,.1f} MB/s"
            + ("; night closed" if self.closed else "")
            + ("; STOPPED early" if self.stopped else "")
        )

    def take_counts(self, counts: list[ReadCounts]) -> None:
        self.bad = sum(c.bad for c in counts)
        self.bad_members = [m for c in counts for m in c.bad_members][:100]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Guarded:
    """The alerts of a source until it breaks (`ArchiveReadError`): the break is kept, so the replay can settle
    what it produced, say how much that was, and fail; with ``stop`` the break also stops the run."""

    def __init__(self, alerts: Iterable[ArchivedAlert], stop: threading.Event | None = None) -> None:
        self.alerts, self.stop, self.broken = alerts, stop, None

    def __iter__(self) -> Iterator[ArchivedAlert]:
        try:
            yield from self.alerts
        except ArchiveReadError as e:
            self.broken = e
            if self.stop is not None:
                self.stop.set()


def _jd(alert: ArchivedAlert) -> float:
    return alert.info.jd


def _candid_of(_context, msg: Message) -> str:
    return f"candid {dict(msg.headers() or []).get(HEADER_CANDID, b'?').decode()}"


def ensure_topic(bootstrap_servers: str, topic: str, settings: TopicSettings = TopicSettings()) -> str:
    """Create the replay's topic if it does not exist ("created" / "exists ...", as `create_topics` says)."""
    admin = admin_client(bootstrap_servers)
    replication = replication_for(admin, settings.replication_factor)
    return create_topics(admin, {topic: (settings.partitions, replication, settings.configs(replication))})[topic]


def replay_to_topic(
    alerts: Iterable[ArchivedAlert],
    *,
    bootstrap_servers: str,
    topic: str,
    sources: list[str],
    counts: list[ReadCounts] = (),
    speed: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[ReplayProgress], None] | None = None,
    progress_every_s: float = 1.0,
    flush_timeout_s: float = 120.0,
    producer_overrides: dict | None = None,
) -> ReplayResult:
    """Produce every alert to ``topic`` (which must exist: `ensure_topic`), then wait for every acknowledgement.

    Raises `ReplayError` if Kafka refused any alert or some were still unacknowledged after ``flush_timeout_s``.
    """
    stop = stop or threading.Event()
    result = ReplayResult(list(sources), topic, speed=speed)
    out = CountingProducer(bootstrap_servers, describe=_candid_of, **(producer_overrides or {}))
    track_replay(topic, out)
    source = _Guarded(pace_by_jd(alerts, speed, jd=_jd, stop=stop) if speed else alerts)
    started = time.monotonic()

    def report() -> None:
        if progress is not None:
            bad = sum(c.bad for c in counts)
            progress(ReplayProgress(result.read, out.delivered, bad, out.failed, len(out), time.monotonic() - started))

    sent, undelivered = _produce_all(out, source, topic, stop, result, report, progress_every_s, flush_timeout_s)
    result.stopped = stop.is_set()  # also when it came while waiting for an exposure's time
    result.elapsed_s = time.monotonic() - started
    result.delivered, result.failed, result.bytes_delivered = out.delivered, out.failed, out.bytes_delivered
    result.failures = out.failures
    result.take_counts(list(counts))
    result.read = sent + result.bad
    report()
    if source.broken is not None:
        raise ReplayError(
            f"{source.broken}; {result.delivered} message(s) had already been produced to {topic}", result
        ) from source.broken
    if undelivered is not None:
        raise ReplayError(
            f"replay into {topic}: {undelivered}", result, transient=undelivered.transient
        ) from undelivered
    if sent != result.delivered:
        raise ReplayError(
            f"replay into {topic} does not reconcile: sent {sent}, acknowledged {result.delivered}", result
        )
    return result


def _produce_all(
    out: CountingProducer,
    source: Iterable[ArchivedAlert],
    topic: str,
    stop: threading.Event,
    result: ReplayResult,
    report: Callable[[], None],
    report_every_s: float,
    flush_timeout_s: float,
) -> tuple[int, KafkaOperationError | None]:
    """Produce each alert to ``topic`` until the source ends or ``stop`` is set, then flush; the number sent and
    the flush's failure (reported with the counts), if any."""
    sent, undelivered, last_report = 0, None, time.monotonic()
    try:
        for alert in source:
            if out.fatal is not None:
                raise ReplayError(f"the Kafka producer failed fatally: {out.fatal.str()}", result)
            now = b"%d" % _now_ms()
            headers = [
                (HEADER_PRODUCED_MS, now),
                (HEADER_PUBLISHED_MS, now),
                (HEADER_CANDID, b"%d" % alert.info.candid),
            ]
            out.produce(topic, alert.packet, alert.info.objectId.encode(), headers)
            sent += 1
            if time.monotonic() - last_report >= report_every_s:
                last_report = time.monotonic()
                report()
            if stop.is_set():
                break
    finally:
        try:
            out.finish(flush_timeout_s, unit="alert")
        except KafkaOperationError as e:
            undelivered = e
    return sent, undelivered


class ArchivedPackets(PacketSource):
    """Archived alerts as the publisher's source for a replay into a night: each produced "now" (the replay is the
    pipeline), held to the night's cadence with ``speed``. A source that breaks (`ArchiveReadError`) ends the
    stream and sets ``stop``, so the night is left open; the break is kept in ``broken`` for `night_replayed`."""

    def __init__(self, alerts: Iterable[ArchivedAlert], stop: threading.Event, speed: float | None = None) -> None:
        self.stop = stop
        self.guarded = _Guarded(pace_by_jd(alerts, speed, jd=_jd, stop=stop) if speed else alerts, stop)

    @property
    def broken(self) -> ArchiveReadError | None:
        return self.guarded.broken

    def __iter__(self) -> Iterator[SourcePacket | None]:
        for a in self.guarded:
            yield SourcePacket(a.name, a.packet, _now_ms())
        if self.stop.is_set():
            yield None  # stopped (or the source broke): the publisher must see it and leave the night open


def night_replayed(
    published: PublishResult,
    source: ArchivedPackets,
    *,
    naming: TopicNaming,
    night: dt.date,
    sources: list[str],
    counts: list[ReadCounts] = (),
    speed: float | None = None,
) -> ReplayResult:
    """What a replay into ``night`` did, from what the publisher did with ``source``; raises `ReplayError` if the
    source broke (the night is then left open, not marked complete)."""
    outcome = {
        k: getattr(published, k) for k in ("failed", "bytes_delivered", "elapsed_s", "stopped", "closed", "failures")
    }
    result = ReplayResult(
        list(sources),
        f"night {format_night(night)} of {naming.survey}",
        speed=speed,
        delivered=published.delivered_total,
        rejected=published.rejected_total,
        **outcome,
    )
    result.take_counts(list(counts))
    result.read = published.read + result.bad
    if source.broken is not None:
        topics = ", ".join(naming.programme_topics(night).values())
        raise ReplayError(
            f"{source.broken}; {result.delivered} message(s) had already been published into night "
            f"{format_night(night)} ({topics}), which is left open, not marked complete",
            result,
        ) from source.broken
    return result
