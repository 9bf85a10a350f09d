"""Replay archived alerts into Kafka: into one topic, or as a night (published by the publish job, like any source)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from alertdist.access.listing import check_sources
from alertdist.access.readers import ArchivedAlert, ReadCounts, open_sources
from alertdist.access.replay import (
    ArchivedPackets,
    ReplayError,
    ReplayProgress,
    ReplayResult,
    ensure_topic,
    night_replayed,
    replay_to_topic,
)
from alertdist.jobs.metrics import serve_metrics
from alertdist.jobs.progress import NoProgress, Progress
from alertdist.jobs.publish import publish_night
from alertdist.nights.dates import format_night
from alertdist.nights.topics import TopicSettings
from alertdist.publish.publisher import PublishError
from alertdist.security import REPLAY
from alertdist.settings import Settings

__all__ = ["ReplayRequest", "Replayed", "replay", "replay_into_night"]


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay and where: exactly one of ``topic`` and ``night``."""

    sources: tuple[str, ...]
    topic: str | None = None
    night: dt.date | None = None
    archived_night: dt.date | None = None  # with an archive root as source (default: ``night``)
    from_parquet: bool = False
    speed: float | None = None  # the original cadence this many times faster; None: as fast as possible
    partitions: int = 14
    check_night: bool = True
    reopen: bool = False
    allow_unverified: bool = False  # replay sources that have no checksum (MD5SUMS, manifest) to verify them by

    def __post_init__(self) -> None:
        if bool(self.topic) == (self.night is not None):
            raise ValueError("give exactly one destination: a topic, or a night (its programme topics)")
        if not self.sources:
            raise ValueError("give at least one source to replay")

    @property
    def destination(self) -> str:
        return self.topic or f"night {format_night(self.night)}"


@dataclass
class Replayed:
    result: ReplayResult
    counts: list  # each source's ReadCounts
    topic_created: bool


def replay(
    settings: Settings,
    request: ReplayRequest,
    *,
    progress: Progress = NoProgress(),
    progress_every_s: float = 1.0,
    stop: threading.Event | None = None,
) -> Replayed:
    """Open the sources (merged in candid order) and publish them to the request's destination."""
    stop = stop or threading.Event()
    serve_metrics(settings, "replay")
    archived = request.archived_night or request.night
    check_sources(list(request.sources), archived_night=archived, storage_options=settings.storage_options)
    alerts, counts, names = open_sources(
        list(request.sources),
        archived_night=archived,
        storage_options=settings.storage_options,
        prefer="parquet" if request.from_parquet else "tarball",
        require_checksum=not request.allow_unverified,
    )
    common = {
        "sources": names,
        "counts": counts,
        "speed": request.speed,
        "stop": stop,
        "progress_every_s": progress_every_s,
    }
    created = False
    if request.topic:
        topics = TopicSettings(partitions=request.partitions)
        created = ensure_topic(settings.kafka(REPLAY), request.topic, topics) == "created"
        result = replay_to_topic(
            alerts,
            bootstrap_servers=settings.kafka(REPLAY),
            topic=request.topic,
            progress=_shown_on(progress),
            **common,
        )
    else:
        options = {"partitions": request.partitions, "check_night": request.check_night, "reopen": request.reopen}
        result = replay_into_night(settings, request.night, alerts, progress=progress, **options, **common)
    progress.update(result.summary(), final=True)
    return Replayed(result, counts, created)


def replay_into_night(
    settings: Settings,
    night: dt.date,
    alerts: Iterable[ArchivedAlert],
    *,
    sources: list[str],
    counts: list[ReadCounts] = (),
    partitions: int = 14,
    speed: float | None = None,
    check_night: bool = True,
    reopen: bool = False,
    progress: Progress = NoProgress(),
    progress_every_s: float = 1.0,
    stop: threading.Event | None = None,
) -> ReplayResult:
    """Publish the alerts as ``night`` through the publish job, like any other source (programme routing,
    rejection), then close the night.

    The night's topics (``partitions`` each) are created if needed, except on a secured cluster, where the admin
    opens nights. A night already closed is refused unless ``reopen``; a source that breaks leaves it open.
    """
    stop = stop or threading.Event()
    source = ArchivedPackets(alerts, stop, speed)
    topics = TopicSettings(partitions=partitions)
    shown = {"progress": progress, "progress_every_s": progress_every_s}
    try:
        published = publish_night(
            settings,
            night,
            source,
            topics=topics,
            check_night=check_night,
            reopen=reopen,
            stop=stop,
            role=REPLAY,
            **shown,
        )
    except PublishError as e:
        raise ReplayError(f"replaying into night {format_night(night)}: {e}", transient=e.transient) from e
    return night_replayed(
        published, source, naming=settings.naming, night=night, sources=sources, counts=counts, speed=speed
    )


def _shown_on(progress: Progress) -> Callable[[ReplayProgress], None]:
    def show(p: ReplayProgress) -> None:
        progress.update(
            f"read {p.read}, delivered {p.delivered}, bad {p.bad}, failed {p.failed}, "
            f"in flight {p.in_flight}, {p.rate:,.0f} alerts/s, {p.elapsed_s:.0f} s"
        )

    return show
