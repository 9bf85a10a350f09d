"""Replay an archived night into Kafka: as fast as it goes, or at the night's own cadence sped up.

Two destinations. Into one topic (`replay_to_topic`): each alert's packet unchanged (from a tarball the
archive member's bytes; from Parquet a packet rebuilt with the row's schema version), key objectId, the
programme-topic headers. Into a night (`replay_into_night`): the publisher (`alertdist.publish.publisher.publish`) routes
each alert to its programme topic of that night, rejects what it would reject live, and closes the night with
its end offsets, so the replayed night can be filtered and archived like a live one; archiving it again gives
the same tarballs, byte for byte (the archive is candid-ordered and deterministic).

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
from alertdist.nights.dates import SITES, Site, format_night
from alertdist.nights.topics import TopicNaming, TopicSettings, create_topics, ensure_night_topics, replication_for
from alertdist.publish.publisher import (
    HEADER_CANDID,
    HEADER_PRODUCED_MS,
    HEADER_PUBLISHED_MS,
    PublishError,
    PublishProgress,
    publish,
)
from alertdist.publish.sources import SourcePacket
from alertdist.security import secure_night

__all__ = [
    "ReplayError",
    "ReplayProgress",
    "ReplayResult",
    "ensure_topic",
    "paced_by_jd",
    "replay_into_night",
    "replay_to_topic",
]


class ReplayError(KafkaOperationError):
    """The replay could not deliver every alert it read; ``result`` holds the counts so far."""

    def __init__(self, message: str, result: ReplayResult | None = None, transient: bool = False):
        super().__init__(message, transient=transient)
        self.result = result


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
class ReplayResult:
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

    @property
    def rate_alerts_s(self) -> float:
        return self.delivered / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def rate_mb_s(self) -> float:
        return self.bytes_delivered / 1e6 / self.elapsed_s if self.elapsed_s > 0 else 0.0

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


def paced_by_jd(
    alerts: Iterable[ArchivedAlert],
    speed: float,
    *,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[ArchivedAlert]:
    """Release each alert at its exposure's time in the night (``jd`` after the first) divided by ``speed``."""
    if speed <= 0:
        raise ValueError(f"speed must be positive (e.g. 60: a minute of night per second), got {speed}")
    stop = stop or threading.Event()
    start = first_jd = None
    for alert in alerts:
        if first_jd is None:
            start, first_jd = clock(), alert.info.jd
        delay = start + (alert.info.jd - first_jd) * 86400.0 / speed - clock()
        if delay > 0.0005 and stop.wait(delay):
            return
        if stop.is_set():
            return
        yield alert


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
    stream = paced_by_jd(alerts, speed, stop=stop) if speed else alerts
    started = last_report = time.monotonic()

    def snapshot() -> ReplayProgress:
        return ReplayProgress(
            result.read, out.delivered, sum(c.bad for c in counts), out.failed, len(out), time.monotonic() - started
        )

    sent = 0
    undelivered: KafkaOperationError | None = None
    source = _Guarded(stream)
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
            if progress is not None and time.monotonic() - last_report >= progress_every_s:
                last_report = time.monotonic()
                progress(snapshot())
            if stop.is_set():
                result.stopped = True
                break
    finally:
        try:
            out.finish(flush_timeout_s, unit="alert")
        except KafkaOperationError as e:
            undelivered = e  # reported with the counts, below
    result.stopped = stop.is_set()  # also when it came while waiting for an exposure's time
    result.elapsed_s = time.monotonic() - started
    result.delivered, result.failed, result.bytes_delivered = out.delivered, out.failed, out.bytes_delivered
    result.failures = out.failures
    result.take_counts(list(counts))
    result.read = sent + result.bad
    if progress is not None:
        progress(snapshot())
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


def replay_into_night(
    alerts: Iterable[ArchivedAlert],
    *,
    bootstrap_servers: str,
    naming: TopicNaming,
    night: dt.date,
    sources: list[str],
    counts: list[ReadCounts] = (),
    site: Site = SITES["palomar"],
    topic_settings: TopicSettings | None = TopicSettings(),
    speed: float | None = None,
    stop: threading.Event | None = None,
    check_night: bool = True,
    reopen: bool = False,
    progress: Callable[[ReplayProgress], None] | None = None,
    progress_every_s: float = 1.0,
) -> ReplayResult:
    """Publish the alerts as ``night`` through the publisher (programme routing, rejection), then close the night.

    The night's topics are created if needed (with ``topic_settings`` None they must exist: on a secured cluster
    replay may not create topics). A night already closed is refused unless ``reopen``.
    """
    stop = stop or threading.Event()
    if topic_settings is not None:
        ensure_night_topics(admin_client(bootstrap_servers), naming, night, topic_settings)
        secure_night(bootstrap_servers, naming, night)  # a replayed night is readable by the same roles
    stream = paced_by_jd(alerts, speed, stop=stop) if speed else alerts

    source = _Guarded(stream, stop)

    def packets() -> Iterator[SourcePacket | None]:
        for a in source:
            yield SourcePacket(a.name, a.packet, _now_ms())  # produced "now": the replay is the pipeline
        if stop.is_set():
            yield None  # stopped (or the source broke): the publisher must see it and leave the night open

    def report(p: PublishProgress) -> None:
        bad = sum(c.bad for c in counts)
        progress(ReplayProgress(p.read + bad, p.delivered, bad, p.failed, p.in_flight, p.elapsed_s))

    try:
        published = publish(
            packets(),
            bootstrap_servers=bootstrap_servers,
            naming=naming,
            night=night,
            site=site,
            stop=stop,
            check_night=check_night,
            reopen=reopen,
            progress=report if progress else None,
            progress_every_s=progress_every_s,
        )
    except PublishError as e:
        raise ReplayError(f"replaying into night {format_night(night)}: {e}", transient=e.transient) from e
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
