"""Publish a night: open it (topics + ACLs), publish its source, close it. The CLI and the publish flow call this."""

from __future__ import annotations

import datetime as dt
import threading

from alertdist.jobs.metrics import serve_metrics
from alertdist.jobs.nights import open_night
from alertdist.jobs.progress import NoProgress, Progress
from alertdist.nights.topics import TopicSettings
from alertdist.publish.publisher import DEFAULT_MAX_PACKET_BYTES, PublishProgress, PublishResult, publish
from alertdist.publish.sources import SourceSpec
from alertdist.security import PUBLISHER
from alertdist.settings import Settings

__all__ = ["publish_night"]


def publish_night(
    settings: Settings,
    night: dt.date,
    source: SourceSpec,
    *,
    topics: TopicSettings | None = TopicSettings(),
    check_night: bool = True,
    full_check: bool = False,
    close: bool = True,
    reopen: bool = False,
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
    progress: Progress = NoProgress(),
    progress_every_s: float = 1.0,
    stop: threading.Event | None = None,
) -> PublishResult:
    """Publish every packet of ``source`` into ``night`` and (unless ``close`` is False or it is stopped) close it.

    ``topics``: the settings of the night's topics, created first if missing (None: they must exist already). On
    a secured cluster they must exist: the publisher may not create topics or ACLs, the admin does at dusk.
    """
    stop = stop or threading.Event()
    serve_metrics(settings, "publisher")
    source.check(settings.storage_options)
    if topics is not None and not settings.secured:
        created = [t for t, what in open_night(settings, night, topics).topics.items() if what == "created"]
        if created:
            progress.update(f"created topics {', '.join(created)}", final=True)
    total = source.total

    def show(p: PublishProgress) -> None:
        of = f"/{p.total}" if p.total else ""
        progress.update(
            f"read {p.read}{of}, delivered {p.delivered}, rejected {p.rejected}, failed {p.failed}, "
            f"in flight {p.in_flight}, {p.rate:.0f} alerts/s, {p.elapsed_s:.0f} s",
            min(p.read / p.total, 1.0) if p.total else None,
        )

    result = publish(
        source.open(night, stop=stop, storage_options=settings.storage_options, max_packet_bytes=max_packet_bytes),
        bootstrap_servers=settings.kafka(PUBLISHER),
        naming=settings.naming,
        night=night,
        site=settings.site,
        stop=stop,
        max_packet_bytes=max_packet_bytes,
        check_night=check_night,
        full_check=full_check,
        close_night=close,
        reopen=reopen,
        progress=show,
        progress_every_s=progress_every_s,
        total=total,
    )
    progress.update(
        f"{result.delivered_total} delivered, {result.rejected_total} rejected; night "
        f"{'closed' if result.closed else 'left open'}",
        1.0 if result.closed else None,
        final=True,
    )
    return result
