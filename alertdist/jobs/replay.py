"""Replay archived alerts into Kafka: into one topic, or as a night (opened, published, closed)."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from alertdist.access.listing import check_sources
from alertdist.access.readers import open_sources
from alertdist.access.replay import ReplayProgress, ReplayResult, ensure_topic, replay_into_night, replay_to_topic
from alertdist.jobs.metrics import serve_metrics
from alertdist.jobs.progress import NoProgress, Progress
from alertdist.nights.dates import format_night
from alertdist.nights.topics import TopicSettings
from alertdist.security import REPLAY
from alertdist.settings import Settings

__all__ = ["ReplayRequest", "Replayed", "replay"]


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

    def show(p: ReplayProgress) -> None:
        progress.update(
            f"read {p.read}, delivered {p.delivered}, bad {p.bad}, failed {p.failed}, "
            f"in flight {p.in_flight}, {p.rate:,.0f} alerts/s, {p.elapsed_s:.0f} s"
        )

    topics = TopicSettings(partitions=request.partitions)
    common = dict(
        bootstrap_servers=settings.kafka(REPLAY),
        sources=names,
        counts=counts,
        speed=request.speed,
        stop=stop,
        progress=show,
        progress_every_s=progress_every_s,
    )
    created = False
    if request.topic:
        created = ensure_topic(settings.kafka(REPLAY), request.topic, topics) == "created"
        result = replay_to_topic(alerts, topic=request.topic, **common)
    else:
        result = replay_into_night(
            alerts,
            naming=settings.naming,
            night=request.night,
            site=settings.site,
            topic_settings=None if settings.secured else topics,  # secured: the admin opens nights
            check_night=request.check_night,
            reopen=request.reopen,
            **common,
        )
    progress.update(result.summary(), final=True)
    return Replayed(result, counts, created)
